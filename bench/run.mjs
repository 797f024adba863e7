// `npm run bench`: Trellis against baselines measured in the same run, on this machine.
//  1. codec: decoding a binary-mode message, ours vs the cloudevents SDK (ns/op).
//  2. ingress: binary-mode POSTs of a 1 KiB event with many connections, Trellis vs a raw node:http server.
//  3. end to end: ingress -> one Trigger -> a local HTTP subscriber, at a fixed rate: delivered/s, p50, p99.
//  (and flows, isolation, filters, control; 7. cluster mode on NATS JetStream, when NATS answers;
//  8. connectors; 9. streaming: WebSocket and gRPC beside raw servers.)
// Every server runs in its own process; the load generator and the subscriber run here.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as connectTcp } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { HTTP } from 'cloudevents';
import { Pool } from 'undici';
import { decodeHttp } from '../dist/cloudevents/http.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'dist', 'cli', 'main.js');
const DURATION = Number(process.env.BENCH_SECONDS ?? 8);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 256);
const RATE = Number(process.env.BENCH_RATE ?? 5000);
const body = JSON.stringify({ pad: 'x'.repeat(1000) }); // about 1 KiB
const ceHeaders = (id) => ({
  'ce-specversion': '1.0',
  'ce-id': id,
  'ce-source': '/bench',
  'ce-type': 'bench.event',
  'content-type': 'application/json',
});
const rows = [];
const row = (name, value, unit, note = '') => {
  rows.push({ name, value, unit, note });
  console.log(
    `  ${name}: ${typeof value === 'number' ? value.toLocaleString('en-US', { maximumFractionDigits: 2 }) : value} ${unit} ${note}`,
  );
};

function start(args, pattern) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const on = (b) => {
      if (process.env.BENCH_VERBOSE) process.stderr.write(b);
      out += b.toString();
      const m = pattern.exec(out);
      if (m) resolve({ child, url: m[1] });
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
}
async function stop(p) {
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill('SIGTERM');
  await exited;
}
function peakRssMiB(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}
/** The middle value (the upper one of two). */
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

