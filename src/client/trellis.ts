/**
 * The Trellis SDK (`trellis/client`), for Node 20+ and browsers: publish events (HTTP, or an open
 * WebSocket), subscribe in consumer groups with acks, nacks and a window, request-reply over the mesh,
 * and the admin calls (apply, get, delete, watch). Events are objects in the CloudEvents JSON format, so
 * the official `cloudevents` SDK's `CloudEvent` objects go in as they are and come out with
 * `new CloudEvent(event)`. Connections come back by themselves, with backoff. It depends on nothing of the
 * server and on no Node module (in Node, the `ws` package is loaded when a WebSocket is needed).
 * @module
 */

/** An event in the CloudEvents JSON format. */
export interface CloudEventJson {
  specversion: string;
  id: string;
  source: string;
  type: string;
  datacontenttype?: string;
  subject?: string;
  time?: string;
  data?: unknown;
  data_base64?: string;
  [extension: string]: unknown;
}

/** What `publish` takes: an event, a `cloudevents` SDK event, or one without `id`/`specversion` (filled in). */
export type EventInput =
  | CloudEventJson
  | { toJSON(): Record<string, unknown> }
  | (Omit<CloudEventJson, 'id' | 'specversion'> & { id?: string; specversion?: string });

/** An error the server answered: its status, code (`TRELLIS_ERR_...`) and message. */
export class TrellisApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'TrellisApiError';
  }
}

/** The WebSocket API both browsers and the `ws` package offer. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (ev: { data?: unknown }) => void): void;
}
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  options?: { headers?: Record<string, string> },
) => WebSocketLike;

/** A resource as the admin API shows it. */
export interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; uid?: string; [k: string]: unknown };
  spec: Record<string, unknown>;
  status?: Record<string, unknown>;
}

/** A change a watch reports. */
export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Resource;
}

/** The HTTP answer the ws package shows for a refused upgrade. */
interface RefusedUpgrade {
  statusCode: number;
  on(event: 'data' | 'end', f: (chunk?: Uint8Array) => void): void;
}

export interface ClientOptions {
  /** The server, `http://localhost:8080`. */
  url: string;
  /**
   * The bearer token sent with events and subscriptions (an OIDC token for the address when senders
   * authenticate, else the admin token when one is set); a function is asked again at each connection.
   */
  token?: string | (() => string | Promise<string>) | undefined;
  /** The admin token for apply/get/delete/watch (default: `token`). */
  adminToken?: string | undefined;
  /** The WebSocket implementation (default: the browser's, else the `ws` package). */
  WebSocket?: WebSocketConstructor | undefined;
  /** Reconnection backoff: the first wait and the longest (ms). */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number } | undefined;
}

export interface SubscribeOptions {
  /** A durable group: members of one name share its events, and it resumes where it acknowledged. */
  group?: string | undefined;
  /** A CESQL expression: only matching events (the filter of a group this creates). */
  filter?: string | undefined;
  /** Where a new group starts: `latest` (default), `earliest`, an RFC 3339 time, a sequence number. */
  from?: string | undefined;
  /** Unacknowledged events at most (default 100). */
  window?: number | undefined;
  /** Per partition key, one event at a time, in order (for a group this creates). */
  ordered?: boolean | undefined;
  /** Stops the subscription. */
  signal?: AbortSignal | undefined;
}

/** One event handed to a subscriber: settle it with ack, nack or reply. */
export interface Delivery {
  /** The event, as stored (without the delivery extension). */
  event: CloudEventJson;
  /** What it is acknowledged by. */
  id: string;
  /** Done. */
  ack(): void;
  /** Not done: it comes back after `delay` ms (or the group's backoff); `requeue: false` gives it up now. */
  nack(opts?: { delay?: number; requeue?: boolean; reason?: string }): void;
  /** Done, with a reply event (it goes back into the Broker, and to a requester waiting for it). */
  reply(event: EventInput): void;
}

/** The answer to one event published on an open connection. */
export interface PublishResult {
  status: number;
  code?: string;
  message?: string;
}

const SUBPROTOCOL = 'cloudevents.json';
const CONTROL = 'dev.trellis.control.';
const DELIVERY = 'trellisdelivery';
const OPEN = 1;

