// `npm run bench`: Trellis against baselines measured in the same run, on this machine.
//  1. codec: decoding a binary-mode message, ours vs the cloudevents SDK (ns/op).
//  2. ingress: binary-mode POSTs of a 1 KiB event with many connections, Trellis vs a raw node:http server.
//  3. end to end: ingress -> one Trigger -> a local HTTP subscriber, at a fixed rate: delivered/s, p50, p99.
// Every server runs in its own process; the load generator and the subscriber run here.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
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
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
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
async function cannon(url) {
  const r = await autocannon({
    url,
    method: 'POST',
    connections: CONNECTIONS,
    duration: DURATION,
    headers: ceHeaders('bench-1'),
    body,
  });
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${url}: ${r.non2xx} non-2xx, ${r.errors} errors`);
  return r;
}
async function trellis(dir, yaml) {
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

// 2. ingress
if (!only || only === 'ingress') {
  console.log(`ingress: ${CONNECTIONS} connections, ${DURATION} s, binary mode, 1 KiB events`);
  const raw = await start([join(ROOT, 'bench', 'raw-server.mjs')], /listening on (\S+)/);
  const rawResult = await cannon(`${raw.url}/default/b`);
  await stop(raw);
  const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
  const t = await trellis(dir, BROKER);
  const tr = await cannon(`${t.url}/default/b`);
  const rss = peakRssMiB(t.child.pid);
  await stop(t);
  rmSync(dir, { recursive: true, force: true });
  row(
    'raw node:http',
    rawResult.requests.average,
    'req/s',
    `p50 ${rawResult.latency.p50} ms, p99 ${rawResult.latency.p99} ms`,
  );
  row(
    'trellis ingress (durable, synchronous=FULL)',
    tr.requests.average,
    'events/s',
    `p50 ${tr.latency.p50} ms, p99 ${tr.latency.p99} ms`,
  );
  row(
    'ingress ratio trellis/raw',
    tr.requests.average / rawResult.requests.average,
    '',
    '(floor 0.4, goal 0.6)',
  );
  row('trellis peak RSS', rss, 'MiB');
}

// 3. end to end at a fixed rate
if (!only || only === 'e2e') {
  console.log(`end to end: ${RATE} events/s for ${DURATION} s -> one Trigger -> local subscriber`);
  const sent = new Map();
  const latencies = [];
  let received = 0;
  const sub = createServer((req, res) => {
    const id = req.headers['ce-id'];
    req.resume();
    req.on('end', () => {
      const t0 = sent.get(id);
      if (t0 !== undefined) {
        latencies.push(performance.now() - t0);
        sent.delete(id);
      }
      received++;
      res.writeHead(202).end();
    });
  });
  await new Promise((r) => sub.listen(0, '127.0.0.1', r));
  const subUrl = `http://127.0.0.1:${sub.address().port}/`;
  const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
  const t = await trellis(
    dir,
    `${BROKER}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  subscriber:\n    uri: ${subUrl}\n`,
  );
  const pool = new Pool(t.url, { connections: 256 }); // enough that the generator, not the pool, sets the rate
  let n = 0;
  let accepted = 0;
  let refused = 0;
  const inflight = new Set();
  const tick = 10;
  const perTick = (RATE * tick) / 1000;
  const startAt = performance.now();
  const total = RATE * DURATION;
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.min(total, Math.round(((performance.now() - startAt) / 1000) * RATE));
      for (let k = 0; n < due && k < perTick * 4; k++) {
        const id = `e2e-${n++}`;
        sent.set(id, performance.now());
        const p = pool
          .request({ path: '/default/b', method: 'POST', headers: ceHeaders(id), body })
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
    }, tick);
  });
  await Promise.all(inflight);
  const sendSeconds = (performance.now() - startAt) / 1000;
  const deadline = Date.now() + 30_000;
  while (received < accepted && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const allSeconds = (performance.now() - startAt) / 1000;
  const rss = peakRssMiB(t.child.pid);
  await pool.destroy();
  await stop(t);
  sub.close();
  rmSync(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  const pct = (p) =>
    latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? Number.NaN;
  row('offered', total / sendSeconds, 'events/s');
  row('accepted', accepted, 'events', refused ? `(${refused} refused)` : '');
  row('delivered', received, 'events', `in ${allSeconds.toFixed(1)} s`);
  row('sustained delivery rate', received / allSeconds, 'events/s', '(floor 5,000)');
  row('latency p50 (POST sent -> subscriber got it)', pct(50), 'ms');
  row('latency p99', pct(99), 'ms');
  row('trellis peak RSS', rss, 'MiB');
}

if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