async function cannon(url, extraHeaders = {}) {
  const r = await autocannon({
    url,
    method: 'POST',
    connections: CONNECTIONS,
    duration: DURATION,
    headers: { ...ceHeaders('bench-1'), ...extraHeaders },
    body,
  });
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${url}: ${r.non2xx} non-2xx, ${r.errors} errors`);
  return r;
}
async function trellis(dir, yaml, extra = []) {
  const file = join(dir, 'resources.yaml');
  writeFileSync(file, yaml);
  const nodeArgs = process.env.BENCH_NODE_ARGS ? process.env.BENCH_NODE_ARGS.split(' ') : [];
  return start(
    [
      ...nodeArgs,
      BIN,
      'serve',
      '--port',
      '0',
      '--data-dir',
      join(dir, 'data'),
      '-f',
      file,
      '--log-level',
      'warn',
      ...extra,
    ],
    /trellis serving on (\S+)/,
  );
}
const BROKER = 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n';

const only = process.env.BENCH_ONLY;
// 1. codec
if (!only || only === 'codec') {
  console.log('codec: decode one binary-mode message (1 KiB JSON data)');
  const headers = { ...ceHeaders('codec-1'), 'ce-time': '2024-01-01T00:00:00Z', 'ce-myext': 'value' };
  const raw = Object.entries(headers).flat();
  const buf = Buffer.from(body);
  const time = (fn) => {
    for (let i = 0; i < 20000; i++) fn();
    const n = 200000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    return Number(process.hrtime.bigint() - t0) / n;
  };
  const ours = time(() => decodeHttp(raw, buf));
  const sdk = time(() => HTTP.toEvent({ headers, body }));
  row('trellis decodeHttp', ours, 'ns/op');
  row('cloudevents SDK HTTP.toEvent', sdk, 'ns/op');
  row('codec speed-up over the SDK', sdk / ours, 'x');
}

// 2. ingress: rounds alternate between the baseline and Trellis, so that a change in the machine's speed
// during the run (it is shared) touches both; the medians are reported.
if (!only || only === 'ingress') {
  const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
  console.log(
    `ingress: ${CONNECTIONS} connections, ${ROUNDS} rounds of ${DURATION} s each, binary mode, 1 KiB events`,
  );
  const rawRates = [];
  const trRates = [];
  const ratios = [];
  let rawLat;
  let trLat;
  let rss = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const raw = await start([join(ROOT, 'bench', 'raw-server.mjs')], /listening on (\S+)/);
    const r = await cannon(`${raw.url}/default/b`);
    await stop(raw);
    const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
    const t = await trellis(dir, BROKER);
    const tr = await cannon(`${t.url}/default/b`);
    rss = Math.max(rss, peakRssMiB(t.child.pid));
    await stop(t);
    rmSync(dir, { recursive: true, force: true });
    rawRates.push(r.requests.average);
    trRates.push(tr.requests.average);
    ratios.push(tr.requests.average / r.requests.average);
    rawLat = r.latency;
    trLat = tr.latency;
    console.log(
      `  round ${i + 1}: raw ${Math.round(r.requests.average)} req/s, trellis ${Math.round(tr.requests.average)} events/s`,
    );
  }
  row(
    'raw node:http (median)',
    median(rawRates),
    'req/s',
    `last round p50 ${rawLat.p50} ms, p99 ${rawLat.p99} ms`,
  );
  row(
    'trellis ingress, durable (median)',
    median(trRates),
    'events/s',
    `last round p50 ${trLat.p50} ms, p99 ${trLat.p99} ms`,
  );
  row('ingress ratio trellis/raw (median of rounds)', median(ratios), '', '(floor 0.4, goal 0.6)');
  row('trellis peak RSS', rss, 'MiB');
}

// 3. end to end at a fixed rate, Trellis and then the relay baseline (bench/relay-server.mjs). The
// subscriber runs in its own process (bench/sink-server.mjs) and measures latency from the send time.
async function fixedRate(url, sinkUrl, label, getRss) {
  return fixedRateAt(RATE, url, sinkUrl, label, getRss);
}

async function fixedRateAt(RATE, urls, sinkUrl, label, getRss, path = '/default/b', fanout = 1) {
  // Several URLs (processes of one mesh) share the load in turn, as a load balancer would.
  const pools = [urls].flat().map((u) => new Pool(u, { connections: 256 })); // the generator, not the pool, sets the rate
  let turn = 0;
  const pool = { request: (o) => pools[turn++ % pools.length].request(o) };
  // Warm-up, not measured: open the connections (a burst of new connections can overflow the listen
  // backlog, and a dropped SYN costs a 1 s retransmit), and let the JIT settle.
  await Promise.all(
    Array.from({ length: 256 }, (_, i) =>
      pool
        .request({ path, method: 'POST', headers: ceHeaders(`warm-${i}`), body })
        .then((r) => r.body.dump()),
    ),
  );
  for (let k = 0; k < 20; k++) {
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        pool
          .request({ path, method: 'POST', headers: ceHeaders(`warm-${k}-${i}`), body })
          .then((r) => r.body.dump()),
      ),
    );
  }
  await new Promise((r) => setTimeout(r, 1000));
  await fetch(`${sinkUrl}reset`, { method: 'POST' });
  let n = 0;
  let accepted = 0;
  let refused = 0;
  const inflight = new Set();
  const startAt = performance.now();
  const total = RATE * DURATION;
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.min(total, Math.round(((performance.now() - startAt) / 1000) * RATE));
      while (n < due) {
        const headers = {
          ...ceHeaders(`e2e-${n++}`),
          'ce-benchsent': String(performance.timeOrigin + performance.now()),
        };
        const p = pool
          .request({ path, method: 'POST', headers, body })
          .then(async (r) => {
            await r.body.dump();
            if (r.statusCode === 202) accepted++;
            else refused++;
          })
          .catch(() => refused++)
          .finally(() => inflight.delete(p));
        inflight.add(p);
      }
      if (n >= total) {
        clearInterval(timer);
        resolve();
      }
    }, 10);
  });
  await Promise.all(inflight);
  const sendSeconds = (performance.now() - startAt) / 1000;
  const deadline = Date.now() + 30_000;
  let stats = await (await fetch(`${sinkUrl}stats`)).json();
  while (stats.received < accepted * fanout && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    stats = await (await fetch(`${sinkUrl}stats`)).json();
  }
  const allSeconds = (performance.now() - startAt) / 1000;
  await Promise.all(pools.map((p) => p.destroy()));
  row(`${label}: offered`, total / sendSeconds, 'events/s');
  row(
    `${label}: accepted / delivered`,
    `${accepted} / ${stats.received}`,
    'events',
    `${refused ? `(${refused} refused) ` : ''}in ${allSeconds.toFixed(1)} s`,
  );
  row(`${label}: sustained delivery rate`, stats.received / fanout / allSeconds, 'events/s');
  row(
    `${label}: latency p50 / p99 (sent -> subscriber got it)`,
    `${stats.p50?.toFixed(1)} / ${stats.p99?.toFixed(1)}`,
    'ms',
  );
  if (getRss) row(`${label}: peak RSS`, getRss(), 'MiB');
  return stats.received / fanout / allSeconds;
}

if (!only || only === 'e2e') {
  console.log(`end to end: ${RATE} events/s for ${DURATION} s -> one Trigger -> a subscriber process`);
  const sink = await start([join(ROOT, 'bench', 'sink-server.mjs')], /listening on (\S+)/);
  const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
  const t = await trellis(
    dir,
    `${BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  subscriber:\n    uri: ${sink.url}\n`,
  );
  const ours = await fixedRate(t.url, sink.url, 'trellis', () => peakRssMiB(t.child.pid));
  await stop(t);
  rmSync(dir, { recursive: true, force: true });
  if (!process.env.BENCH_NO_RELAY) {
    const relay = await start([join(ROOT, 'bench', 'relay-server.mjs'), sink.url], /listening on (\S+)/);
    const base = await fixedRate(relay.url, sink.url, 'relay baseline (no store, no retries)', undefined);
    await stop(relay);
    row('end-to-end ratio trellis/relay', ours / base, '', '(floor: trellis sustains 5,000 events/s)');
  }
  await stop(sink);
}

/**
 * Ingress throughput of the same server with a feature on and off, in rounds that alternate which goes
 * first (the shared machine's drift touches both); prints each round and the medians with their ratio.
 * `serve(mode)` starts the server and resolves with it and the headers to send.
 */
async function onBesideOff(what, rounds, floor, serve) {
  const rates = { on: [], off: [] };
  const ratios = [];
  for (let i = 0; i < rounds; i++) {
    const got = {};
    for (const mode of i % 2 === 0 ? ['on', 'off'] : ['off', 'on']) {
      const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
      const { t, headers } = await serve(dir, mode);
      const r = await cannon(`${t.url}/default/b`, headers);
      await stop(t);
      rmSync(dir, { recursive: true, force: true });
      got[mode] = r.requests.average;
      rates[mode].push(r.requests.average);
    }
    ratios.push(got.on / got.off);
    console.log(
      `  round ${i + 1}: ${what} on ${Math.round(got.on)} events/s, off ${Math.round(got.off)} events/s`,
    );
  }
  row(`ingress, ${what} on (median)`, median(rates.on), 'events/s');
  row(`ingress, ${what} off (median)`, median(rates.off), 'events/s');
  row(`ingress ratio ${what} on/off (median of rounds)`, median(ratios), '', `(floor ${floor})`);
}

// 3a. metrics: the ingress and end-to-end figures with Prometheus metrics on (the default) beside off
// (--no-metrics), rounds alternating so that the shared machine's drift touches both.
if (!only || only === 'metrics') {
  // What the hooks cost per event (ingress, append, attempt, outcome), measured alone: the figure the
  // throughput rounds below cannot resolve on a shared machine.
  {
    const { Metrics } = await import('../dist/observability/metrics.js');
    const { LiveStats } = await import('../dist/observability/stats.js');
    const { observers } = await import('../dist/dataplane/observer.js');
    const route = { id: 'u1', kind: 'Trigger', namespace: 'default', name: 't', stream: 'default/b' };
    const metrics = new Metrics({
      routes: () => [route],
      backlog: async () => new Map(),
      pendingWrites: () => 0,
      inflight: () => 0,
      store: 'sqlite',
      version: 'bench',
    });
    const perEvent = (o, n) => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        o.ingress({ stream: 'default/b', kind: 'Broker', events: 1, code: 202, bytes: 1100, seconds: 0.003 });
        o.append(1, 0.002);
        o.attempt(route, 202, 0.004);
        o.outcome(route, 'delivered', i, 'e');
      }
      return Number(process.hrtime.bigint() - t0) / n;
    };
    const on = observers(new LiveStats(), metrics);
    const off = observers(new LiveStats());
    for (let k = 0; k < 3; k++) perEvent(on, 200_000) + perEvent(off, 200_000);
    row('observer hooks per event, metrics on', perEvent(on, 1_000_000), 'ns');
    row('observer hooks per event, metrics off (live stats only)', perEvent(off, 1_000_000), 'ns');
  }
  const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
  console.log(
    `metrics: ingress with one Trigger (${CONNECTIONS} connections, ${ROUNDS} rounds of ${DURATION} s), then ${RATE} events/s end to end; metrics on beside off`,
  );
  const sink = await start([join(ROOT, 'bench', 'sink-server.mjs')], /listening on (\S+)/);
  const yaml = `${BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  subscriber:\n    uri: ${sink.url}\n`;
  await onBesideOff('metrics (one Trigger)', ROUNDS, 0.95, async (dir, mode) => ({
    t: await trellis(dir, yaml, mode === 'off' ? ['--no-metrics'] : []),
    headers: {},
  }));
  const e2e = {};
  for (const mode of ['off', 'on']) {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
    const t = await trellis(dir, yaml, mode === 'off' ? ['--no-metrics'] : []);
    await fixedRate(t.url, sink.url, `metrics ${mode}`, () => peakRssMiB(t.child.pid));
    e2e[mode] = await (await fetch(`${sink.url}stats`)).json();
    await stop(t);
    rmSync(dir, { recursive: true, force: true });
  }
  row(
    'end-to-end p50 ratio metrics on/off',
    e2e.on.p50 / e2e.off.p50,
    '',
    '(floor: within 5%, or under 1 ms apart)',
  );
  await stop(sink);
}

// 3c. authentication: ingress into a Broker with --authentication oidc (a token Trellis minted, sent with
// every request; verified tokens are cached) beside the same server without authentication.
if (!only || only === 'auth') {
  const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
  console.log(
    `authentication: ingress, ${CONNECTIONS} connections, ${ROUNDS} rounds of ${DURATION} s; OIDC on beside off`,
  );
  await onBesideOff('authentication', ROUNDS, 0.8, async (dir, mode) => {
    const t = await trellis(dir, BROKER, mode === 'on' ? ['--authentication', 'oidc'] : []);
    if (mode === 'off') return { t, headers: {} };
    const r = await fetch(`${t.url}/apis/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ audience: 'eventing.knative.dev/broker/default/b', subject: 'bench' }),
    });
    return { t, headers: { authorization: `Bearer ${(await r.json()).token}` } };
  });
}

