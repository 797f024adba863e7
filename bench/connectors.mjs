// `BENCH_ONLY=connectors`: each connector's throughput in both directions beside its raw client library
// moving the same messages with the same guarantee, in the same run.
//  out: N events POSTed (64 at a time) to the connector sink, answered once the system confirmed;
//       raw: the client publishes the same N payloads with the same confirmation, 64 in flight.
//  in:  N messages waiting in the system; Trellis's source takes them into a stream and delivers them to
//       a local subscriber (time until the last arrives); raw: the client consumes and acknowledges them.
import { randomBytes } from 'node:crypto';
import { connect as tcp } from 'node:net';
import { Pool } from 'undici';

const N = Number(process.env.BENCH_CONNECTOR_MESSAGES ?? 10000);
const WINDOW = 64;
const payload = Buffer.from(JSON.stringify({ pad: 'x'.repeat(1000) }));

const reachable = (host, port) =>
  new Promise((resolve) => {
    const s = tcp(port, host);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

/** Runs `fn(i)` for i < n with `window` at once; resolves with the rate per second. */
async function windowed(n, window, fn) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (next < n) await fn(next++);
    }),
  );
  return n / ((performance.now() - t0) / 1000);
}

async function apply(url, doc) {
  const r = await fetch(`${url}/apis/apply`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify([doc]),
  });
  if (r.status >= 300) throw new Error(`apply: ${r.status} ${await r.text()}`);
}

