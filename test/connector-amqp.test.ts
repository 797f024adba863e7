/** The AMQP 0-9-1 connector against this machine's RabbitMQ (AMQP_URL, default amqp://127.0.0.1:5672). */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import { describe, expect, it } from 'vitest';
import { amqpToEvent, eventToAmqp } from '../src/connectors/amqp.js';
import { run, serve } from './helpers/process.js';
import { serverUp } from './helpers/reachable.js';
import { broker, ceHeaders, conditionOf, testServer } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const AMQP_URL = process.env['AMQP_URL'] ?? 'amqp://127.0.0.1:5672';
const RABBITMQCTL = ['/usr/sbin/rabbitmqctl', '/usr/bin/rabbitmqctl'].find((p) => existsSync(p));

const up = await serverUp(AMQP_URL, 5672, 'an AMQP broker');

const source = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'sources.trellis.dev/v1alpha1',
  kind: 'AmqpSource',
  metadata: { name, namespace: 'default' },
  spec,
});

describe('the AMQP binding', () => {
  it('binary (cloudEvents_ headers, content_type), structured, either prefix; other messages wrapped', () => {
    const e = {
      attrs: {
        specversion: '1.0',
        id: 'a1',
        source: '/s',
        type: 't',
        datacontenttype: 'application/json',
        n: 4,
      },
      data: Buffer.from('{}'),
    };
    const b = eventToAmqp(e, 'binary');
    expect(b.headers).toMatchObject({ cloudEvents_id: 'a1', cloudEvents_n: 4 });
    expect(b.contentType).toBe('application/json');
    expect(amqpToEvent('q', { ...b, routingKey: 'q' })).toEqual(e);
    const st = eventToAmqp(e, 'structured');
    expect(amqpToEvent('q', { ...st, routingKey: 'q' }).attrs).toEqual(e.attrs);
    const colon = amqpToEvent('q', {
      content: Buffer.alloc(0),
      routingKey: 'q',
      headers: {
        'cloudEvents:specversion': '1.0',
        'cloudEvents:id': 'c',
        'cloudEvents:source': '/s',
        'cloudEvents:type': 't',
      },
    });
    expect(colon.attrs['id']).toBe('c');
    const w = amqpToEvent('orders', {
      content: Buffer.from('hello'),
      routingKey: 'orders.eu',
      messageId: 'm-7',
    });
    expect(w.attrs).toMatchObject({
      type: 'dev.trellis.amqp.message',
      source: 'amqp://orders',
      subject: 'orders.eu',
      id: 'm-7',
    });
  });
});