// 3b. flows: the same fixed-rate run through a Channel with two Subscriptions, and through a Sequence of
// three steps (each an echo process) whose reply goes to the subscriber, beside one Trigger.
if (!only || only === 'flows') {
  const rate = Number(process.env.BENCH_FLOW_RATE ?? 1000);
  console.log(
    `flows: ${rate} events/s for ${DURATION} s; a Trigger, a Channel with two Subscriptions, a 3-step Sequence`,
  );
  const sink = await start([join(ROOT, 'bench', 'sink-server.mjs')], /listening on (\S+)/);
  const echo = await start([join(ROOT, 'bench', 'echo-server.mjs')], /listening on (\S+)/);
  const sub = (name) =>
    `---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata:\n  name: ${name}\nspec:\n  channel:\n    apiVersion: messaging.knative.dev/v1\n    kind: InMemoryChannel\n    name: c\n  subscriber:\n    uri: ${sink.url}\n`;
  const cases = [
    [
      'Trigger',
      `${BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  subscriber:\n    uri: ${sink.url}\n`,
      '/default/b',
      1,
    ],
    [
      'Channel, 2 Subscriptions',
      `apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata:\n  name: c\n${sub('s1')}${sub('s2')}`,
      '/inmemorychannels/default/c',
      2,
    ],
    [
      'Sequence, 3 steps',
      `apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata:\n  name: q\nspec:\n  steps:\n    - uri: ${echo.url}\n    - uri: ${echo.url}\n    - uri: ${echo.url}\n  reply:\n    uri: ${sink.url}\n`,
      '/sequences/default/q',
      1,
    ],
  ];
  for (const [label, yaml, path, fanout] of cases) {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
    const t = await trellis(dir, yaml);
    await fixedRateAt(rate, t.url, sink.url, label, () => peakRssMiB(t.child.pid), path, fanout);
    await stop(t);
    rmSync(dir, { recursive: true, force: true });
  }
  await stop(echo);
  await stop(sink);
}

