/**
 * The Trellis dashboard: the mesh's topology with live rates and errors, Triggers with lag and recent
 * failures, a live tail with a CESQL filter, dead letters and retries with redrive and purge, EventTypes
 * with counts. Plain TypeScript over the admin API of the server that serves it (same origin); the admin
 * token, when the server has one, is asked for once and kept for the browser session.
 */
import './style.css';

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; annotations?: Record<string, string> };
  spec: Record<string, unknown>;
  status?: Record<string, unknown>;
};
interface ApiResource {
  apiVersion: string;
  kind: string;
  plural: string;
}
interface SubStats {
  kind: string;
  namespace: string;
  name: string;
  delivered: number;
  failedAttempts: number;
  deadLettered: number;
  dropped: number;
  lag: number;
  oldestPendingSeconds: number;
  recentFailures: { time: string; code?: number; answer: string }[];
}
interface Stats {
  subscriptions: SubStats[];
  streams: { kind: string; stream: string; accepted: number; rejected: number }[];
}

const TOKEN_KEY = 'trellis-admin-token';
const main = document.getElementById('main')!;
const statusLine = document.getElementById('status')!;

// ---------------------------------------------------------------------------------------------------
// The admin API, with the token when the server asks for one.

let signingIn: Promise<void> | undefined;

function askToken(): Promise<void> {
  signingIn ??= new Promise<void>((resolve) => {
    const dialog = document.getElementById('login') as HTMLDialogElement;
    const form = document.getElementById('login-form') as HTMLFormElement;
    const input = document.getElementById('token') as HTMLInputElement;
    form.onsubmit = () => {
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      input.value = '';
      dialog.close();
      signingIn = undefined;
      resolve();
    };
    dialog.showModal();
  });
  return signingIn;
}

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  for (let i = 0; i < 3; i++) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = new Headers(init.headers);
    if (token) headers.set('authorization', `Bearer ${token}`);
    const r = await fetch(path, { ...init, headers });
    if (r.status !== 401) return r;
    if (token) document.getElementById('login-error')!.textContent = 'That token was not accepted.';
    await askToken();
  }
  throw new Error('not signed in');
}

async function json<T>(path: string, init?: RequestInit): Promise<T> {
  const r = await api(path, init);
  const body = (await r.json()) as T & { message?: string };
  if (!r.ok) throw new Error(body.message ?? `${path}: ${r.status}`);
  return body;
}

let kinds: ApiResource[] = [];
const pathOf = (k: ApiResource, ns?: string) => {
  const base = k.apiVersion.includes('/') ? `/apis/${k.apiVersion}` : `/api/${k.apiVersion}`;
  return ns === undefined ? `${base}/${k.plural}` : `${base}/namespaces/${ns}/${k.plural}`;
};
const kindNamed = (kind: string, group?: string) =>
  kinds.find((k) => k.kind === kind && (group === undefined || k.apiVersion.startsWith(`${group}/`)));

async function list(kind: string, group?: string): Promise<Obj[]> {
  const k = kindNamed(kind, group);
  if (k === undefined) return [];
  return (await json<{ items: Obj[] }>(pathOf(k))).items;
}

// ---------------------------------------------------------------------------------------------------
// Small DOM helpers: text is always set as text, never as HTML (events and answers are untrusted).

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Record<string, string> = {},
  ...children: (Node | string | undefined)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== undefined) e.append(c);
  return e;
}

function table(head: string[], rows: (Node | string)[][], testid: string): HTMLTableElement {
  return el(
    'table',
    { 'data-testid': testid },
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...rows.map((r) => el('tr', {}, ...r.map((c) => el('td', {}, c))))),
  );
}

function readyOf(o: Obj): { status: string; reason?: string; message?: string } {
  const c = (o.status?.['conditions'] as { type: string; status: string; reason?: string; message?: string }[] | undefined)?.find(
    (x) => x.type === 'Ready',
  );
  return c ?? { status: 'Unknown' };
}

const short = (s: string | undefined, n = 80) => (s ?? '').replace(/\s+/g, ' ').slice(0, n);

// ---------------------------------------------------------------------------------------------------
// Live rates: /apis/stats sampled every 2 s; the rate is the difference.