describe.runIf(up)('AmqpSource and AmqpSink on this machine', () => {
  const tag = randomBytes(4).toString('hex');

  it('source: a queue into Trellis, acknowledged once stored; sink: a Trigger out through the default exchange', async () => {
    const qin = `trellis-test-${tag}-in`;
    const qout = `trellis-test-${tag}-out`;
    const conn = await amqp.connect(AMQP_URL);
    const ch = await conn.createChannel();
    await ch.assertQueue(qin, { durable: false, autoDelete: false });
    await ch.assertQueue(qout, { durable: false });
    try {
      await using s = await testServer();
      await using sink = await startSink();
      await s.apply(broker('default'));
      for (const doc of [
        source('in', { address: AMQP_URL, queue: qin, sink: { uri: sink.url } }),
        {
          apiVersion: 'sinks.trellis.dev/v1alpha1',
          kind: 'AmqpSink',
          metadata: { name: 'out', namespace: 'default' },
          spec: { address: AMQP_URL, routingKey: qout },
        },
        {
          apiVersion: 'eventing.knative.dev/v1',
          kind: 'Trigger',
          metadata: { name: 'to-amqp', namespace: 'default' },
          spec: {
            broker: 'default',
            filter: { attributes: { type: 'to.amqp' } },
            subscriber: { ref: { apiVersion: 'sinks.trellis.dev/v1alpha1', kind: 'AmqpSink', name: 'out' } },
          },
        },
      ])
        expect((await s.apply(doc)).status).toBeLessThan(300);
      await expect
        .poll(() =>
          conditionOf(s.url, '/apis/sources.trellis.dev/v1alpha1/namespaces/default/amqpsources/in', 'Ready'),
        )
        .toMatchObject({ status: 'True' });
      await expect
        .poll(() =>
          conditionOf(s.url, '/apis/sinks.trellis.dev/v1alpha1/namespaces/default/amqpsinks/out', 'Ready'),
        )
        .toMatchObject({ status: 'True' });
      const b = eventToAmqp(
        {
          attrs: {
            specversion: '1.0',
            id: 'q1',
            source: '/shop',
            type: 'order.created',
            datacontenttype: 'application/json',
          },
          data: Buffer.from('{"n":1}'),
        },
        'binary',
      );
      ch.sendToQueue(qin, b.content, { contentType: b.contentType, headers: b.headers });
      ch.sendToQueue(qin, Buffer.from('plain'), { messageId: 'p1' });
      const got = await sink.waitFor(2, 15_000);
      expect(got.map((x) => x.event.attrs['id']).sort()).toEqual(['p1', 'q1']);
      await expect.poll(async () => (await ch.checkQueue(qin)).messageCount).toBe(0);
      const res = await fetch(`${s.url}/default/default`, {
        method: 'POST',
        headers: ceHeaders('out-1', 'to.amqp'),
        body: '{"x":1}',
      });
      expect(res.status).toBe(202);
      let msg: amqp.GetMessage | false = false;
      await expect
        .poll(
          async () => {
            msg = await ch.get(qout, { noAck: true });
            return msg !== false;
          },
          { timeout: 15_000 },
        )
        .toBe(true);
      const m = msg as unknown as amqp.GetMessage;
      expect(m.properties.headers?.['cloudEvents_id']).toBe('out-1');
      expect(m.content.toString()).toBe('{"x":1}');
    } finally {
      await ch.deleteQueue(qin).catch(() => undefined);
      await ch.deleteQueue(qout).catch(() => undefined);
      await conn.close();
    }
  });

  it.runIf(RABBITMQCTL !== undefined)(
    'a connection the broker closes comes back, and consuming goes on',
    { timeout: 120_000 },
    async () => {
      const q = `trellis-test-${tag}-reconnect`;
      const conn = await amqp.connect(AMQP_URL);
      const ch = await conn.createChannel();
      await ch.assertQueue(q, { durable: false });
      try {
        await using s = await testServer();
        await using sink = await startSink();
        await s.apply(source('rc', { address: AMQP_URL, queue: q, sink: { uri: sink.url } }));
        const path = '/apis/sources.trellis.dev/v1alpha1/namespaces/default/amqpsources/rc';
        await expect.poll(() => conditionOf(s.url, path, 'Connected')).toMatchObject({ status: 'True' });
        const exec = promisify(execFile);
        const { stdout } = await exec(RABBITMQCTL!, ['list_connections', 'pid', 'client_properties', '-q']);
        const pid = stdout
          .split('\n')
          .find((l) => l.includes('trellis-default-rc'))
          ?.split(/\s/)[0];
        expect(pid).toBeDefined();
        await exec(RABBITMQCTL!, ['close_connection', pid!, 'test']);
        await expect
          .poll(() => conditionOf(s.url, path, 'Connected'), { timeout: 15_000 })
          .toMatchObject({ status: 'False' });
        await expect
          .poll(() => conditionOf(s.url, path, 'Connected'), { timeout: 15_000 })
          .toMatchObject({ status: 'True' });
        ch.sendToQueue(q, Buffer.from('after'));
        await expect
          .poll(() => sink.received.some((x) => x.event.data?.toString() === 'after'), { timeout: 15_000 })
          .toBe(true);
      } finally {
        await ch.deleteQueue(q).catch(() => undefined);
        await conn.close();
      }
    },
  );

  it('kill -9 of Trellis mid-queue: unacknowledged messages go back to the queue, all arrive after a restart', {
    timeout: 120_000,
  }, async () => {
    const q = `trellis-test-${tag}-kill`;
    const dir = mkdtempSync(join(tmpdir(), 'trellis-amqp-'));
    const conn = await amqp.connect(AMQP_URL);
    const ch = await conn.createChannel();
    await ch.assertQueue(q, { durable: false });
    try {
      await using sink = await startSink((_r, res) => setTimeout(() => res.writeHead(202).end(), 2));
      for (let i = 0; i < 200; i++) ch.sendToQueue(q, Buffer.from(String(i)));
      const args = ['--data-dir', join(dir, 'd')];
      let t = await serve(args);
      const yaml = `apiVersion: sources.trellis.dev/v1alpha1\nkind: AmqpSource\nmetadata: {name: k}\nspec:\n  address: ${AMQP_URL}\n  queue: ${q}\n  sink: {uri: '${sink.url}'}\n`;
      expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: t.url } })).code).toBe(0);
      await expect.poll(() => sink.received.length, { timeout: 20_000 }).toBeGreaterThan(10);
      t.child.kill('SIGKILL');
      await t.exited();
      t = await serve(args);
      const got = () => new Set(sink.received.map((x) => x.event.data?.toString()));
      await expect.poll(() => got().size, { timeout: 60_000 }).toBe(200);
      console.log(`AMQP source across kill -9: 200 messages, ${sink.received.length - 200} delivered twice`);
      t.child.kill('SIGTERM');
      await t.exited();
    } finally {
      await ch.deleteQueue(q).catch(() => undefined);
      await conn.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad specs naming the field', async () => {
    await using s = await testServer();
    const sink = { uri: 'http://127.0.0.1:9/' };
    const cases: [Record<string, unknown>, string][] = [
      [{ queue: 'q', sink }, 'spec.address: is required'],
      [{ address: 'amqp://guest:guest@127.0.0.1', queue: 'q', sink }, 'must not carry credentials'],
      [{ address: AMQP_URL, sink }, 'spec.queue: is required'],
      [{ address: AMQP_URL, queue: 'q', prefetch: 0, sink }, 'spec.prefetch'],
      [{ address: AMQP_URL, queue: 'q', auth: { password: 'x' }, sink }, 'spec.auth.password'],
    ];
    for (const [spec, message] of cases) {
      const r = await s.apply(source('bad', spec));
      expect([r.status, ((await r.json()) as { message: string }).message]).toEqual([
        400,
        expect.stringContaining(message),
      ]);
    }
  });
});