// 4. isolation: the same end-to-end run at a rate above what one process delivers, once with one healthy
// Trigger and once with a second Trigger whose subscriber never answers (30 s timeout). The healthy
// Trigger's delivery rate should drop by less than 10%.
if (only === 'isolation' || (!only && process.env.BENCH_ISOLATION !== '0')) {
  const rate = Number(process.env.BENCH_ISOLATION_RATE ?? 6000);
  console.log(
    `isolation: ${rate} events/s offered for ${DURATION} s; healthy Trigger alone, then beside a hanging one`,
  );
  const sink = await start([join(ROOT, 'bench', 'sink-server.mjs')], /listening on (\S+)/);
  const hang = await start(
    [
      '-e',
      "const s=require('node:http').createServer(()=>{}).listen(0,'127.0.0.1',()=>console.log('listening on http://127.0.0.1:'+s.address().port+'/'))",
    ],
    /listening on (\S+)/,
  );
  const trig = (name, uri) =>
    `---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: ${name}\nspec:\n  broker: b\n  subscriber:\n    uri: ${uri}\n  delivery:\n    timeout: PT30S\n`;
  const rates = [];
  for (const withHang of [false, true]) {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
    const t = await trellis(
      dir,
      `${BROKER}${trig('healthy', sink.url)}${withHang ? trig('hangs', hang.url) : ''}`,
    );
    const r = await fixedRateAt(
      rate,
      t.url,
      sink.url,
      withHang ? 'healthy beside a hanging Trigger' : 'healthy Trigger alone',
    );
    rates.push(r);
    await stop(t);
    rmSync(dir, { recursive: true, force: true });
  }
  await stop(hang);
  await stop(sink);
  row(
    'isolation: healthy rate with a hanging neighbour / alone',
    rates[1] / rates[0],
    '',
    '(goal: above 0.9)',
  );
}