function uuid(): string {
  return globalThis.crypto.randomUUID();
}

/** An event in the JSON format, filled in where it may be: `specversion` 1.0 and a new `id`. */
export function toEventJson(input: EventInput): CloudEventJson {
  const raw =
    typeof (input as { toJSON?: unknown }).toJSON === 'function'
      ? (input as { toJSON(): Record<string, unknown> }).toJSON()
      : { ...(input as Record<string, unknown>) };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (v !== undefined) out[k] = v;
  out['specversion'] ??= '1.0';
  out['id'] ??= uuid();
  const data = out['data'];
  if (data instanceof Uint8Array) {
    let s = '';
    for (const b of data) s += String.fromCharCode(b);
    out['data_base64'] = btoa(s);
    delete out['data'];
  } else if (data !== undefined && typeof data === 'object' && out['datacontenttype'] === undefined)
    out['datacontenttype'] = 'application/json';
  return out as CloudEventJson;
}

function control(type: string, data: Record<string, unknown>): string {
  return JSON.stringify({
    specversion: '1.0',
    id: uuid(),
    source: '/trellis/client',
    type: CONTROL + type,
    data,
  });
}

async function apiError(res: Response): Promise<TrellisApiError> {
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { message: text };
  }
  return new TrellisApiError(
    res.status,
    String(body['code'] ?? `HTTP_${res.status}`),
    String(body['message'] ?? res.statusText),
    body,
  );
}

