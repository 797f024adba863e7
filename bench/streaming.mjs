// The streaming protocols beside raw servers in the same run (bench/stream-baseline.mjs), each in its own
// process: publish over WebSocket and gRPC (answered once stored) against a raw `ws` / @grpc/grpc-js
// echo; subscribe (a consumer group member draining a backlog with a window, acknowledging each event)
// against a raw server pushing the same events; and the end-to-end latency of a WebSocket member beside
// an HTTP Trigger's at a fixed rate.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Pool } from 'undici';
import WebSocket from 'ws';
import { decodeMessage, encodeMessage, eventToProtoObject } from '../dist/cloudevents/protobuf.js';
import { PUBLISH, SUBSCRIBE_REQUEST, SUBSCRIBE_RESPONSE } from '../dist/protocols/grpc/grpc.js';

const N = Number(process.env.BENCH_STREAM_EVENTS ?? 20_000);
const INFLIGHT = 256;
const WINDOW = 500;
const PAD = 'x'.repeat(1000);

function launch(args, pattern) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const on = (b) => {
      out += b.toString();
      const m = pattern.exec(out);
      if (m) resolve({ child, m });
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
}
async function kill(p) {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill('SIGTERM');
  await exited;
}
const opened = (ws) => new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
const event = (i) => ({
  specversion: '1.0',
  id: `s${i}`,
  source: '/bench',
  type: 'bench.event',
  data: { pad: PAD },
});

/** Publishes N events on one WebSocket, INFLIGHT unanswered at most; events/s. */
async function wsPublish(url) {
  const ws = new WebSocket(url, ['cloudevents.json'], { perMessageDeflate: false });
  await opened(ws);
  let sent = 0;
  let answered = 0;
  const t0 = performance.now();
  await new Promise((resolve) => {
    const pump = () => {
      while (sent < N && sent - answered < INFLIGHT) ws.send(JSON.stringify(event(sent++)));
    };
    ws.on('message', (m) => {
      const a = JSON.parse(String(m));
      if (!String(a.type).endsWith('published')) return;
      if (a.data.status !== 202) throw new Error(`publish answered ${JSON.stringify(a.data)}`);
      if (++answered === N) resolve();
      else pump();
    });
    pump();
  });
  const rate = N / ((performance.now() - t0) / 1000);
  ws.close();
  return rate;
}

/** Drains N events as a member with a window, acknowledging each; events/s. */
async function wsSubscribe(url) {
  const ws = new WebSocket(url, ['cloudevents.json'], { perMessageDeflate: false });
  let got = 0;
  let t0 = 0;
  const done = new Promise((resolve) => {
    ws.on('message', (m) => {
      const e = JSON.parse(String(m));
      if (e.trellisdelivery === undefined) return;
      if (got === 0) t0 = performance.now();
      ws.send(
        JSON.stringify({
          specversion: '1.0',
          id: `a${got}`,
          source: '/b',
          type: 'dev.trellis.control.ack',
          data: { ids: [e.trellisdelivery] },
        }),
      );
      if (++got === N) resolve();
    });
  });
  await opened(ws);
  await done;
  const rate = N / ((performance.now() - t0) / 1000);
  ws.close();
  return rate;
}