async function waitReady(url, path) {
  for (let i = 0; i < 200; i++) {
    const o = await (await fetch(`${url}${path}`)).json();
    if (o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True') return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${path} did not turn Ready`);
}

/** POSTs N events to a sink address, 64 at a time. */
async function postAll(url, path) {
  const pool = new Pool(url, { connections: WINDOW });
  const rate = await windowed(N, WINDOW, async (i) => {
    const r = await pool.request({
      path,
      method: 'POST',
      headers: {
        'ce-specversion': '1.0',
        'ce-id': `c${i}`,
        'ce-source': '/bench',
        'ce-type': 'bench',
        'content-type': 'application/json',
      },
      body: payload,
    });
    await r.body.dump();
    if (r.statusCode !== 202) throw new Error(`${path}: ${r.statusCode}`);
  });
  await pool.destroy();
  return rate;
}

/** Waits until the sink has `n` events since `from`; rate over `t0`. */
async function inRate(sinkUrl, n, t0) {
  for (;;) {
    const s = await (await fetch(`${sinkUrl}stats`)).json();
    if (s.received >= n) return n / ((performance.now() - t0) / 1000);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function benchConnectors({ trellisUrl, sinkUrl, row }) {
  const tag = randomBytes(3).toString('hex');
  const results = [];
  const source = (kind, name, spec) => ({
    apiVersion: 'sources.trellis.dev/v1alpha1',
    kind,
    metadata: { name, namespace: 'default' },
    spec: { ...spec, sink: { uri: sinkUrl } },
  });
  const sink = (kind, name, spec) => ({
    apiVersion: 'sinks.trellis.dev/v1alpha1',
    kind,
    metadata: { name, namespace: 'default' },
    spec,
  });
  const measureIn = async (_label, doc, path, n = N) => {
    await fetch(`${sinkUrl}reset`, { method: 'POST' });
    const t0 = performance.now();
    await apply(trellisUrl, doc);
    const r = await inRate(sinkUrl, n, t0);
    await fetch(`${trellisUrl}${path}`, { method: 'DELETE' });
    return r;
  };
  const report = (name, dir, trellis, raw, n = N) => {
    row(
      `${name} ${dir}: trellis / raw client${n === N ? '' : ` (${n} messages)`}`,
      `${Math.round(trellis)} / ${Math.round(raw)}`,
      'msgs/s',
      `ratio ${(trellis / raw).toFixed(2)}`,
    );
    results.push({ name, dir, trellis, raw });
  };

  // NATS JetStream
  if (await reachable('127.0.0.1', 4222)) {
    const { connect } = await import('@nats-io/transport-node');
    const { jetstream, jetstreamManager, AckPolicy } = await import('@nats-io/jetstream');
    const nc = await connect({ servers: 'nats://127.0.0.1:4222' });
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const S = `BENCHC${tag}`;
    await jsm.streams.add({ name: S, subjects: [`benchc${tag}.>`] });
    await apply(
      trellisUrl,
      sink('NatsSink', 'bn', {
        servers: 'nats://127.0.0.1:4222',
        subject: `benchc${tag}.out`,
        jetstream: true,
      }),
    );
    await waitReady(trellisUrl, '/apis/sinks.trellis.dev/v1alpha1/namespaces/default/natssinks/bn');
    const outT = await postAll(trellisUrl, '/natssinks/default/bn');
    const outR = await windowed(N, WINDOW, () => js.publish(`benchc${tag}.raw`, payload));
    report('NATS JetStream', 'out', outT, outR);
    for (let i = 0; i < N; i++) await js.publish(`benchc${tag}.in`, payload);
    await jsm.consumers.add(S, {
      durable_name: 'raw',
      ack_policy: AckPolicy.Explicit,
      filter_subject: `benchc${tag}.in`,
    });
    const c = await js.consumers.get(S, 'raw');
    const t0 = performance.now();
    let got = 0;
    for await (const m of await c.consume({ max_messages: WINDOW })) {
      m.ack();
      if (++got >= N) break;
    }
    const inR = N / ((performance.now() - t0) / 1000);
    const inT = await measureIn(
      'NATS',
      source('NatsSource', 'bn-in', {
        servers: 'nats://127.0.0.1:4222',
        subject: `benchc${tag}.in`,
        jetstream: { stream: S },
      }),
      '/apis/sources.trellis.dev/v1alpha1/namespaces/default/natssources/bn-in',
    );
    report('NATS JetStream', 'in', inT, inR);
    await jsm.streams.delete(S);
    await nc.close();
  } else row('NATS connector', 'SKIPPED', '', 'no NATS on 4222');

  // Redis Streams
  if (await reachable('127.0.0.1', 6379)) {
    const { Redis } = await import('ioredis');
    const redis = new Redis('redis://127.0.0.1:6379');
    const key = `benchc-${tag}`;
    await apply(
      trellisUrl,
      sink('RedisStreamSink', 'br', { address: 'redis://127.0.0.1:6379', stream: `${key}-out` }),
    );
    await waitReady(trellisUrl, '/apis/sinks.trellis.dev/v1alpha1/namespaces/default/redisstreamsinks/br');
    const outT = await postAll(trellisUrl, '/redisstreamsinks/default/br');
    const outR = await windowed(N, WINDOW, () => redis.xadd(`${key}-raw`, '*', 'data', payload));
    report('Redis Streams', 'out', outT, outR);
    const pipe = redis.pipeline();
    for (let i = 0; i < N; i++) pipe.xadd(`${key}-in`, '*', 'data', payload);
    await pipe.exec();
    await redis.xgroup('CREATE', `${key}-in`, 'raw', '0');
    const t0 = performance.now();
    let got = 0;
    while (got < N) {
      const res = await redis.xreadgroup('GROUP', 'raw', 'c', 'COUNT', WINDOW, 'STREAMS', `${key}-in`, '>');
      const entries = res?.[0]?.[1] ?? [];
      if (entries.length > 0) await redis.xack(`${key}-in`, 'raw', ...entries.map(([id]) => id));
      got += entries.length;
    }
    const inR = N / ((performance.now() - t0) / 1000);
    const inT = await measureIn(
      'Redis',
      source('RedisStreamSource', 'br-in', {
        address: 'redis://127.0.0.1:6379',
        stream: `${key}-in`,
        startId: '0',
      }),
      '/apis/sources.trellis.dev/v1alpha1/namespaces/default/redisstreamsources/br-in',
    );
    report('Redis Streams', 'in', inT, inR);
    await redis.del(`${key}-out`, `${key}-raw`, `${key}-in`);
    redis.disconnect();
  } else row('Redis connector', 'SKIPPED', '', 'no Redis on 6379');

  // MQTT 5, QoS 1
  if (await reachable('127.0.0.1', 1883)) {
    const mqtt = (await import('mqtt')).default;
    await apply(
      trellisUrl,
      sink('MqttSink', 'bm', { address: 'mqtt://127.0.0.1:1883', topic: `benchc/${tag}/out` }),
    );
    await waitReady(trellisUrl, '/apis/sinks.trellis.dev/v1alpha1/namespaces/default/mqttsinks/bm');
    const outT = await postAll(trellisUrl, '/mqttsinks/default/bm');
    const pub = await mqtt.connectAsync('mqtt://127.0.0.1:1883', { protocolVersion: 5 });
    const outR = await windowed(N, WINDOW, () => pub.publishAsync(`benchc/${tag}/raw`, payload, { qos: 1 }));
    report('MQTT 5 (QoS 1)', 'out', outT, outR);
    // In: a persistent session of the raw client and of the source each get the messages queued.
    // Mosquitto queues at most 1,000 messages for a session that is away (max_queued_messages).
    const NQ = Math.min(N, 1000);
    const rawSub = await mqtt.connectAsync('mqtt://127.0.0.1:1883', {
      protocolVersion: 5,
      clientId: `rawsub${tag}`,
      clean: false,
      properties: { sessionExpiryInterval: 600 },
    });
    await rawSub.subscribeAsync(`benchc/${tag}/in`, { qos: 1 });
    await rawSub.endAsync();
    await apply(
      trellisUrl,
      source('MqttSource', 'bm-in', {
        address: 'mqtt://127.0.0.1:1883',
        topic: `benchc/${tag}/in`,
        clientId: `trellisin${tag}`,
      }),
    );
    await waitReady(trellisUrl, '/apis/sources.trellis.dev/v1alpha1/namespaces/default/mqttsources/bm-in');
    await fetch(`${trellisUrl}/apis/sources.trellis.dev/v1alpha1/namespaces/default/mqttsources/bm-in`, {
      method: 'DELETE',
    });
    await new Promise((r) => setTimeout(r, 500));
    await windowed(NQ, WINDOW, () => pub.publishAsync(`benchc/${tag}/in`, payload, { qos: 1 }));
    let got = 0;
    const t0 = performance.now();
    await new Promise((resolve) => {
      // The handler is in place before the session's queued messages arrive.
      const c = mqtt.connect('mqtt://127.0.0.1:1883', {
        protocolVersion: 5,
        clientId: `rawsub${tag}`,
        clean: false,
      });
      c.on('message', () => {
        if (++got === NQ) resolve(c.endAsync());
      });
    });
    const inR = NQ / ((performance.now() - t0) / 1000);
    const inT = await measureIn(
      'MQTT',
      source('MqttSource', 'bm-in', {
        address: 'mqtt://127.0.0.1:1883',
        topic: `benchc/${tag}/in`,
        clientId: `trellisin${tag}`,
      }),
      '/apis/sources.trellis.dev/v1alpha1/namespaces/default/mqttsources/bm-in',
      NQ,
    );
    report('MQTT 5 (QoS 1)', 'in', inT, inR, NQ);
    await pub.endAsync();
  } else row('MQTT connector', 'SKIPPED', '', 'no broker on 1883');

  // AMQP 0-9-1 (RabbitMQ)
  if (await reachable('127.0.0.1', 5672)) {
    const amqp = (await import('amqplib')).default;
    const conn = await amqp.connect('amqp://127.0.0.1:5672');
    const ch = await conn.createConfirmChannel();
    const q = (s) => `benchc-${tag}-${s}`;
    for (const s of ['out', 'raw', 'in', 'rawin']) await ch.assertQueue(q(s), { durable: false });
    await apply(
      trellisUrl,
      sink('AmqpSink', 'ba', { address: 'amqp://127.0.0.1:5672', routingKey: q('out') }),
    );
    await waitReady(trellisUrl, '/apis/sinks.trellis.dev/v1alpha1/namespaces/default/amqpsinks/ba');
    const outT = await postAll(trellisUrl, '/amqpsinks/default/ba');
    const outR = await windowed(
      N,
      WINDOW,
      () => new Promise((res, rej) => ch.sendToQueue(q('raw'), payload, {}, (e) => (e ? rej(e) : res()))),
    );
    report('AMQP 0-9-1', 'out', outT, outR);
    for (let i = 0; i < N; i++) {
      ch.sendToQueue(q('rawin'), payload);
      ch.sendToQueue(q('in'), payload);
    }
    await ch.waitForConfirms();
    const c2 = await conn.createChannel();
    await c2.prefetch(WINDOW);
    let got = 0;
    const t0 = performance.now();
    await new Promise((resolve) => {
      void c2.consume(q('rawin'), (m) => {
        if (m === null) return;
        c2.ack(m);
        if (++got === N) resolve();
      });
    });
    const inR = N / ((performance.now() - t0) / 1000);
    const inT = await measureIn(
      'AMQP',
      source('AmqpSource', 'ba-in', { address: 'amqp://127.0.0.1:5672', queue: q('in') }),
      '/apis/sources.trellis.dev/v1alpha1/namespaces/default/amqpsources/ba-in',
    );
    report('AMQP 0-9-1', 'in', inT, inR);
    await c2.close().catch(() => undefined);
    for (const s of ['out', 'raw', 'in', 'rawin']) await ch.deleteQueue(q(s)).catch(() => undefined);
    await conn.close();
  } else row('AMQP connector', 'SKIPPED', '', 'no broker on 5672');
  return results;
}