/** Waits `ms`, or until the signal aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

interface Discovered {
  apiVersion: string;
  kind: string;
  plural: string;
  singular: string;
}

export class TrellisClient {
  private readonly base: string;
  private kinds: Promise<Discovered[]> | undefined;
  private readonly publishers = new Map<string, Promise<Connection>>();

  constructor(readonly options: ClientOptions) {
    this.base = options.url.replace(/\/+$/, '');
  }

  // Events

  /**
   * Publishes events over HTTP (structured mode; a list goes as one batch); resolves once the server
   * stored them (202), rejects with a TrellisApiError otherwise. `target`: `namespace/broker`,
   * `channels/namespace/name`, or any address path.
   */
  async publish(target: string, events: EventInput | readonly EventInput[]): Promise<void> {
    const list = Array.isArray(events) ? events.map(toEventJson) : [toEventJson(events as EventInput)];
    const batch = Array.isArray(events);
    const headers: Record<string, string> = {
      'content-type': batch ? 'application/cloudevents-batch+json' : 'application/cloudevents+json',
    };
    const token = await this.token();
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
    const res = await fetch(`${this.base}/${target.replace(/^\//, '')}`, {
      method: 'POST',
      headers,
      body: JSON.stringify(batch ? list : list[0]),
    });
    if (res.status !== 202) throw await apiError(res);
    await res.arrayBuffer();
  }

  /**
   * Publishes one event on an open WebSocket to `target` (opened on first use, kept, and opened again
   * when it drops); resolves with the server's answer (status 202 once stored).
   */
  async send(target: string, event: EventInput): Promise<PublishResult> {
    const c = await this.publisher(target);
    return c.publish(toEventJson(event));
  }

  /**
   * Sends a request and waits for its reply: a responder (a group member calling `reply`, a Trigger's
   * subscriber answering with an event) answers it. Rejects with TRELLIS_ERR_NO_RESPONDER when nothing
   * takes the request, TRELLIS_ERR_REPLY_TIMEOUT after `timeout` ms (default 30 s).
   */
  async request(target: string, event: EventInput, opts: { timeout?: number } = {}): Promise<CloudEventJson> {
    const c = await this.publisher(target);
    return c.request(toEventJson(event), opts.timeout ?? 30_000);
  }

  /**
   * Subscribes to a Broker or Channel: an async iterator of deliveries. Each must be settled (ack, nack,
   * reply); at most `window` are unsettled at once. Reconnects by itself; with a `group`, nothing is lost
   * meanwhile (unsettled events go to another member, or come back).
   */
  subscribe(target: string, opts: SubscribeOptions = {}): Subscription {
    return new Subscription(this, target.replace(/^\//, ''), opts);
  }

  /**
   * Answers requests: joins `group` (created with `filter` when new) and calls `handler` for each event;
   * what it returns is the reply (nothing: acknowledged without one); a throw nacks the event.
   */
  respond(
    target: string,
    opts: SubscribeOptions & { group: string },
    handler: (event: CloudEventJson) => EventInput | undefined | Promise<EventInput | undefined>,
  ): { close(): void; done: Promise<void>; ready: Promise<void> } {
    const sub = this.subscribe(target, opts);
    const done = (async () => {
      for await (const d of sub) {
        try {
          const r = await handler(d.event);
          if (r === undefined) d.ack();
          else d.reply(r);
        } catch (err) {
          d.nack({ reason: (err as Error).message });
        }
      }
    })();
    return { close: () => sub.close(), done, ready: sub.ready };
  }

  /** Closes the open publishing connections. */
  close(): void {
    for (const p of this.publishers.values())
      void p.then(
        (c) => c.close(),
        () => undefined,
      );
    this.publishers.clear();
  }

  // Admin

  /** Applies resources (objects, or YAML/JSON text with one or more documents); resolves with each outcome. */
  async apply(
    docs: string | Record<string, unknown> | readonly Record<string, unknown>[],
    namespace?: string,
  ) {
    const body = typeof docs === 'string' ? docs : JSON.stringify(Array.isArray(docs) ? docs : [docs]);
    const q = namespace === undefined ? '' : `?namespace=${encodeURIComponent(namespace)}`;
    const res = await this.admin(`/apis/apply${q}`, {
      method: 'POST',
      headers: { 'content-type': typeof docs === 'string' ? 'application/yaml' : 'application/json' },
      body,
    });
    return (await res.json()) as { items: Record<string, unknown>[] };
  }

  /** A resource by kind (`Broker`, `triggers`, `cg`...) and name, or the list of a kind in a namespace. */
  async get(kind: string, name: string, opts?: { namespace?: string }): Promise<Resource>;
  async get(kind: string, name?: undefined, opts?: { namespace?: string }): Promise<{ items: Resource[] }>;
  async get(kind: string, name?: string, opts: { namespace?: string } = {}): Promise<unknown> {
    const path = await this.kindPath(kind, opts.namespace ?? 'default');
    const res = await this.admin(name === undefined ? path : `${path}/${encodeURIComponent(name)}`);
    return res.json();
  }

  /** Deletes a resource; resolves with what was deleted. */
  async delete(kind: string, name: string, opts: { namespace?: string } = {}): Promise<Resource> {
    const path = await this.kindPath(kind, opts.namespace ?? 'default');
    const res = await this.admin(`${path}/${encodeURIComponent(name)}`, { method: 'DELETE' });
    return (await res.json()) as Resource;
  }

  /** The resources of a kind (in a namespace) as ADDED, then every change, until the signal aborts. */
  async *watch(
    kind: string,
    opts: { namespace?: string; signal?: AbortSignal } = {},
  ): AsyncGenerator<WatchEvent> {
    const path = await this.kindPath(kind, opts.namespace ?? 'default');
    const res = await this.admin(`${path}?watch=true`, opts.signal ? { signal: opts.signal } : {});
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += dec.decode(value, { stream: true });
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line !== '') yield JSON.parse(line);
          nl = buf.indexOf('\n');
        }
      }
    } catch (err) {
      if ((err as Error).name === 'AbortError') return;
      throw err;
    } finally {
      reader.releaseLock();
    }
  }

  // Internals

  /** The bearer token for events and subscriptions, when there is one. */
  async token(): Promise<string | undefined> {
    const t = this.options.token;
    return typeof t === 'function' ? await t() : t;
  }

  /** Opens a WebSocket to a path with a query; rejects with the server's refusal when it can read it. */
  async open(
    path: string,
    query: URLSearchParams,
    on: { open?(ws: WebSocketLike): void; message(text: string): void },
  ): Promise<{ ws: WebSocketLike; closed: Promise<void> }> {
    const given = this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    // The ws package (Node) can send headers; a browser's WebSocket cannot: the token goes in the query.
    const Ctor = given ?? (await loadWs());
    const headersAllowed = given === undefined;
    const token = await this.token();
    const q = new URLSearchParams(query);
    const headers: Record<string, string> = {};
    if (token !== undefined) {
      if (headersAllowed) headers['authorization'] = `Bearer ${token}`;
      else q.set('access_token', token);
    }
    const qs = q.toString();
    const url = `${this.base.replace(/^http/, 'ws')}/${path}${qs ? `?${qs}` : ''}`;
    const ws = headersAllowed ? new Ctor(url, [SUBPROTOCOL], { headers }) : new Ctor(url, [SUBPROTOCOL]);
    return new Promise((resolve, reject) => {
      let refused = false;
      // The ws package shows why an upgrade was refused (a browser only says that it failed).
      const node = ws as {
        on?: (e: 'unexpected-response', f: (req: unknown, res: RefusedUpgrade) => void) => void;
        terminate?: () => void;
      };
      node.on?.('unexpected-response', (_req, res) => {
        refused = true;
        let text = '';
        res.on('data', (c) => {
          text += String(c ?? '');
        });
        res.on('end', () => {
          let body: Record<string, unknown> = {};
          try {
            body = JSON.parse(text);
          } catch {
            body = { message: text };
          }
          reject(
            new TrellisApiError(
              res.statusCode,
              String(body['code'] ?? `HTTP_${res.statusCode}`),
              String(body['message'] ?? ''),
              body,
            ),
          );
          node.terminate?.();
        });
      });
      // Listeners go on before the connection opens: the server's first message may come with its answer.
      const closed = new Promise<void>((done) => ws.addEventListener('close', () => done()));
      ws.addEventListener('message', (m: { data?: unknown }) => on.message(String(m.data)));
      ws.addEventListener('open', () => {
        on.open?.(ws);
        resolve({ ws, closed });
      });
      ws.addEventListener('error', () => {
        if (!refused)
          reject(new TrellisApiError(0, 'CONNECTION_FAILED', `cannot connect to ${url.split('?')[0]}`));
      });
    });
  }

  private publisher(target: string): Promise<Connection> {
    const key = target.replace(/^\//, '');
    let p = this.publishers.get(key);
    if (p === undefined) {
      let conn: Connection | undefined;
      p = this.open(key, new URLSearchParams(), {
        open: (ws) => {
          conn = new Connection(ws, () => this.publishers.delete(key));
        },
        message: (text) => conn?.message(text),
      }).then(() => conn!);
      p.catch(() => this.publishers.delete(key));
      this.publishers.set(key, p);
    }
    return p;
  }

  private async admin(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    const token = this.options.adminToken ?? (await this.token());
    if (token !== undefined) headers.set('authorization', `Bearer ${token}`);
    const res = await fetch(`${this.base}${path}`, { ...init, headers });
    if (!res.ok) throw await apiError(res);
    return res;
  }

  /** `/apis/{group}/{version}/namespaces/{ns}/{plural}` for a kind as kubectl users name it. */
  private async kindPath(kind: string, namespace: string): Promise<string> {
    this.kinds ??= this.admin('/apis')
      .then((r) => r.json() as Promise<{ resources: Discovered[] }>)
      .then((l) => l.resources);
    const n = kind.toLowerCase();
    const k = (await this.kinds).find(
      (x) =>
        x.kind.toLowerCase() === n ||
        x.plural === n ||
        x.singular === n ||
        `${x.plural}.${x.apiVersion.split('/')[0]}` === n,
    );
    if (k === undefined)
      throw new TrellisApiError(404, 'TRELLIS_ERR_KIND_UNKNOWN', `no kind '${kind}' on this server`);
    const api = k.apiVersion.includes('/') ? `/apis/${k.apiVersion}` : `/api/${k.apiVersion}`;
    return `${api}/namespaces/${encodeURIComponent(namespace)}/${k.plural}`;
  }
}