// 5. filters: nanoseconds per evaluation of compiled filters, and ingress into a Broker with 10,000
// Triggers (distinct exact types, one of which matches) against a Broker with one Trigger.
if (!only || only === 'filters') {
  const { compileAttributesFilter } = await import('../dist/filter/attributes.js');
  const { compileFilters } = await import('../dist/filter/dialect.js');
  console.log('filters: ns per evaluation of a compiled filter on a matching event');
  const e = {
    attrs: {
      specversion: '1.0',
      id: '1',
      source: '/shop/eu',
      type: 'order.created',
      subject: 'o-1',
      amount: '150',
      region: 'eu',
    },
  };
  const time = (fn) => {
    for (let i = 0; i < 100000; i++) fn(e);
    const n = 1000000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(e);
    return Number(process.hrtime.bigint() - t0) / n;
  };
  row(
    'exact (filter.attributes type)',
    time(compileAttributesFilter({ type: 'order.created' })),
    'ns/op',
    "(Knative's Go exact filter: about 425 ns/op)",
  );
  row('prefix (filters)', time(compileFilters([{ prefix: { type: 'order.' } }])), 'ns/op');
  row(
    "CESQL simple: type = 'order.created'",
    time(compileFilters([{ cesql: "type = 'order.created'" }])),
    'ns/op',
  );
  row(
    'CESQL complex',
    time(
      compileFilters([
        {
          cesql:
            "type LIKE 'order.%' AND INT(amount) > 100 AND region IN ('eu', 'us') AND NOT (subject LIKE '%.test')",
        },
      ]),
    ),
    'ns/op',
  );

  const sink = await start([join(ROOT, 'bench', 'sink-server.mjs')], /listening on (\S+)/);
  const matching = `---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: match\nspec:\n  broker: b\n  filter:\n    attributes:\n      type: bench.event\n  subscriber:\n    uri: ${sink.url}\n`;
  let many = '';
  for (let i = 0; i < 9999; i++) {
    many += `---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t${i}\nspec:\n  broker: b\n  filter:\n    attributes:\n      type: other.${i}\n  subscriber:\n    uri: ${sink.url}\n`;
  }
  const rssNow = (pid) => {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  };
  const result = {};
  for (const [label, yaml] of [
    ['1 Trigger', `${BROKER}${matching}`],
    ['10,000 Triggers', `${BROKER}${matching}${many}`],
  ]) {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
    const t0 = Date.now();
    const t = await trellis(dir, yaml);
    const startup = (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 1000));
    const rss = rssNow(t.child.pid);
    const r = await cannon(`${t.url}/default/b`);
    await stop(t);
    rmSync(dir, { recursive: true, force: true });
    result[label] = { rate: r.requests.average, rss };
    row(
      `ingress into a Broker with ${label}`,
      r.requests.average,
      'events/s',
      `(start-up ${startup.toFixed(1)} s, RSS at rest ${rss.toFixed(0)} MiB)`,
    );
  }
  await stop(sink);
  row(
    'throughput ratio 10,000 Triggers / 1 Trigger',
    result['10,000 Triggers'].rate / result['1 Trigger'].rate,
    '',
    '(floor 0.8)',
  );
  row('memory per Trigger', ((result['10,000 Triggers'].rss - result['1 Trigger'].rss) * 1024) / 9999, 'KiB');
}