const identity = (b) => b;
function grpcClient(port) {
  const Ctor = grpc.makeGenericClientConstructor(
    {
      Publish: {
        path: '/trellis.v1.EventMesh/Publish',
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
      Subscribe: {
        path: '/trellis.v1.EventMesh/Subscribe',
        requestStream: true,
        responseStream: true,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    },
    'EventMesh',
  );
  return new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

/** N unary Publish calls, INFLIGHT at once, each encoding its event; calls/s. */
async function grpcPublish(port) {
  const c = grpcClient(port);
  let sent = 0;
  let answered = 0;
  const t0 = performance.now();
  await new Promise((resolve, reject) => {
    const pump = () => {
      while (sent < N && sent - answered < INFLIGHT) {
        const i = sent++;
        const req = encodeMessage(PUBLISH, {
          target: 'default/b',
          event: eventToProtoObject({
            attrs: {
              specversion: '1.0',
              id: `g${i}`,
              source: '/bench',
              type: 'bench.event',
              datacontenttype: 'application/json',
            },
            data: Buffer.from(JSON.stringify({ pad: PAD })),
          }),
        });
        c.Publish(req, (err) => {
          if (err) return reject(err);
          if (++answered === N) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  c.close();
  return N / ((performance.now() - t0) / 1000);
}

/** Drains N deliveries on a Subscribe stream with a window, decoding each and acknowledging it; events/s. */
async function grpcSubscribe(port, raw) {
  const c = grpcClient(port);
  const call = c.Subscribe();
  // Cancelled by this side once done: that status is expected.
  call.on('error', (err) => {
    if (err.code !== grpc.status.CANCELLED) throw err;
  });
  let got = 0;
  let t0 = 0;
  const done = new Promise((resolve) => {
    call.on('data', (b) => {
      if (raw) {
        if (got === 0) t0 = performance.now();
        const ack = Buffer.alloc(4);
        ack.writeUInt32BE(1);
        call.write(ack);
      } else {
        const m = decodeMessage(SUBSCRIBE_RESPONSE, b);
        if (m.delivery === undefined) return;
        if (got === 0) t0 = performance.now();
        call.write(encodeMessage(SUBSCRIBE_REQUEST, { ack: { ids: [m.delivery.id] } }));
      }
      if (++got === N) resolve();
    });
  });
  if (raw) {
    const first = Buffer.alloc(8);
    first.writeUInt32BE(N, 0);
    first.writeUInt32BE(WINDOW, 4);
    call.write(first);
  } else
    call.write(
      encodeMessage(SUBSCRIBE_REQUEST, {
        subscription: { target: 'default/b', group: 'bench-grpc', window: WINDOW },
      }),
    );
  await done;
  const rate = N / ((performance.now() - t0) / 1000);
  call.cancel();
  c.close();
  return rate;
}

/** Stores N events in the Broker, in batches of 100 over HTTP. */
async function fill(url) {
  const pool = new Pool(url, { connections: 16 });
  for (let i = 0; i < N; i += 1000)
    await Promise.all(
      Array.from({ length: 10 }, (_, k) =>
        pool
          .request({
            path: '/default/b',
            method: 'POST',
            headers: { 'content-type': 'application/cloudevents-batch+json' },
            body: JSON.stringify(Array.from({ length: 100 }, (_, j) => event(i + k * 100 + j))),
          })
          .then(async (r) => {
            await r.body.dump();
            if (r.statusCode !== 202) throw new Error(`fill answered ${r.statusCode}`);
          }),
      ),
    );
  await pool.destroy();
}

/** Sends at `rate` events/s for `seconds` with the send time in `ce-benchsent`; resolves when sent. */
async function generate(url, rate, seconds) {
  const pool = new Pool(url, { connections: 64 });
  const total = rate * seconds;
  let n = 0;
  const inflight = new Set();
  const t0 = performance.now();
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.min(total, Math.round(((performance.now() - t0) / 1000) * rate));
      while (n < due) {
        const p = pool
          .request({
            path: '/default/b',
            method: 'POST',
            headers: {
              'ce-specversion': '1.0',
              'ce-id': `l${n++}`,
              'ce-source': '/bench',
              'ce-type': 'bench.event',
              'content-type': 'application/json',
              'ce-benchsent': String(performance.timeOrigin + performance.now()),
            },
            body: JSON.stringify({ pad: PAD }),
          })
          .then((r) => r.body.dump())
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
  await pool.destroy();
  return total;
}

const pct = (xs, p) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

export async function benchStreaming({ BIN, ROOT, row, seconds, fixedRateAt }) {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-stream-'));
  const file = join(dir, 'resources.yaml');
  writeFileSync(file, 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n');
  const serveArgs = [
    BIN,
    'serve',
    '--port',
    '0',
    '--grpc-port',
    '0',
    '--data-dir',
    join(dir, 'data'),
    '-f',
    file,
    '--log-level',
    'warn',
  ];
  const base = await launch([join(ROOT, 'bench', 'stream-baseline.mjs')], /listening on (\S+) grpc (\d+)/);
  const baseWs = base.m[1];
  const baseGrpc = Number(base.m[2]);
  const t = await launch(serveArgs, /trellis serving on (\S+)\n(?:.*\n)*?trellis serving gRPC on port (\d+)/);
  const url = t.m[1];
  const ws = url.replace('http', 'ws');
  const grpcPort = Number(t.m[2]);
  try {
    // Publish.
    const rawWs = await wsPublish(`${baseWs}/echo`);
    const trWs = await wsPublish(`${ws}/default/b`);
    row(
      'websocket publish: raw ws echo',
      rawWs,
      'events/s',
      `(${N} events, ${INFLIGHT} in flight, one connection)`,
    );
    row('websocket publish: trellis, answered once stored', trWs, 'events/s');
    row('websocket publish ratio trellis/raw', trWs / rawWs, '');
    const rawG = await grpcPublish(baseGrpc);
    const trG = await grpcPublish(grpcPort);
    row('gRPC publish: raw @grpc/grpc-js', rawG, 'calls/s', `(${N} unary calls, ${INFLIGHT} in flight)`);
    row('gRPC publish: trellis, answered once stored', trG, 'events/s');
    row('gRPC publish ratio trellis/raw', trG / rawG, '');
    // Subscribe: each group exists (a member joined and left), then N events wait for it.
    for (const g of ['bench-ws', 'bench-grpc']) {
      const join = new WebSocket(`${ws}/default/b?group=${g}`, ['cloudevents.json']);
      await new Promise((r) => join.on('message', () => r()));
      join.close();
    }
    await fill(url);
    const rawSub = await wsSubscribe(`${baseWs}/push?n=${N}&window=${WINDOW}`);
    const trSub = await wsSubscribe(`${ws}/default/b?group=bench-ws&window=${WINDOW}`);
    row(
      'websocket subscribe: raw ws push',
      rawSub,
      'events/s',
      `(${N} events, window ${WINDOW}, an ack each)`,
    );
    row('websocket subscribe: trellis group member', trSub, 'events/s');
    row('websocket subscribe ratio trellis/raw', trSub / rawSub, '');
    const rawGs = await grpcSubscribe(baseGrpc, true);
    const trGs = await grpcSubscribe(grpcPort, false);
    row('gRPC subscribe: raw @grpc/grpc-js push', rawGs, 'events/s', `(${N} events, window ${WINDOW})`);
    row('gRPC subscribe: trellis group member', trGs, 'events/s');
    row('gRPC subscribe ratio trellis/raw', trGs / rawGs, '');
  } finally {
    await kill(t);
    await kill(base);
    rmSync(dir, { recursive: true, force: true });
  }

  // End-to-end latency at a fixed rate: an HTTP Trigger's subscriber (run.mjs's own fixed-rate run,
  // with its warm-up), then a WebSocket member of a group (a warm-up second at the rate first).
  const RATE = Number(process.env.BENCH_STREAM_RATE ?? 2000);
  const sink = await launch([join(ROOT, 'bench', 'sink-server.mjs')], /listening on (\S+)/);
  const dir2 = mkdtempSync(join(tmpdir(), 'trellis-bench-stream-'));
  const file2 = join(dir2, 'resources.yaml');
  writeFileSync(
    file2,
    `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  subscriber: {uri: '${sink.m[1]}'}\n`,
  );
  let t2 = await launch(
    [BIN, 'serve', '--port', '0', '--data-dir', join(dir2, 'data'), '-f', file2, '--log-level', 'warn'],
    /trellis serving on (\S+)/,
  );
  try {
    await fixedRateAt(RATE, t2.m[1], sink.m[1], `end to end at ${RATE}/s, HTTP Trigger`, undefined);
    await kill(t2);
    // A second server, with the Broker only: the member is its one subscriber.
    const file3 = join(dir2, 'broker.yaml');
    writeFileSync(file3, 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n');
    t2 = await launch(
      [BIN, 'serve', '--port', '0', '--data-dir', join(dir2, 'data2'), '-f', file3, '--log-level', 'warn'],
      /trellis serving on (\S+)/,
    );
    const url2 = t2.m[1];
    const member = new WebSocket(`${url2.replace('http', 'ws')}/default/b?group=latency&window=1000`, [
      'cloudevents.json',
    ]);
    const lat = [];
    member.on('message', (m) => {
      const e = JSON.parse(String(m));
      if (e.trellisdelivery === undefined) return;
      lat.push(performance.timeOrigin + performance.now() - Number(e.benchsent));
      member.send(
        JSON.stringify({
          specversion: '1.0',
          id: `a${lat.length}`,
          source: '/b',
          type: 'dev.trellis.control.ack',
          data: { ids: [e.trellisdelivery] },
        }),
      );
    });
    await new Promise((r) => member.once('message', () => r()));
    const warm = await generate(url2, RATE, 1);
    while (lat.length < warm) await new Promise((r) => setTimeout(r, 50));
    lat.length = 0;
    const total = await generate(url2, RATE, seconds);
    const deadline = Date.now() + 30_000;
    while (lat.length < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    member.close();
    row(
      `end to end at ${RATE}/s, WebSocket group member: latency p50 / p99`,
      `${pct(lat, 50)?.toFixed(1)} / ${pct(lat, 99)?.toFixed(1)}`,
      'ms',
      `(${lat.length} of ${total} delivered)`,
    );
  } finally {
    await kill(t2);
    await kill(sink);
    rmSync(dir2, { recursive: true, force: true });
  }
}