/** Loads the `ws` package (Node), out of sight of browser bundlers. */
async function loadWs(): Promise<WebSocketConstructor> {
  const name = 'ws';
  try {
    const m = (await import(/* @vite-ignore */ name)) as {
      WebSocket?: WebSocketConstructor;
      default?: WebSocketConstructor;
    };
    return (m.WebSocket ?? m.default)!;
  } catch {
    throw new Error('no WebSocket here: install the ws package, or pass options.WebSocket');
  }
}

/** An open connection used to publish and to request. */
class Connection {
  private readonly byKey = new Map<string, ((r: PublishResult) => void)[]>();
  private readonly requests = new Map<
    string,
    { resolve: (e: CloudEventJson) => void; reject: (e: Error) => void }
  >();
  private closed = false;

  constructor(
    private readonly ws: WebSocketLike,
    onClose: () => void,
  ) {
    ws.addEventListener('close', () => {
      this.closed = true;
      onClose();
      const gone = {
        status: 0,
        code: 'CONNECTION_CLOSED',
        message: 'the connection closed before the answer came',
      };
      for (const list of this.byKey.values()) for (const r of list) r(gone);
      this.byKey.clear();
      for (const r of this.requests.values())
        r.reject(new TrellisApiError(0, 'CONNECTION_CLOSED', gone.message));
      this.requests.clear();
    });
  }

