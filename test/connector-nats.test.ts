/**
 * The NATS connector against the real NATS server of this machine (and a private one it restarts):
 * NatsSource (JetStream and core) into Trellis, NatsSink out of it, per the CloudEvents NATS binding.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeNats, encodeNats } from '../src/connectors/nats-binding.js';
import { NATS_URL, natsServerAvailable, natsUp, startPrivateNats } from './helpers/nats.js';
import { run, serve } from './helpers/process.js';
import { ceHeaders, conditionOf, testServer } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const up = await natsUp();
const haveBinary = natsServerAvailable();

const natsSource = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'sources.trellis.dev/v1alpha1',
  kind: 'NatsSource',
  metadata: { name, namespace: 'default' },
  spec,
});
const natsSink = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'sinks.trellis.dev/v1alpha1',
  kind: 'NatsSink',
  metadata: { name, namespace: 'default' },
  spec,
});

describe('the NATS binding', () => {
  it('round-trips binary and structured events, percent-encoding header values', () => {
    const e = {
      attrs: {
        specversion: '1.0',
        id: 'a b%"c',
        source: '/s',
        type: 't',
        datacontenttype: 'application/json; charset=utf-8',
        n: 3,
      },
      data: Buffer.from('{"x":1}'),
    };
    for (const mode of ['binary', 'structured'] as const) {
      const m = encodeNats(e, mode);
      const back = decodeNats(m.headers, m.payload);
      expect(back.attrs).toEqual(mode === 'binary' ? { ...e.attrs, n: '3' } : e.attrs);
      expect(back.data?.toString()).toBe('{"x":1}');
    }
    const bin = encodeNats(e);
    expect(bin.headers).toContainEqual(['ce-id', 'a%20b%25%22c']);
    expect(bin.headers).toContainEqual(['ce-datacontenttype', 'application/json;%20charset=utf-8']);
  });
});

describe.runIf(up)('NatsSource and NatsSink on this machine', () => {
  const tag = randomBytes(4).toString('hex');
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: `CIN${tag}`, subjects: [`cin${tag}.>`] });
    await jsm.streams.add({ name: `COUT${tag}`, subjects: [`cout${tag}.>`] });
  });
  afterAll(async () => {
    await jsm.streams.delete(`CIN${tag}`).catch(() => undefined);
    await jsm.streams.delete(`COUT${tag}`).catch(() => undefined);
    await nc.close();
  });

  it('source: a JetStream stream into Trellis; CloudEvents decoded, other messages wrapped, all acknowledged', async () => {
    await using s = await testServer();
    await using sink = await startSink();
    const r = await s.apply(
      natsSource('orders-in', {
        servers: NATS_URL,
        subject: `cin${tag}.orders.>`,
        jetstream: { stream: `CIN${tag}` },
        sink: { uri: sink.url },
        ceOverrides: { extensions: { via: 'nats' } },
      }),
    );
    expect(r.status, await r.text()).toBeLessThan(300);
    await expect
      .poll(() =>
        conditionOf(
          s.url,
          '/apis/sources.trellis.dev/v1alpha1/namespaces/default/natssources/orders-in',
          'Ready',
        ),
      )
      .toMatchObject({ status: 'True' });
    const js = jetstream(nc);
    const bin = encodeNats({
      attrs: {
        specversion: '1.0',
        id: 'b1',
        source: '/shop',
        type: 'order.created',
        datacontenttype: 'application/json',
      },
      data: Buffer.from('{"n":1}'),
    });
    const h1 = headers();
    for (const [k, v] of bin.headers) h1.append(k, v);
    await js.publish(`cin${tag}.orders.eu`, bin.payload, { headers: h1 });
    const st = encodeNats(
      { attrs: { specversion: '1.0', id: 's1', source: '/shop', type: 'order.paid' } },
      'structured',
    );
    const h2 = headers();
    for (const [k, v] of st.headers) h2.append(k, v);
    await js.publish(`cin${tag}.orders.us`, st.payload, { headers: h2 });
    const h3 = headers();
    h3.append('content-type', 'application/json');
    await js.publish(`cin${tag}.orders.raw`, Buffer.from('{"plain":true}'), { headers: h3 });
    const h4 = headers();
    h4.append('ce-specversion', '0.3');
    h4.append('ce-id', 'old');
    await js.publish(`cin${tag}.orders.old`, Buffer.from('x'), { headers: h4 });
    const got = await sink.waitFor(4, 15_000);
    const by = (pred: (a: Record<string, unknown>) => boolean) => got.find((x) => pred(x.event.attrs))!.event;
    expect(by((a) => a['id'] === 'b1').attrs).toMatchObject({
      type: 'order.created',
      via: 'nats',
      datacontenttype: 'application/json',
    });
    expect(by((a) => a['id'] === 's1').attrs['type']).toBe('order.paid');
    const raw = by((a) => a['subject'] === `cin${tag}.orders.raw`);
    expect(raw.attrs).toMatchObject({
      type: 'dev.trellis.nats.message',
      source: `nats://cin${tag}.orders.raw`,
      datacontenttype: 'application/json',
    });
    expect(raw.data?.toString()).toBe('{"plain":true}');
    const old = by((a) => a['subject'] === `cin${tag}.orders.old`);
    expect(String(old.attrs['trellisinvalid'])).toContain('0.3');
    // Each message was acknowledged once stored: nothing waits in the consumer.
    await expect
      .poll(async () => {
        const info = await jsm.consumers.info(`CIN${tag}`, 'trellis-default-orders-in');
        return info.num_pending + info.num_ack_pending;
      })
      .toBe(0);
  });

  it('sink: events from a Trigger published on a subject (JetStream-confirmed), and on a core subject', async () => {
    await using s = await testServer();
    const core = nc.subscribe(`cout${tag}core.events`, { max: 1 });
    for (const doc of [
      {
        apiVersion: 'eventing.knative.dev/v1',
        kind: 'Broker',
        metadata: { name: 'default', namespace: 'default' },
        spec: {},
      },
      natsSink('to-js', { servers: NATS_URL, subject: `cout${tag}.events`, jetstream: true }),
      natsSink('to-core', { servers: [NATS_URL], subject: `cout${tag}core.events`, mode: 'structured' }),
      {
        apiVersion: 'eventing.knative.dev/v1',
        kind: 'Trigger',
        metadata: { name: 'out-js', namespace: 'default' },
        spec: {
          broker: 'default',
          subscriber: { ref: { apiVersion: 'sinks.trellis.dev/v1alpha1', kind: 'NatsSink', name: 'to-js' } },
        },
      },
      {
        apiVersion: 'eventing.knative.dev/v1',
        kind: 'Trigger',
        metadata: { name: 'out-core', namespace: 'default' },
        spec: {
          broker: 'default',
          subscriber: {
            ref: { apiVersion: 'sinks.trellis.dev/v1alpha1', kind: 'NatsSink', name: 'to-core' },
          },
        },
      },
    ]) {
      const r = await s.apply(doc);
      expect(r.status, await r.text()).toBeLessThan(300);
    }
    for (const name of ['to-js', 'to-core'])
      await expect
        .poll(() =>
          conditionOf(
            s.url,
            `/apis/sinks.trellis.dev/v1alpha1/namespaces/default/natssinks/${name}`,
            'Ready',
          ),
        )
        .toMatchObject({ status: 'True' });
    await expect
      .poll(() =>
        conditionOf(s.url, '/apis/eventing.knative.dev/v1/namespaces/default/triggers/out-js', 'Ready'),
      )
      .toMatchObject({ status: 'True' });
    const res = await fetch(`${s.url}/default/default`, {
      method: 'POST',
      headers: ceHeaders('out-1'),
      body: '{"hello":"nats"}',
    });
    expect(res.status).toBe(202);
    await expect.poll(async () => (await jsm.streams.info(`COUT${tag}`)).state.messages).toBe(1);
    const m = await jsm.streams.getMessage(`COUT${tag}`, { seq: 1 });
    const pairs: [string, string][] = [];
    for (const k of m!.header!.keys()) for (const v of m!.header!.values(k)) pairs.push([k, v]);
    const e = decodeNats(pairs, Buffer.from(m!.data));
    expect(e.attrs['id']).toBe('out-1');
    expect(e.data?.toString()).toBe('{"hello":"nats"}');
    for await (const cm of core) {
      expect(cm.headers?.get('content-type')).toContain('application/cloudevents+json');
      expect((JSON.parse(new TextDecoder().decode(cm.data)) as { id: string }).id).toBe('out-1');
      break;
    }
    // Straight to the sink's address; a subject with no JetStream stream is a 502 that says so.
    await s.apply(natsSink('nowhere', { servers: NATS_URL, subject: `nostream${tag}.x`, jetstream: true }));
    await expect
      .poll(() =>
        conditionOf(s.url, '/apis/sinks.trellis.dev/v1alpha1/namespaces/default/natssinks/nowhere', 'Ready'),
      )
      .toMatchObject({ status: 'True' });
    const bad = await fetch(`${s.url}/natssinks/default/nowhere`, {
      method: 'POST',
      headers: ceHeaders('x'),
      body: '{}',
    });
    expect(bad.status).toBe(502);
    expect(((await bad.json()) as { code: string }).code).toBe('TRELLIS_ERR_CONNECTOR_FAILED');
  });

  it('refuses bad specs naming the field; secrets never in the document', async () => {
    await using s = await testServer();
    const sink = { uri: 'http://127.0.0.1:9/' };
    const cases: [Record<string, unknown>, string][] = [
      [{ subject: 'a', sink }, 'spec.servers: must name the NATS servers'],
      [{ servers: 'nats://u:p@127.0.0.1:4222', subject: 'a', sink }, 'must not carry credentials'],
      [{ servers: 'http://127.0.0.1:4222', subject: 'a', sink }, 'must be nats:// or tls://'],
      [{ servers: NATS_URL, subject: 'a b', sink }, "spec.subject: 'a b' is not a NATS subject"],
      [{ servers: NATS_URL, subject: 'a.>.b', sink }, 'spec.subject'],
      [
        { servers: NATS_URL, subject: 'a', auth: { user: 'u', password: 'p' }, sink },
        'spec.auth.password: secrets are not written in resources',
      ],
      [
        { servers: NATS_URL, subject: 'a', jetstream: { stream: 'S' }, queueGroup: 'q', sink },
        'spec.queueGroup: is for core subjects',
      ],
      [
        { servers: NATS_URL, subject: 'a', jetstream: { stream: 'S', ackWait: 'PT0.1S' }, sink },
        'spec.jetstream.ackWait',
      ],
    ];
    for (const [spec, message] of cases) {
      const r = await s.apply(natsSource('bad', spec));
      const body = (await r.json()) as { message: string };
      expect([r.status, body.message]).toEqual([400, expect.stringContaining(message)]);
    }
    const r = await s.apply(natsSink('bad', { servers: NATS_URL, subject: 'a.*' }));
    expect(((await r.json()) as { message: string }).message).toContain('no wildcards');
  });
});

describe.runIf(haveBinary)('NatsSource through failures', () => {
  it('a NATS restart: Disconnected, then Connected, and the messages sent after it arrive', {
    timeout: 120_000,
  }, async () => {
    const nats = await startPrivateNats();
    try {
      const nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: 'RESTART', subjects: ['restart.>'] });
      await using s = await testServer();
      await using sink = await startSink();
      await s.apply(
        natsSource('r', {
          servers: nats.url,
          subject: 'restart.>',
          jetstream: { stream: 'RESTART' },
          sink: { uri: sink.url },
        }),
      );
      const path = '/apis/sources.trellis.dev/v1alpha1/namespaces/default/natssources/r';
      await expect.poll(() => conditionOf(s.url, path, 'Connected')).toMatchObject({ status: 'True' });
      await jetstream(nc).publish('restart.a', Buffer.from('before'));
      await sink.waitFor(1, 10_000);
      await nats.stop();
      await expect
        .poll(() => conditionOf(s.url, path, 'Connected'), { timeout: 15_000 })
        .toMatchObject({ status: 'False', reason: 'Disconnected' });
      await nats.start();
      await expect
        .poll(() => conditionOf(s.url, path, 'Connected'), { timeout: 15_000 })
        .toMatchObject({ status: 'True' });
      await expect
        .poll(
          async () => {
            await jetstream(nc)
              .publish('restart.b', Buffer.from('after'))
              .catch(() => undefined);
            return sink.received.some((x) => x.event.data?.toString() === 'after');
          },
          { timeout: 20_000 },
        )
        .toBe(true);
      await nc.close();
    } finally {
      await nats.close();
    }
  });

  it('kill -9 of Trellis while it takes a stream: after a restart every message arrives, none lost', {
    timeout: 120_000,
  }, async () => {
    const nats = await startPrivateNats();
    const dir = mkdtempSync(join(tmpdir(), 'trellis-natssrc-'));
    try {
      const nc = await connect({ servers: nats.url });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: 'KILL', subjects: ['kill.>'] });
      const js = jetstream(nc);
      await using sink = await startSink((_r, res) => setTimeout(() => res.writeHead(202).end(), 2));
      const args = ['--data-dir', join(dir, 'd')];
      let t = await serve(args);
      const yaml = `apiVersion: sources.trellis.dev/v1alpha1\nkind: NatsSource\nmetadata: {name: k}\nspec:\n  servers: ${nats.url}\n  subject: kill.>\n  jetstream: {stream: KILL, ackWait: PT2S}\n  sink: {uri: '${sink.url}'}\n`;
      expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: t.url } })).code).toBe(0);
      await Promise.all(Array.from({ length: 300 }, (_, i) => js.publish('kill.m', Buffer.from(String(i)))));
      await expect.poll(() => sink.received.length, { timeout: 20_000 }).toBeGreaterThan(20);
      t.child.kill('SIGKILL');
      await t.exited();
      t = await serve(args);
      const got = () => new Set(sink.received.map((x) => x.event.data?.toString()));
      await expect.poll(() => got().size, { timeout: 60_000 }).toBe(300);
      console.log(`NATS source across kill -9: 300 messages, ${sink.received.length - 300} delivered twice`);
      t.child.kill('SIGTERM');
      await t.exited();
      await nc.close();
    } finally {
      await nats.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
