/**
 * Cluster mode: two `trellis serve --store nats` processes on the NATS server of this machine, one mesh.
 * Each test run uses its own stream prefix and removes it afterwards.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destroyNatsStore } from '../src/store/nats/nats-store.js';
import { NATS_URL, natsUp } from './helpers/nats.js';
import { run, type Served, serve } from './helpers/process.js';
import { serverUp } from './helpers/reachable.js';
import { ceHeaders } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const NATS = NATS_URL;
const up = await natsUp();
const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const MQTT_URL = process.env['MQTT_URL'] ?? 'mqtt://127.0.0.1:1883';
const redisUp = up && (await serverUp(REDIS_URL, 6379, 'Redis'));
const mqttUp = up && (await serverUp(MQTT_URL, 1883, 'Mosquitto'));
const AMQP_URL = process.env['AMQP_URL'] ?? 'amqp://127.0.0.1:5672';
const amqpUp = up && (await serverUp(AMQP_URL, 5672, 'RabbitMQ'));

describe.runIf(up)('two processes on one NATS', () => {
  const prefix = `c${randomBytes(5).toString('hex')}`;
  let dir: string;
  let a: Served;
  let b: Served;
  const args = () => [
    '--store',
    'nats',
    '--nats-url',
    NATS,
    '--nats-prefix',
    prefix,
    '--data-dir',
    join(dir, 'unused'),
    '--allow-commands',
  ];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trellis-cluster-'));
    a = await serve(args());
    b = await serve(args());
  });
  afterAll(async () => {
    for (const s of [a, b]) {
      s?.child.kill('SIGTERM');
      await s?.exited();
    }
    await destroyNatsStore(NATS, prefix);
    rmSync(dir, { recursive: true, force: true });
  });

  const ready = (url: string, path: string) =>
    expect
      .poll(
        async () => {
          const r = await fetch(`${url}${path}`);
          if (r.status !== 200) return 'missing';
          const o = (await r.json()) as { status?: { conditions?: { type: string; status: string }[] } };
          return o.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? 'unknown';
        },
        { timeout: 20_000 },
      )
      .toBe('True');

  it('config applied on one process is served by both; every event reaches the subscriber once', async () => {
    await using sink = await startSink();
    const yaml = `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: shop}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: all}\nspec:\n  broker: shop\n  subscriber: {uri: '${sink.url}'}\n`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: a.url } })).code).toBe(0);
    await ready(b.url, '/apis/eventing.knative.dev/v1/namespaces/default/triggers/all');
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) {
      const target = i % 2 === 0 ? a : b;
      const r = await fetch(`${target.url}/default/shop`, {
        method: 'POST',
        headers: ceHeaders(`c${i}`),
        body: '{}',
      });
      expect(r.status).toBe(202);
      ids.push(`c${i}`);
    }
    await expect
      .poll(() => new Set(sink.received.map((r) => String(r.event.attrs['id']))).size, { timeout: 30_000 })
      .toBe(100);
    const dupes = sink.received.length - 100;
    console.log(`cluster: 100 events through two processes, ${dupes} duplicates`);
    expect(dupes).toBe(0);
  });

  it('retries follow the DeliverySpec exactly across processes: retry 2 means 3 attempts and one dead letter', async () => {
    await using failing = await startSink((_r, res) => res.writeHead(500).end());
    await using dls = await startSink();
    const yaml = `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: pay}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: flaky}\nspec:\n  broker: pay\n  subscriber: {uri: '${failing.url}'}\n  delivery:\n    retry: 2\n    backoffDelay: PT0.05S\n    deadLetterSink: {uri: '${dls.url}'}\n`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: b.url } })).code).toBe(0);
    await ready(a.url, '/apis/eventing.knative.dev/v1/namespaces/default/triggers/flaky');
    await ready(b.url, '/apis/eventing.knative.dev/v1/namespaces/default/triggers/flaky');
    for (let i = 0; i < 5; i++)
      expect(
        (await fetch(`${a.url}/default/pay`, { method: 'POST', headers: ceHeaders(`f${i}`), body: '{}' }))
          .status,
      ).toBe(202);
    await dls.waitFor(5, 30_000);
    // Give a wrongly multiplied redelivery time to show itself: wait until every delivery is settled.
    await expect.poll(async () => (await fetch(`${a.url}/readyz`)).status).toBe(200);
    expect(failing.received).toHaveLength(15);
    expect(dls.received).toHaveLength(5);
  });
  it('a Broker keeps its history as its retention annotations say, in a JetStream stream of its own', async () => {
    const yaml = `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: keep\n  annotations: {trellis.dev/retention: PT2S, trellis.dev/retention-bytes: 1Mi}\n`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: a.url } })).code).toBe(0);
    const nc = await connect({ servers: NATS });
    try {
      const jsm = await jetstreamManager(nc);
      const name = `${prefix}_EV_${Buffer.from('default/keep').toString('base64url')}`;
      await expect
        .poll(async () => {
          const c = (await jsm.streams.info(name).catch(() => undefined))?.config;
          return c === undefined ? 'missing' : `${c.max_age / 1e6}ms ${c.max_bytes}B`;
        })
        .toBe('2000ms 1048576B');
    } finally {
      await nc.close();
    }
    const r = await fetch(`${b.url}/default/keep`, {
      method: 'POST',
      headers: ceHeaders('kept'),
      body: '{}',
    });
    expect(r.status).toBe(202);
    const found = () =>
      fetch(`${a.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/keep/events/kept`).then(
        (x) => x.status,
      );
    expect(await found()).toBe(200);
    // JetStream removes it once it is older than two seconds.
    await expect.poll(found, { timeout: 15_000 }).toBe(404);
  });

  it('refuses retention annotations that are not a duration or a size, naming the annotation', async () => {
    const bad = async (ann: string) => {
      const yaml = `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: badkeep\n  annotations: {${ann}}\n`;
      return run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: a.url } });
    };
    const age = await bad('trellis.dev/retention: forever');
    expect(age.code).not.toBe(0);
    expect(age.stderr).toContain('metadata.annotations.trellis.dev/retention');
    const size = await bad("trellis.dev/retention-bytes: '10GB'");
    expect(size.code).not.toBe(0);
    expect(size.stderr).toContain('metadata.annotations.trellis.dev/retention-bytes');
  });

  it('more replicas than the NATS system has: the process refuses to start and says why', async () => {
    const r = await run([
      'serve',
      '--port',
      '0',
      ...args(),
      '--nats-prefix',
      `${prefix}r`,
      '--nats-replicas',
      '3',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/cannot use NATS at nats:\/\/[^ ]+: .*replicas/i);
  });
  it('every kind works across the processes: Channel, Subscriptions, Sequence, Parallel, EventTransform, EventTypes', async () => {
    await using out = await startSink();
    // Each step answers with the event, its type extended by the step's path: the chain shows in the type.
    await using steps = await startSink((r, res) => {
      const e = r.event.attrs;
      res
        .writeHead(200, {
          'ce-specversion': '1.0',
          'ce-id': String(e['id']),
          'ce-source': String(e['source']),
          'ce-type': `${String(e['type'])}${r.path.replace('/', '.')}`,
          'content-type': 'application/json',
        })
        .end('{}');
    });
    const yaml = `
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: kch}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: kch-a}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: kch}
  subscriber: {uri: '${out.url}sub-a'}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: kch-b}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: kch}
  subscriber: {uri: '${out.url}sub-b'}
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: kseq}
spec:
  steps:
    - uri: '${steps.url}one'
    - uri: '${steps.url}two'
  reply: {uri: '${out.url}seq'}
---
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: kpar}
spec:
  branches:
    - subscriber: {uri: '${steps.url}left'}
      reply: {uri: '${out.url}par'}
    - subscriber: {uri: '${steps.url}right'}
      reply: {uri: '${out.url}par'}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventTransform
metadata: {name: ktr}
spec:
  sink: {uri: '${out.url}tr'}
  jsonata:
    expression: '{"specversion": "1.0", "id": id, "source": source, "type": "transformed", "data": {"was": type}}'
`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: a.url } })).code).toBe(0);
    for (const path of [
      '/apis/messaging.knative.dev/v1/namespaces/default/inmemorychannels/kch',
      '/apis/messaging.knative.dev/v1/namespaces/default/subscriptions/kch-a',
      '/apis/messaging.knative.dev/v1/namespaces/default/subscriptions/kch-b',
      '/apis/flows.knative.dev/v1/namespaces/default/sequences/kseq',
      '/apis/flows.knative.dev/v1/namespaces/default/parallels/kpar',
      '/apis/eventing.knative.dev/v1alpha1/namespaces/default/eventtransforms/ktr',
    ])
      await ready(b.url, path);
    // Sent to the process that did not take the resources, delivered by whichever holds the work.
    const send = async (path: string, id: string) => {
      const r = await fetch(`${b.url}${path}`, { method: 'POST', headers: ceHeaders(id), body: '{}' });
      expect(r.status, path).toBe(202);
    };
    await send('/inmemorychannels/default/kch', 'k-ch');
    await send('/sequences/default/kseq', 'k-seq');
    await send('/parallels/default/kpar', 'k-par');
    const tr = await fetch(`${b.url}/eventtransforms/default/ktr`, {
      method: 'POST',
      headers: ceHeaders('k-tr'),
      body: '{}',
    });
    expect(tr.status).toBeLessThan(300);
    const got = (path: string) =>
      out.received.filter((r) => r.path === path).map((r) => String(r.event.attrs['type']));
    await expect.poll(() => got('/sub-a').length, { timeout: 20_000 }).toBe(1);
    await expect.poll(() => got('/sub-b').length, { timeout: 20_000 }).toBe(1);
    await expect
      .poll(() => got('/seq'), { timeout: 20_000 })
      .toEqual([`${ceHeaders('x')['ce-type']}.one.two`]);
    await expect
      .poll(() => got('/par').sort(), { timeout: 20_000 })
      .toEqual([`${ceHeaders('x')['ce-type']}.left`, `${ceHeaders('x')['ce-type']}.right`]);
    await expect.poll(() => got('/tr'), { timeout: 20_000 }).toEqual(['transformed']);
    const type = ceHeaders('x')['ce-type']!;
    // The types seen at the Channel's ingress are registered, whichever process saw them.
    await expect
      .poll(
        async () => {
          const r = await run(['get', 'eventtypes'], { env: { TRELLIS_SERVER: a.url } });
          return r.stdout.includes(type);
        },
        { timeout: 20_000 },
      )
      .toBe(true);
  });
  it('a PingSource fires each scheduled second once, whichever of the processes fires it', async () => {
    await using sink = await startSink();
    const yaml = `apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: tick}\nspec:\n  schedule: '* * * * * *'\n  sink: {uri: '${sink.url}'}\n`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: a.url } })).code).toBe(0);
    await sink.waitFor(5, 20_000);
    expect((await run(['delete', 'pingsource', 'tick'], { env: { TRELLIS_SERVER: b.url } })).code).toBe(0);
    const times = sink.received.map((r) => Date.parse(String(r.event.attrs['time'])));
    // One event per scheduled second: no time twice, and no second skipped between the first and last.
    expect(new Set(times).size).toBe(times.length);
    const sorted = [...times].sort((x, y) => x - y);
    expect((sorted.at(-1)! - sorted[0]!) / 1000 + 1).toBe(sorted.length);
  });
  it('an ApiServerSource sends each change once, whichever process holds its lease', async () => {
    await using sink = await startSink();
    const yaml = `apiVersion: sources.knative.dev/v1\nkind: ApiServerSource\nmetadata: {name: watch}\nspec:\n  mode: Reference\n  resources:\n    - {apiVersion: eventing.knative.dev/v1, kind: Broker, selector: {matchLabels: {watched: 'yes'}}}\n  sink: {uri: '${sink.url}'}\n`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: a.url } })).code).toBe(0);
    await ready(b.url, '/apis/sources.knative.dev/v1/namespaces/default/apiserversources/watch');
    await ready(a.url, '/apis/sources.knative.dev/v1/namespaces/default/apiserversources/watch');
    const broker = `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: watched\n  labels: {watched: 'yes'}\n`;
    expect((await run(['apply', '-f', '-'], { input: broker, env: { TRELLIS_SERVER: b.url } })).code).toBe(0);
    const of = (type: string) => sink.received.filter((r) => r.event.attrs['type'] === type);
    await expect.poll(() => of('dev.knative.apiserver.ref.add').length, { timeout: 20_000 }).toBe(1);
    expect((await run(['delete', 'broker', 'watched'], { env: { TRELLIS_SERVER: a.url } })).code).toBe(0);
    await expect.poll(() => of('dev.knative.apiserver.ref.delete').length, { timeout: 20_000 }).toBe(1);
    // Had both processes sent, the second add would have come before the delete.
    expect(of('dev.knative.apiserver.ref.add')).toHaveLength(1);
  });
  it('a ContainerSource runs in exactly one of the processes, the holder of its lease', async () => {
    await using sink = await startSink();
    const beat = `setInterval(() => fetch(process.env.K_SINK, { method: 'POST', headers: { 'ce-specversion': '1.0', 'ce-id': 'b' + Date.now() + Math.random(), 'ce-source': '/beat', 'ce-type': 'beat', 'content-type': 'application/json' }, body: JSON.stringify({ pid: process.pid }) }).catch(() => {}), 50);`;
    const yaml = `apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata: {name: beat}\nspec:\n  template:\n    spec:\n      containers:\n        - command: ${JSON.stringify([process.execPath, '-e', beat])}\n  sink: {uri: '${sink.url}'}\n`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: a.url } })).code).toBe(0);
    await sink.waitFor(20, 20_000);
    const pids = new Set(
      sink.received.map((r) => (JSON.parse(r.event.data!.toString()) as { pid: number }).pid),
    );
    expect(pids.size).toBe(1);
    const o = (await (
      await fetch(`${b.url}/apis/sources.knative.dev/v1/namespaces/default/containersources/beat`)
    ).json()) as {
      status: { process: { state: string; pid: number; runner: string } };
    };
    expect(o.status.process).toMatchObject({ state: 'Running', pid: [...pids][0] });
    expect([a.child.pid, b.child.pid].map((p) => o.status.process.runner.endsWith(`:${p}`))).toContain(true);
    expect((await run(['delete', 'containersource', 'beat'], { env: { TRELLIS_SERVER: b.url } })).code).toBe(
      0,
    );
  });

  /** Applies connector sources on process `a`; resolves when process `b` reports them Ready. */
  const applySources = async (docs: { kind: string; name: string; spec: Record<string, unknown> }[]) => {
    const r = await fetch(`${a.url}/apis/apply`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(
        docs.map((d) => ({
          apiVersion: 'sources.trellis.dev/v1alpha1',
          kind: d.kind,
          metadata: { name: d.name, namespace: 'default' },
          spec: d.spec,
        })),
      ),
    });
    expect(r.status, await r.clone().text()).toBeLessThan(300);
    for (const d of docs)
      await ready(
        b.url,
        `/apis/sources.trellis.dev/v1alpha1/namespaces/default/${d.kind.toLowerCase()}s/${d.name}`,
      );
  };
  const idsOf = (received: { event: { attrs: Record<string, unknown> } }[]) =>
    received.map((r) => String(r.event.attrs['id']));

  it('connector sources on both processes take each message once: a JetStream consumer and a Redis group shared', {
    timeout: 60_000,
  }, async () => {
    await using sink = await startSink();
    const tag = randomBytes(4).toString('hex');
    // 200 messages waiting in a JetStream stream and 200 entries in a Redis stream, before the sources.
    const nc = await connect({ servers: NATS });
    const jsm = await jetstreamManager(nc);
    const S = `CLUSTERIN${tag}`;
    await jsm.streams.add({ name: S, subjects: [`clusterin${tag}.>`] });
    const js = jsm.jetstream();
    for (let i = 0; i < 200; i++) await js.publish(`clusterin${tag}.m`, `{"n":${i}}`, { msgID: `j${i}` });
    const docs: { kind: string; name: string; spec: Record<string, unknown> }[] = [
      {
        kind: 'NatsSource',
        name: `js${tag}`,
        spec: {
          servers: NATS,
          subject: `clusterin${tag}.m`,
          jetstream: { stream: S },
          sink: { uri: sink.url },
        },
      },
    ];
    const { Redis } = redisUp ? await import('ioredis') : { Redis: undefined };
    const redis = Redis === undefined ? undefined : new Redis(REDIS_URL);
    const key = `cluster-${tag}`;
    if (redis !== undefined) {
      const pipe = redis.pipeline();
      for (let i = 0; i < 200; i++) pipe.xadd(key, '*', 'data', `{"n":${i}}`);
      await pipe.exec();
      docs.push({
        kind: 'RedisStreamSource',
        name: `rs${tag}`,
        spec: { address: REDIS_URL, stream: key, startId: '0', sink: { uri: sink.url } },
      });
    }
    try {
      await applySources(docs);
      const fromNats = () => sink.received.filter((r) => String(r.event.attrs['source']).startsWith('nats'));
      const fromRedis = () =>
        sink.received.filter((r) => String(r.event.attrs['source']).startsWith('redis'));
      await expect.poll(() => fromNats().length, { timeout: 30_000 }).toBeGreaterThanOrEqual(200);
      if (redis !== undefined)
        await expect.poll(() => fromRedis().length, { timeout: 30_000 }).toBeGreaterThanOrEqual(200);
      // Every message, and none twice (nothing failed, so at least once is exactly once here).
      expect(new Set(idsOf(fromNats())).size).toBe(200);
      expect(fromNats()).toHaveLength(200);
      if (redis !== undefined) {
        expect(new Set(idsOf(fromRedis())).size).toBe(200);
        expect(fromRedis()).toHaveLength(200);
        // Both processes are consumers of the group.
        await expect
          .poll(
            async () =>
              ((await redis.xinfo('CONSUMERS', key, `trellis-default-rs${tag}`)) as unknown[]).length,
          )
          .toBe(2);
      }
    } finally {
      for (const d of docs)
        await fetch(
          `${a.url}/apis/sources.trellis.dev/v1alpha1/namespaces/default/${d.kind.toLowerCase()}s/${d.name}`,
          {
            method: 'DELETE',
          },
        );
      await jsm.streams.delete(S);
      await nc.close();
      if (redis !== undefined) {
        await redis.del(key);
        redis.disconnect();
      }
    }
  });

  it('a core NATS subject (a queue group) and a RabbitMQ queue shared by both processes: each message once', {
    timeout: 60_000,
  }, async () => {
    await using sink = await startSink();
    const tag = randomBytes(4).toString('hex');
    const nc = await connect({ servers: NATS });
    const amqp = amqpUp ? (await import('amqplib')).default : undefined;
    const conn = await amqp?.connect(AMQP_URL);
    const ch = await conn?.createConfirmChannel();
    const queue = `cluster-${tag}`;
    const docs: { kind: string; name: string; spec: Record<string, unknown> }[] = [
      {
        kind: 'NatsSource',
        name: `core${tag}`,
        spec: { servers: NATS, subject: `core${tag}.>`, sink: { uri: sink.url } },
      },
    ];
    if (ch !== undefined) {
      await ch.assertQueue(queue, { durable: false });
      for (let i = 0; i < 200; i++) ch.sendToQueue(queue, Buffer.from(`{"n":${i}}`));
      await ch.waitForConfirms();
      docs.push({
        kind: 'AmqpSource',
        name: `q${tag}`,
        spec: { address: AMQP_URL, queue, sink: { uri: sink.url } },
      });
    }
    const from = (scheme: string) =>
      sink.received.filter((r) => String(r.event.attrs['source']).startsWith(`${scheme}://`));
    try {
      await applySources(docs);
      // Core NATS keeps nothing for absent subscribers: publish once a probe arrives.
      await expect
        .poll(
          async () => {
            nc.publish(`core${tag}.probe`, '{}');
            await nc.flush();
            return from('nats').length;
          },
          { timeout: 20_000 },
        )
        .toBeGreaterThan(0);
      for (let i = 0; i < 200; i++) nc.publish(`core${tag}.m`, `{"n":${i}}`);
      await nc.flush();
      const ns = (scheme: string, subject?: string) =>
        from(scheme)
          .filter((r) => subject === undefined || r.event.attrs['subject'] === subject)
          .map((r) => (JSON.parse(r.event.data!.toString()) as { n: number }).n)
          .sort((x, y) => x - y);
      const all = Array.from({ length: 200 }, (_, i) => i);
      await expect
        .poll(() => ns('nats', `core${tag}.m`).length, { timeout: 30_000 })
        .toBeGreaterThanOrEqual(200);
      expect(ns('nats', `core${tag}.m`)).toEqual(all);
      if (ch !== undefined) {
        await expect.poll(() => ns('amqp').length, { timeout: 30_000 }).toBeGreaterThanOrEqual(200);
        expect(ns('amqp')).toEqual(all);
        // Both processes consume the queue.
        await expect.poll(async () => (await ch.checkQueue(queue)).consumerCount).toBe(2);
      }
    } finally {
      for (const d of docs)
        await fetch(
          `${a.url}/apis/sources.trellis.dev/v1alpha1/namespaces/default/${d.kind.toLowerCase()}s/${d.name}`,
          {
            method: 'DELETE',
          },
        );
      await nc.close();
      await ch?.deleteQueue(queue).catch(() => undefined);
      await conn?.close();
    }
  });

  it.runIf(mqttUp)(
    'an MqttSource runs from a cluster: one persistent session, each message once',
    {
      timeout: 60_000,
    },
    async () => {
      await using sink = await startSink();
      const tag = randomBytes(4).toString('hex');
      await applySources([
        {
          kind: 'MqttSource',
          name: `mq${tag}`,
          spec: { address: MQTT_URL, topic: `cluster/${tag}/#`, sink: { uri: sink.url } },
        },
      ]);
      const mqtt = (await import('mqtt')).default;
      const pub = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5 });
      try {
        // The session exists once a probe arrives; then 100 messages at QoS 1.
        await expect
          .poll(
            async () => {
              await pub.publishAsync(`cluster/${tag}/probe`, '{}', { qos: 1 });
              return sink.received.length;
            },
            { timeout: 20_000 },
          )
          .toBeGreaterThan(0);
        const before = sink.received.length;
        for (let i = 0; i < 100; i++) await pub.publishAsync(`cluster/${tag}/m`, `{"n":${i}}`, { qos: 1 });
        await expect
          .poll(() => sink.received.filter((r) => r.event.attrs['subject'] === `cluster/${tag}/m`).length, {
            timeout: 30_000,
          })
          .toBeGreaterThanOrEqual(100);
        const got = sink.received
          .slice(before)
          .filter((r) => r.event.attrs['subject'] === `cluster/${tag}/m`);
        const ns = got.map((r) => (JSON.parse(r.event.data!.toString()) as { n: number }).n);
        // Every message once, whichever process holds the session (the holder of the source's lease).
        expect(ns.sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
      } finally {
        await pub.endAsync();
        await fetch(`${a.url}/apis/sources.trellis.dev/v1alpha1/namespaces/default/mqttsources/mq${tag}`, {
          method: 'DELETE',
        });
      }
    },
  );
});