  publish(e: CloudEventJson): Promise<PublishResult> {
    if (this.closed)
      return Promise.resolve({ status: 0, code: 'CONNECTION_CLOSED', message: 'the connection is closed' });
    return new Promise((resolve) => {
      const key = `${e.source}\u0000${e.id}`;
      const list = this.byKey.get(key);
      if (list === undefined) this.byKey.set(key, [resolve]);
      else list.push(resolve);
      this.ws.send(JSON.stringify(e));
    });
  }

  request(e: CloudEventJson, timeout: number): Promise<CloudEventJson> {
    if (this.closed)
      return Promise.reject(new TrellisApiError(0, 'CONNECTION_CLOSED', 'the connection is closed'));
    return new Promise((resolve, reject) => {
      const msg = control('request', { event: e, timeout });
      const id = (JSON.parse(msg) as { id: string }).id;
      this.requests.set(id, { resolve, reject });
      this.ws.send(msg);
    });
  }

  close(): void {
    this.ws.close(1000);
  }

  message(text: string): void {
    let m: { type?: string; data?: Record<string, unknown> };
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    const d = m.data ?? {};
    if (m.type === `${CONTROL}published`) {
      const key = `${String(d['source'])}\u0000${String(d['id'])}`;
      const list = this.byKey.get(key);
      const r = list?.shift();
      if (list !== undefined && list.length === 0) this.byKey.delete(key);
      r?.({
        status: Number(d['status']),
        code: d['code'] as string | undefined,
        message: d['message'] as string | undefined,
      });
    } else if (m.type === `${CONTROL}reply`) {
      const id = String(d['request']);
      const r = this.requests.get(id);
      if (r === undefined) return;
      this.requests.delete(id);
      if (d['status'] === 200) r.resolve(d['event'] as CloudEventJson);
      else r.reject(new TrellisApiError(Number(d['status']), String(d['code']), String(d['message']), d));
    } else if (m.type === `${CONTROL}error` && typeof d['about'] === 'string') {
      const r = this.requests.get(d['about']);
      if (r === undefined) return;
      this.requests.delete(d['about']);
      r.reject(new TrellisApiError(Number(d['status']), String(d['code']), String(d['message']), d));
    }
  }
}

/** A subscription: an async iterable of deliveries, reconnecting until closed. */
export class Subscription implements AsyncIterable<Delivery> {
  private readonly queue: Delivery[] = [];
  private wake: (() => void) | undefined;
  private ws: WebSocketLike | undefined;
  private stopped = false;
  private failure: Error | undefined;
  private acks: string[] = [];
  private flushing = false;
  /** The group this subscription joined (named by the server for one without a group). */
  group: string | undefined;
  /** Resolves once the first connection is subscribed; rejects when it is refused. */
  readonly ready: Promise<void>;
  private readyResolve!: () => void;
  private readyReject!: (e: Error) => void;