let previous: { at: number; stats: Stats } | undefined;
let current: Stats = { subscriptions: [], streams: [] };
const rates = new Map<string, { delivered: number; failed: number; accepted: number }>();

async function sample(): Promise<void> {
  const stats = await json<Stats>('/apis/stats');
  const now = performance.now();
  if (previous !== undefined) {
    const dt = (now - previous.at) / 1000;
    const before = new Map(previous.stats.subscriptions.map((s) => [`${s.kind}/${s.namespace}/${s.name}`, s]));
    for (const s of stats.subscriptions) {
      const b = before.get(`${s.kind}/${s.namespace}/${s.name}`);
      rates.set(`${s.kind}/${s.namespace}/${s.name}`, {
        delivered: (s.delivered - (b?.delivered ?? 0)) / dt,
        failed: (s.failedAttempts - (b?.failedAttempts ?? 0)) / dt,
        accepted: 0,
      });
    }
    const streams = new Map(previous.stats.streams.map((s) => [s.stream, s]));
    for (const s of stats.streams)
      rates.set(`stream/${s.stream}`, { delivered: 0, failed: 0, accepted: (s.accepted - (streams.get(s.stream)?.accepted ?? 0)) / dt });
  }
  previous = { at: now, stats };
  current = stats;
}

/** A flow's steps are counted apart (`seq step 0`): the resource's counts add them up. */
function statsOf(kind: string, ns: string, name: string): SubStats & { rate: number; failRate: number } {
  const out = { kind, namespace: ns, name, delivered: 0, failedAttempts: 0, deadLettered: 0, dropped: 0, lag: 0, oldestPendingSeconds: 0, recentFailures: [] as SubStats['recentFailures'], rate: 0, failRate: 0 };
  for (const s of current.subscriptions) {
    if (s.kind !== kind || s.namespace !== ns || (s.name !== name && !s.name.startsWith(`${name} `))) continue;
    out.delivered += s.delivered;
    out.failedAttempts += s.failedAttempts;
    out.deadLettered += s.deadLettered;
    out.dropped += s.dropped;
    out.lag += s.lag;
    out.oldestPendingSeconds = Math.max(out.oldestPendingSeconds, s.oldestPendingSeconds);
    out.recentFailures.push(...s.recentFailures);
    const r = rates.get(`${s.kind}/${s.namespace}/${s.name}`);
    out.rate += r?.delivered ?? 0;
    out.failRate += r?.failed ?? 0;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Topology: sources → Brokers, Channels and flows → Triggers and Subscriptions → subscribers.

const SVG = 'http://www.w3.org/2000/svg';

interface Node_ {
  id: string;
  label: string;
  sub?: string;
  col: number;
  ready?: boolean;
}
interface Edge {
  from: string;
  to: string;
  label?: string;
  error?: boolean;
}

async function topology(): Promise<void> {
  const [brokers, channels, imcs, triggers, subs, seqs, pars] = await Promise.all([
    list('Broker'),
    list('Channel'),
    list('InMemoryChannel'),
    list('Trigger'),
    list('Subscription'),
    list('Sequence'),
    list('Parallel'),
  ]);
  const sourceKinds = kinds.filter((k) => /Source$/.test(k.kind) || k.kind === 'SinkBinding');
  const sources = (await Promise.all(sourceKinds.map((k) => list(k.kind)))).flat();
  const nodes = new Map<string, Node_>();
  const edges: Edge[] = [];
  const add = (n: Node_) => {
    if (!nodes.has(n.id)) nodes.set(n.id, n);
    return n.id;
  };
  const idOf = (kind: string, ns: string, name: string) => `${kind}/${ns}/${name}`;
  // The address each addressable answers at, to draw an edge from whatever sends there.
  const byAddress = new Map<string, string>();
  for (const o of [...brokers, ...channels, ...imcs, ...seqs, ...pars]) {
    const id = add({ id: idOf(o.kind, o.metadata.namespace, o.metadata.name), label: `${o.kind} ${o.metadata.name}`, sub: o.metadata.namespace, col: 1, ready: readyOf(o).status === 'True' });
    const url = (o.status?.['address'] as { url?: string } | undefined)?.url;
    if (url) byAddress.set(url.replace(/\/$/, ''), id);
  }
  const target = (uri: string | undefined) => {
    if (!uri) return undefined;
    const known = byAddress.get(uri.replace(/\/$/, ''));
    return known ?? add({ id: `uri/${uri}`, label: short(uri, 40), sub: 'subscriber', col: 3 });
  };
  for (const s of sources) {
    const id = add({ id: idOf(s.kind, s.metadata.namespace, s.metadata.name), label: `${s.kind} ${s.metadata.name}`, sub: s.metadata.namespace, col: 0, ready: readyOf(s).status === 'True' });
    const to = target(s.status?.['sinkUri'] as string | undefined);
    if (to) {
      const st = statsOf(s.kind, s.metadata.namespace, s.metadata.name);
      edges.push({ from: id, to, label: `${st.rate.toFixed(1)}/s`, error: st.failRate > 0 });
    }
  }
  for (const t of triggers) {
    const ns = t.metadata.namespace;
    const broker = String(t.spec['broker'] ?? '');
    const id = add({ id: idOf('Trigger', ns, t.metadata.name), label: `Trigger ${t.metadata.name}`, sub: ns, col: 2, ready: readyOf(t).status === 'True' });
    const st = statsOf('Trigger', ns, t.metadata.name);
    edges.push({ from: idOf('Broker', ns, broker), to: id });
    const to = target(t.status?.['subscriberUri'] as string | undefined);
    if (to) edges.push({ from: id, to, label: `${st.rate.toFixed(1)}/s${st.failedAttempts ? ` · ${st.failedAttempts} failed` : ''}${st.lag ? ` · lag ${st.lag}` : ''}`, error: st.failRate > 0 || st.lag > 0 });
  }
  for (const s of subs) {
    const ns = s.metadata.namespace;
    const ch = s.spec['channel'] as { kind: string; name: string } | undefined;
    const id = add({ id: idOf('Subscription', ns, s.metadata.name), label: `Subscription ${s.metadata.name}`, sub: ns, col: 2, ready: readyOf(s).status === 'True' });
    if (ch) edges.push({ from: idOf(ch.kind, ns, ch.name), to: id });
    const phys = s.status?.['physicalSubscription'] as { subscriberUri?: string } | undefined;
    const st = statsOf('Subscription', ns, s.metadata.name);
    const to = target(phys?.subscriberUri);
    if (to) edges.push({ from: id, to, label: `${st.rate.toFixed(1)}/s`, error: st.failRate > 0 });
  }
  // A flow's steps and branches go to their subscribers (a step's reply goes on to the next step).
  for (const f of [...seqs, ...pars]) {
    const ns = f.metadata.namespace;
    const from = idOf(f.kind, ns, f.metadata.name);
    const parts: { label: string; uri?: string; stats: string }[] =
      f.kind === 'Sequence'
        ? ((f.status?.['subscriptionStatuses'] ?? []) as { subscriberUri?: string }[]).map((x, i) => ({
            label: `step ${i}`,
            uri: x.subscriberUri,
            stats: `${f.metadata.name} step ${i}`,
          }))
        : (
            (f.status?.['branchStatuses'] ?? []) as { subscriptionStatus?: { subscriberUri?: string } }[]
          ).map((x, i) => ({ label: `branch ${i}`, uri: x.subscriptionStatus?.subscriberUri, stats: `${f.metadata.name} branch ${i}` }));
    for (const p of parts) {
      const to = target(p.uri);
      if (!to) continue;
      // Each step or branch is a node beside the Triggers and Subscriptions, between its flow and its subscriber.
      const step = add({ id: `${from}#${p.label}`, label: `${p.label} of ${f.metadata.name}`, sub: `${f.kind} · ${ns}`, col: 2 });
      const r = rates.get(`${f.kind}/${ns}/${p.stats}`);
      const failed =
        current.subscriptions.find((x) => x.kind === f.kind && x.namespace === ns && x.name === p.stats)?.failedAttempts ?? 0;
      edges.push({ from, to: step });
      edges.push({
        from: step,
        to,
        label: `${(r?.delivered ?? 0).toFixed(1)}/s${failed ? ` · ${failed} failed` : ''}`,
        error: (r?.failed ?? 0) > 0,
      });
    }
  }
  for (const f of [...seqs, ...pars]) {
    const st = statsOf(f.kind, f.metadata.namespace, f.metadata.name);
    if (st.delivered > 0 || st.failedAttempts > 0)
      nodes.get(idOf(f.kind, f.metadata.namespace, f.metadata.name))!.sub = `${f.metadata.namespace} · ${st.rate.toFixed(1)}/s`;
  }
  for (const s of current.streams) {
    const [a, b, c] = s.stream.split('/');
    const id = c === undefined ? idOf('Broker', a!, b!) : undefined;
    if (id && nodes.has(id)) nodes.get(id)!.sub = `${a} · in ${(rates.get(`stream/${s.stream}`)?.accepted ?? 0).toFixed(1)}/s`;
  }
  draw([...nodes.values()], edges.filter((e) => nodes.has(e.from) && nodes.has(e.to)));
}

function draw(nodes: Node_[], edges: Edge[]): void {
  const W = 220;
  const H = 46;
  const GAP_X = 150;
  const GAP_Y = 18;
  const cols = [0, 1, 2, 3].map((c) => nodes.filter((n) => n.col === c));
  const pos = new Map<string, { x: number; y: number }>();
  cols.forEach((col, c) => col.forEach((n, i) => pos.set(n.id, { x: 20 + c * (W + GAP_X), y: 40 + i * (H + GAP_Y) })));
  const height = 60 + Math.max(1, ...cols.map((c) => c.length)) * (H + GAP_Y);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${20 + 4 * (W + GAP_X)} ${height}`);
  svg.setAttribute('data-testid', 'topology');
  const text = (x: number, y: number, s: string, cls: string) => {
    const t = document.createElementNS(SVG, 'text');
    t.setAttribute('x', String(x));
    t.setAttribute('y', String(y));
    t.setAttribute('class', cls);
    t.textContent = s;
    return t;
  };
  ['Sources', 'Brokers, Channels, flows', 'Triggers, Subscriptions', 'Subscribers'].forEach((h, c) =>
    svg.append(text(20 + c * (W + GAP_X), 20, h, 'col-head')),
  );
  for (const e of edges) {
    const a = pos.get(e.from)!;
    const b = pos.get(e.to)!;
    const path = document.createElementNS(SVG, 'path');
    const x1 = a.x + W;
    const y1 = a.y + H / 2;
    const x2 = b.x;
    const y2 = b.y + H / 2;
    path.setAttribute('d', `M${x1},${y1} C${x1 + 40},${y1} ${x2 - 40},${y2} ${x2},${y2}`);
    path.setAttribute('class', e.error ? 'edge error' : 'edge');
    svg.append(path);
    if (e.label) {
      const t = text((x1 + x2) / 2, (y1 + y2) / 2 - 6, e.label, e.error ? 'edge-label error' : 'edge-label');
      t.setAttribute('text-anchor', 'middle');
      svg.append(t);
    }
  }
  for (const n of nodes) {
    const p = pos.get(n.id)!;
    const g = document.createElementNS(SVG, 'g');
    g.setAttribute('data-node', n.id);
    const r = document.createElementNS(SVG, 'rect');
    r.setAttribute('x', String(p.x));
    r.setAttribute('y', String(p.y));
    r.setAttribute('width', String(W));
    r.setAttribute('height', String(H));
    r.setAttribute('rx', '6');
    r.setAttribute('class', n.ready === false ? 'node not-ready' : 'node');
    g.append(r, text(p.x + 10, p.y + 19, short(n.label, 30), 'node-label'));
    if (n.sub) g.append(text(p.x + 10, p.y + 36, short(n.sub, 34), 'node-sub'));
    svg.append(g);
  }
  main.replaceChildren(el('h2', {}, 'Topology'), svg, el('p', { class: 'hint' }, 'Rates over the last 2 s; red: failures or lag. Nodes with a red border are not Ready.'));
}

// ---------------------------------------------------------------------------------------------------
// Triggers and Subscriptions: state, lag, recent failures with the subscriber's answer.

async function triggersView(): Promise<void> {
  const objs = [...(await list('Trigger')), ...(await list('Subscription'))];
  const rows = objs.map((o) => {
    const st = statsOf(o.kind, o.metadata.namespace, o.metadata.name);
    const ready = readyOf(o);
    const last = st.recentFailures[0];
    return [
      `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`,
      el('span', { class: ready.status === 'True' ? 'ok' : 'bad' }, ready.status === 'True' ? 'Ready' : `${ready.reason ?? 'Not ready'}: ${short(ready.message, 60)}`),
      st.rate.toFixed(1),
      String(st.delivered),
      String(st.failedAttempts),
      String(st.deadLettered),
      String(st.lag),
      st.lag ? `${Math.round(st.oldestPendingSeconds)} s` : '',
      last ? `${last.code ?? 'no answer'}: ${short(last.answer)}` : '',
    ];
  });
  main.replaceChildren(
    el('h2', {}, 'Triggers and Subscriptions'),
    table(['Name', 'State', 'Delivered/s', 'Delivered', 'Failed', 'Dead-lettered', 'Lag', 'Oldest', 'Last failure'], rows, 'triggers'),
  );
}

// ---------------------------------------------------------------------------------------------------
// Live tail of a Broker or Channel, filtered by CESQL on the server; an event's detail.

let tailAbort: AbortController | undefined;

async function tailView(): Promise<void> {
  const streams = [...(await list('Broker')), ...(await list('Channel')), ...(await list('InMemoryChannel'))];
  const select = el('select', { 'data-testid': 'tail-target' }, ...streams.map((o) => el('option', { value: `${o.kind}|${o.metadata.namespace}|${o.metadata.name}` }, `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`)));
  const filter = el('input', { placeholder: "CESQL, e.g. type LIKE 'order.%'", 'data-testid': 'tail-filter', size: '50' });
  const start = el('button', { type: 'button', 'data-testid': 'tail-start' }, 'Follow');
  const stop = el('button', { type: 'button' }, 'Stop');
  const events = el('ul', { class: 'events', 'data-testid': 'tail-events' });
  const detail = el('pre', { class: 'detail', 'data-testid': 'event-detail' });
  const note = el('p', { class: 'error' });
  stop.onclick = () => tailAbort?.abort();
  start.onclick = async () => {
    tailAbort?.abort();
    tailAbort = new AbortController();
    events.replaceChildren();
    note.textContent = '';
    const [kind, ns, name] = select.value.split('|');
    const k = kindNamed(kind!)!;
    const qs = filter.value.trim() ? `?filter=${encodeURIComponent(filter.value.trim())}` : '';
    try {
      const r = await api(`${pathOf(k, ns)}/${name}/tail${qs}`, { signal: tailAbort.signal, headers: { accept: 'text/event-stream' } });
      if (!r.ok) {
        note.textContent = ((await r.json()) as { message: string }).message;
        return;
      }
      const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (data === undefined) continue;
          if (block.includes('event: dropped')) {
            events.prepend(el('li', { class: 'bad' }, `${JSON.parse(data).dropped} events dropped: this tail fell behind`));
            continue;
          }
          const e = JSON.parse(data) as Record<string, unknown>;
          const li = el('li', {}, `${String(e['time'] ?? e['knativearrivaltime'] ?? '')}  ${String(e['type'])}  ${String(e['source'])}  ${String(e['id'])}`);
          li.onclick = () => void showEvent(e, detail, streamOf(kind!, ns!, name!));
          events.prepend(li);
          while (events.children.length > 200) events.lastElementChild!.remove();
        }
      }
    } catch (err) {
      if (!tailAbort.signal.aborted) note.textContent = (err as Error).message;
    }
  };
  main.replaceChildren(el('h2', {}, 'Live tail'), el('div', { class: 'bar' }, select, filter, start, stop), note, el('div', { class: 'split' }, events, detail));
}

/** An event's attributes and data, and what became of its deliveries: retries pending, dead letters. */
async function showEvent(e: Record<string, unknown>, out: HTMLElement, stream: string): Promise<void> {
  const id = String(e['id']);
  const done = (
    await json<{ items: { time: string; kind: string; name: string; what: string; code?: number; answer?: string }[] }>(
      `/apis/deliveries?event=${encodeURIComponent(id)}&stream=${encodeURIComponent(stream)}`,
    )
  ).items;
  const retries = (await json<{ items: { subscription: { kind: string; name: string }; eventId: string; failedAttempts: number; nextAttemptAt: string; lastAnswer?: { code?: number; answer: string } }[] }>('/apis/retries')).items.filter((r) => r.eventId === id);
  const lines = [JSON.stringify(e, null, 2), '', 'Deliveries:'];
  if (done.length === 0) lines.push('  none finished or failed yet (or not by this server process)');
  for (const d of done)
    lines.push(
      `  ${d.time}  ${d.kind} ${d.name}: ${d.what === 'failed' ? `attempt failed, ${d.code ?? 'no answer'}: ${short(d.answer)}` : d.what.replace('_', '-')}`,
    );
  lines.push('', 'Waiting for a retry:');
  if (retries.length === 0) lines.push('  none');
  for (const r of retries)
    lines.push(`  ${r.subscription.kind} ${r.subscription.name}: ${r.failedAttempts} failed, next at ${r.nextAttemptAt}${r.lastAnswer ? `, last answer ${r.lastAnswer.code ?? 'none'}: ${short(r.lastAnswer.answer)}` : ''}`);
  out.textContent = lines.join('\n');
}

/** A Broker's or Channel's stream key, as the server names it (`ns/broker`, `channels/ns/name`). */
function streamOf(kind: string, ns: string, name: string): string {
  return kind === 'Broker' ? `${ns}/${name}` : `${kind.toLowerCase()}s/${ns}/${name}`;
}

// ---------------------------------------------------------------------------------------------------
// Dead letters and retries, with redrive and purge.

async function deadLettersView(): Promise<void> {
  const keepers = [...(await list('Broker')), ...(await list('Channel')), ...(await list('InMemoryChannel')), ...(await list('Sequence')), ...(await list('Parallel'))];
  const select = el('select', { 'data-testid': 'dl-target' }, ...keepers.map((o) => el('option', { value: `${o.kind}|${o.metadata.namespace}|${o.metadata.name}` }, `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`)));
  const filter = el('input', { placeholder: "CESQL, e.g. knativeerrorcode = '503'", 'data-testid': 'dl-filter', size: '40' });
  const show = el('button', { type: 'button', 'data-testid': 'dl-show' }, 'Show');
  const box = el('div', { 'data-testid': 'dl-list' });
  const note = el('p', { class: 'note', 'data-testid': 'dl-note' });
  const base = () => {
    const [kind, ns, name] = select.value.split('|');
    return `${pathOf(kindNamed(kind!)!, ns)}/${name}/deadletters`;
  };
  const act = async (action: 'redrive' | 'purge', body: Record<string, unknown>) => {
    const r = await json<{ redriven?: number; purged?: number; failed?: { seq: number; reason: string }[] }>(`${base()}/${action}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    note.textContent = action === 'redrive' ? `${r.redriven} redriven${r.failed?.length ? `; ${r.failed.length} failed: ${r.failed[0]!.reason}` : ''}` : `${r.purged} purged`;
    await load();
  };
  const load = async () => {
    if (!select.value) return;
    const qs = filter.value.trim() ? `?filter=${encodeURIComponent(filter.value.trim())}` : '';
    const { items } = await json<{ items: { seq: number; failedAt?: string; subscription: { kind?: string; name?: string; id: string }; errorCode?: number; errorData?: string; event: Record<string, unknown> }[] }>(`${base()}${qs}`);
    const rows = items.map((d) => {
      const redrive = el('button', { type: 'button', class: 'small' }, 'Redrive');
      redrive.onclick = () => void act('redrive', { seqs: [d.seq] });
      const purge = el('button', { type: 'button', class: 'small' }, 'Purge');
      purge.onclick = () => void act('purge', { seqs: [d.seq] });
      return [String(d.seq), String(d.failedAt ?? ''), d.subscription.kind ? `${d.subscription.kind} ${d.subscription.name}` : '(deleted)', String(d.event['type']), String(d.event['id']), d.errorCode === undefined ? '' : String(d.errorCode), short(d.errorData), el('span', {}, redrive, purge)];
    });
    const all = el(
      'button',
      { type: 'button', 'data-testid': 'dl-redrive-all' },
      filter.value.trim() ? 'Redrive all that match the filter' : 'Redrive all',
    );
    all.onclick = () => void act('redrive', filter.value.trim() ? { filter: filter.value.trim() } : { all: true });
    box.replaceChildren(items.length === 0 ? el('p', {}, 'No dead letters.') : table(['Seq', 'Failed', 'Subscription', 'Type', 'Id', 'Code', 'Answer', ''], rows, 'deadletters'), items.length ? all : '');
  };
  show.onclick = () => void load().catch((err: unknown) => (note.textContent = (err as Error).message));
  const retries = (await json<{ items: { subscription: { kind: string; namespace: string; name: string }; seq: number; eventId: string; failedAttempts: number; nextAttemptAt: string; lastAnswer?: { code?: number; answer: string } }[] }>('/apis/retries')).items;
  main.replaceChildren(
    el('h2', {}, 'Dead letters'),
    el('p', { class: 'hint' }, 'Kept for subscriptions annotated trellis.dev/dead-letters: keep.'),
    el('div', { class: 'bar' }, select, filter, show),
    note,
    box,
    el('h2', {}, 'Retries pending'),
    retries.length === 0
      ? el('p', {}, 'No deliveries are waiting for a retry.')
      : table(['Subscription', 'Seq', 'Event', 'Failed', 'Next attempt', 'Last answer'], retries.map((r) => [`${r.subscription.kind} ${r.subscription.namespace}/${r.subscription.name}`, String(r.seq), r.eventId, String(r.failedAttempts), r.nextAttemptAt, r.lastAnswer ? `${r.lastAnswer.code ?? 'no answer'}: ${short(r.lastAnswer.answer)}` : '']), 'retries'),
  );
  await load();
}

// ---------------------------------------------------------------------------------------------------
// EventTypes with the counts ingress saw.

async function eventTypesView(): Promise<void> {
  const ets = await list('EventType');
  const rows = ets.map((o) => {
    const attrs = (o.spec['attributes'] as { name: string; value?: string }[] | undefined) ?? [];
    const ref = o.spec['reference'] as { kind?: string; name?: string } | undefined;
    const seen = o.status?.['seen'] as { count?: number; lastSeen?: string } | undefined;
    return [o.metadata.name, attrs.find((a) => a.name === 'type')?.value ?? '', ref ? `${ref.kind} ${ref.name}` : '', String(seen?.count ?? 0), seen?.lastSeen ?? ''];
  });
  main.replaceChildren(el('h2', {}, 'EventTypes'), table(['Name', 'Type', 'Reference', 'Seen', 'Last seen'], rows, 'eventtypes'));
}

// ---------------------------------------------------------------------------------------------------

const VIEWS: Record<string, () => Promise<void>> = {
  topology,
  triggers: triggersView,
  tail: tailView,
  deadletters: deadLettersView,
  eventtypes: eventTypesView,
};
/** Views redrawn as the stats change; the tail and dead letters keep what the user typed. */
const LIVE = new Set(['topology', 'triggers', 'eventtypes']);

const viewName = () => (location.hash.slice(1) in VIEWS ? location.hash.slice(1) : 'topology');

async function render(): Promise<void> {
  const name = viewName();
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.getAttribute('data-view') === name);
  try {
    await VIEWS[name]!();
    statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
    statusLine.className = '';
  } catch (err) {
    statusLine.textContent = (err as Error).message;
    statusLine.className = 'error';
  }
}

async function start(): Promise<void> {
  kinds = (await json<{ resources: ApiResource[] }>('/apis')).resources;
  await sample();
  window.addEventListener('hashchange', () => {
    tailAbort?.abort();
    void render();
  });
  await render();
  setInterval(() => {
    void sample()
      .then(() => (LIVE.has(viewName()) ? render() : undefined))
      .catch((err: unknown) => {
        statusLine.textContent = (err as Error).message;
        statusLine.className = 'error';
      });
  }, 2000);
}

void start();