// 6. control plane: `trellis apply -f` of one file with 10,000 Triggers into a running server, its memory
// holding them (right after, and once the heap has settled), and a restart to Ready with them.
if (!only || only === 'control') {
  console.log('control plane: trellis apply -f with 10,000 Triggers, memory holding them, restart to Ready');
  const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
  let yaml = BROKER;
  for (let i = 0; i < 10_000; i++) {
    yaml += `---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t${i}\nspec:\n  broker: b\n  filter:\n    attributes:\n      type: other.${i}\n  subscriber:\n    uri: http://127.0.0.1:9/\n`;
  }
  const file = join(dir, 'many.yaml');
  writeFileSync(file, yaml);
  const args = [BIN, 'serve', '--port', '0', '--data-dir', join(dir, 'data'), '--log-level', 'warn'];
  let t = await start(args, /trellis serving on (\S+)/);
  const rssNow = (pid) =>
    Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;
  const empty = rssNow(t.child.pid);
  const t0 = Date.now();
  await new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [BIN, 'apply', '-f', file, '--server', t.url], { stdio: 'ignore' });
    c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`apply exited ${code}`))));
  });
  const applyS = (Date.now() - t0) / 1000;
  const after = rssNow(t.child.pid);
  // V8 gives memory back when the process is idle for a while; sample until it stops falling (20 s at most).
  let settled = after;
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    settled = Math.min(settled, rssNow(t.child.pid));
  }
  row('apply 10,000 Triggers (one file)', applyS, 's', '(floor: 10 s)');
  row(
    'RSS: empty / right after / settled',
    `${empty.toFixed(0)} / ${after.toFixed(0)} / ${settled.toFixed(0)}`,
    'MiB',
    '(floor: 150 MiB settled)',
  );
  await stop(t);
  const r0 = Date.now();
  t = await start(args, /trellis serving on (\S+)/);
  for (;;) {
    const ok = await fetch(`${t.url}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  row('restart to Ready with 10,000 Triggers', (Date.now() - r0) / 1000, 's');
  await stop(t);
  rmSync(dir, { recursive: true, force: true });
}

// 7. cluster mode on NATS JetStream (when a NATS server answers at NATS_URL): ingress against raw nats.js
// async publishes of the same payloads with the same window, in the same run; then end to end with one
// process and with two sharing the load.
if (!only || only === 'cluster') {
  const NATS = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
  const natsUp = await new Promise((resolve) => {
    const u = new URL(NATS);
    const sock = connectTcp(Number(u.port || 4222), u.hostname);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
  if (!natsUp) console.log(`cluster: SKIPPED, no NATS at ${NATS} (start one with: nats-server -js)`);
  else {
    const { destroyNatsStore } = await import('../dist/store/nats/nats-store.js');
    const rate = Number(process.env.BENCH_CLUSTER_RATE ?? RATE);
    console.log(
      `cluster: ingress over JetStream (${CONNECTIONS} connections, ${DURATION} s) beside raw nats.js; end to end at ${rate} events/s with one and two processes`,
    );
    const natsArgs = (prefix) => ['--store', 'nats', '--nats-url', NATS, '--nats-prefix', prefix];
    const raw = await new Promise((resolve, reject) => {
      const c = spawn(
        process.execPath,
        [
          join(ROOT, 'bench', 'nats-publisher.mjs'),
          NATS,
          String(DURATION),
          '256',
          String(Buffer.byteLength(body)),
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      c.stdout.on('data', (b) => (out += b));
      c.once('exit', (code) =>
        code === 0
          ? resolve(Number(/rate (\S+)/.exec(out)?.[1]))
          : reject(new Error(`nats-publisher exited ${code}`)),
      );
    });
    row('raw nats.js JetStream publish, 256 in flight', raw, 'msgs/s');
    const prefixes = [];
    const run1 = async (label, yaml) => {
      const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
      const prefix = `bench${process.pid}${prefixes.length}`;
      prefixes.push(prefix);
      const t = await trellis(dir, yaml, natsArgs(prefix));
      const r = await cannon(`${t.url}/default/b`);
      await stop(t);
      rmSync(dir, { recursive: true, force: true });
      row(label, r.requests.average, 'events/s', `p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms`);
      return r.requests.average;
    };
    const ing = await run1('trellis ingress over JetStream, no Trigger (one publish per event)', BROKER);
    row('cluster ingress ratio trellis/raw nats.js', ing / raw, '', '(floor 0.5)');
    const sink = await start([join(ROOT, 'bench', 'sink-server.mjs')], /listening on (\S+)/);
    const withTrigger = `${BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  subscriber:\n    uri: ${sink.url}\n`;
    await run1('trellis ingress over JetStream, one Trigger delivered by the same process', withTrigger);
    for (const n of [1, 2]) {
      const prefix = `bench${process.pid}e${n}`;
      prefixes.push(prefix);
      const dirs = [];
      const procs = [];
      for (let i = 0; i < n; i++) {
        const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
        dirs.push(dir);
        procs.push(await trellis(dir, withTrigger, natsArgs(prefix)));
      }
      await fixedRateAt(
        rate,
        procs.map((p) => p.url),
        sink.url,
        `cluster, ${n} process${n > 1 ? 'es' : ''}`,
        () => Math.max(...procs.map((p) => peakRssMiB(p.child.pid))),
      );
      for (const p of procs) await stop(p);
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    }
    await stop(sink);
    for (const p of prefixes) await destroyNatsStore(NATS, p).catch(() => undefined);
  }
}

// 8. connectors: each one's throughput in and out beside its raw client (bench/connectors.mjs).
if (!only || only === 'connectors') {
  const { benchConnectors } = await import('./connectors.mjs');
  console.log(
    `connectors: ${process.env.BENCH_CONNECTOR_MESSAGES ?? 10000} messages of 1 KiB each way, 64 in flight, beside the raw client`,
  );
  const sink = await start([join(ROOT, 'bench', 'sink-server.mjs')], /listening on (\S+)/);
  const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
  const t = await trellis(dir, BROKER);
  try {
    await benchConnectors({ trellisUrl: t.url, sinkUrl: sink.url, row });
  } finally {
    await stop(t);
    await stop(sink);
    rmSync(dir, { recursive: true, force: true });
  }
}

// 9. streaming: WebSocket and gRPC publish and subscribe beside raw servers; a member's latency beside a Trigger's.
if (!only || only === 'streaming') {
  const { benchStreaming } = await import('./streaming.mjs');
  console.log(
    'streaming: WebSocket and gRPC, publish and subscribe, beside raw ws and @grpc/grpc-js servers',
  );
  await benchStreaming({ BIN, ROOT, row, seconds: Math.min(DURATION, 5), fixedRateAt });
}

if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