  constructor(
    private readonly client: TrellisClient,
    private readonly target: string,
    private readonly opts: SubscribeOptions,
  ) {
    this.ready = new Promise((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    this.ready.catch(() => undefined);
    opts.signal?.addEventListener('abort', () => this.close());
    void this.run();
  }

  private async run(): Promise<void> {
    const q = new URLSearchParams({ subscribe: '' });
    if (this.opts.group !== undefined) q.set('group', this.opts.group);
    if (this.opts.filter !== undefined) q.set('filter', this.opts.filter);
    if (this.opts.from !== undefined) q.set('from', this.opts.from);
    if (this.opts.window !== undefined) q.set('window', String(this.opts.window));
    if (this.opts.ordered === true) q.set('ordered', 'true');
    const r = this.client.options.reconnect ?? {};
    const first = r.initialDelayMs ?? 100;
    const most = r.maxDelayMs ?? 5000;
    let delay = first;
    let connected = false;
    while (!this.stopped) {
      let ws: WebSocketLike;
      let closed: Promise<void>;
      try {
        ({ ws, closed } = await this.client.open(this.target, q, {
          open: (w) => {
            this.ws = w;
          },
          message: (text) => this.message(text),
        }));
      } catch (err) {
        const e = err as TrellisApiError;
        // A refusal that will not change by itself ends the subscription.
        if (e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429) {
          this.fail(e);
          return;
        }
        if (!connected && e.status === 0 && delay >= most) {
          // Never reached the server at all, for a while: say so (and keep trying).
          this.readyReject(e);
        }
        await sleep(delay * (0.5 + Math.random()), this.opts.signal);
        delay = Math.min(most, delay * 2);
        continue;
      }
      if (this.stopped) {
        ws.close(1000);
        return;
      }
      await closed;
      this.ws = undefined;
      connected = true;
      this.acks = [];
      if (this.stopped) return;
      delay = first;
      await sleep(delay * (0.5 + Math.random()), this.opts.signal);
    }
  }

  private message(text: string): void {
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(text);
    } catch {
      return;
    }
    const type = String(e['type']);
    if (type.startsWith(CONTROL)) {
      if (type === `${CONTROL}subscribed`) {
        this.group = String((e['data'] as Record<string, unknown>)['group']);
        this.readyResolve();
      }
      return;
    }
    const id = e[DELIVERY];
    if (typeof id !== 'string') return;
    delete e[DELIVERY];
    const ws = this.ws;
    let settled = false;
    const once = (f: () => void) => {
      if (settled) return;
      settled = true;
      f();
    };
    this.queue.push({
      event: e as CloudEventJson,
      id,
      ack: () => once(() => this.ack(id, ws)),
      nack: (o = {}) =>
        once(() =>
          this.sendOn(
            ws,
            control('nack', {
              id,
              ...(o.delay !== undefined ? { delay: o.delay } : {}),
              ...(o.requeue !== undefined ? { requeue: o.requeue } : {}),
              ...(o.reason !== undefined ? { reason: o.reason } : {}),
            }),
          ),
        ),
      reply: (r) => once(() => this.sendOn(ws, control('ack', { id, reply: toEventJson(r) }))),
    });
    this.wake?.();
  }

  /** Acks go in batches, once per turn of the event loop. */
  private ack(id: string, ws: WebSocketLike | undefined): void {
    if (ws !== this.ws) return; // the connection it came on is gone: it comes again anyway
    this.acks.push(id);
    if (this.flushing) return;
    this.flushing = true;
    setTimeout(() => {
      this.flushing = false;
      const ids = this.acks.splice(0);
      if (ids.length > 0) this.sendOn(this.ws, control('ack', { ids }));
    }, 0);
  }

  private sendOn(ws: WebSocketLike | undefined, msg: string): void {
    if (ws !== undefined && ws === this.ws && ws.readyState === OPEN) ws.send(msg);
  }

  private fail(e: Error): void {
    this.failure = e;
    this.readyReject(e);
    this.stopped = true;
    this.wake?.();
  }

  /** Stops: the connection closes; unsettled deliveries go to another member (or come back later). */
  close(): void {
    this.stopped = true;
    // Acks not sent yet go first.
    const ids = this.acks.splice(0);
    if (ids.length > 0) this.sendOn(this.ws, control('ack', { ids }));
    this.ws?.close(1000);
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Delivery> {
    for (;;) {
      const d = this.queue.shift();
      if (d !== undefined) {
        yield d;
        continue;
      }
      if (this.failure !== undefined) throw this.failure;
      if (this.stopped) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
  }
}
