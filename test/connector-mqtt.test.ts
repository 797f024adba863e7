/** The MQTT connector against this machine's Mosquitto (MQTT_URL, default mqtt://127.0.0.1:1883) and a private one. */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import { eventToMqtt, mqttToEvent } from '../src/connectors/mqtt.js';
import { run, serve } from './helpers/process.js';
import { serverUp } from './helpers/reachable.js';
import { broker, ceHeaders, conditionOf, testServer } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const MQTT_URL = process.env['MQTT_URL'] ?? 'mqtt://127.0.0.1:1883';
const MOSQUITTO = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => existsSync(p));

const up = await serverUp(MQTT_URL, 1883, 'an MQTT broker');

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });

/** A private Mosquitto on a free port, that a test stops and starts. */
async function privateMosquitto() {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(MOSQUITTO!, ['-p', String(port)], { stdio: 'ignore' });
    await expect
      .poll(
        () =>
          new Promise<boolean>((r) => {
            const s = new Socket();
            s.once('connect', () => {
              s.destroy();
              r(true);
            });
            s.once('error', () => r(false));
            s.connect(port, '127.0.0.1');
          }),
      )
      .toBe(true);
  };
  const stop = async () => {
    const c = child;
    if (c === undefined || c.exitCode !== null) return;
    const done = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await done;
  };
  await start();
  return { url: `mqtt://127.0.0.1:${port}`, start, stop };
}

const source = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'sources.trellis.dev/v1alpha1',
  kind: 'MqttSource',
  metadata: { name, namespace: 'default' },
  spec,
});

describe('the MQTT binding', () => {
  it('MQTT 5 binary: attributes as user properties, datacontenttype as Content Type; structured; wrapping', () => {
    const e = {
      attrs: { specversion: '1.0', id: 'm1', source: '/s', type: 't', datacontenttype: 'text/plain', n: 2 },
      data: Buffer.from('hi'),
    };
    const b = eventToMqtt(e, 'binary');
    expect(b.contentType).toBe('text/plain');
    expect(b.userProperties).toMatchObject({ id: 'm1', specversion: '1.0', n: '2' });
    expect(b.userProperties?.['datacontenttype']).toBeUndefined();
    expect(mqttToEvent({ topic: 'x', ...b }).attrs).toEqual({ ...e.attrs, n: '2' });
    const st = eventToMqtt(e, 'structured');
    expect(mqttToEvent({ topic: 'x', ...st }).attrs).toEqual(e.attrs);
    // MQTT 3.1.1 has no properties: a JSON event in the payload is read as structured.
    expect(mqttToEvent({ topic: 'x', payload: st.payload }).attrs['id']).toBe('m1');
    const w = mqttToEvent({ topic: 'sensors/7', payload: Buffer.from('21.5') });
    expect(w.attrs).toMatchObject({
      type: 'dev.trellis.mqtt.message',
      source: 'mqtt://sensors/7',
      subject: 'sensors/7',
    });
    const broken = mqttToEvent({
      topic: 't',
      payload: Buffer.alloc(0),
      userProperties: { specversion: '1.0', id: 'x' },
    });
    expect(String(broken.attrs['trellisinvalid'])).toContain('required');
  });
});

describe.runIf(up)('MqttSource and MqttSink on this machine', () => {
  const tag = randomBytes(4).toString('hex');

  it('source (MQTT 5 and 3.1.1) into Trellis; sink out of it (binary on 5, structured on 3.1.1)', async () => {
    await using s = await testServer();
    await using sink = await startSink();
    await s.apply(broker('default'));
    for (const doc of [
      source('v5', { address: MQTT_URL, topic: `t${tag}/v5/#`, sink: { uri: sink.url } }),
      source('v4', { address: MQTT_URL, topic: `t${tag}/v4/+`, protocolVersion: 4, sink: { uri: sink.url } }),
      {
        apiVersion: 'sinks.trellis.dev/v1alpha1',
        kind: 'MqttSink',
        metadata: { name: 'out5', namespace: 'default' },
        spec: { address: MQTT_URL, topic: `t${tag}/out/5` },
      },
      {
        apiVersion: 'sinks.trellis.dev/v1alpha1',
        kind: 'MqttSink',
        metadata: { name: 'out4', namespace: 'default' },
        spec: { address: MQTT_URL, topic: `t${tag}/out/4`, protocolVersion: 4 },
      },
      ...['out5', 'out4'].map((name) => ({
        apiVersion: 'eventing.knative.dev/v1',
        kind: 'Trigger',
        metadata: { name, namespace: 'default' },
        spec: {
          broker: 'default',
          filter: { attributes: { type: 'to.mqtt' } },
          subscriber: { ref: { apiVersion: 'sinks.trellis.dev/v1alpha1', kind: 'MqttSink', name } },
        },
      })),
    ])
      expect((await s.apply(doc)).status).toBeLessThan(300);
    for (const n of ['v5', 'v4'])
      await expect
        .poll(() =>
          conditionOf(
            s.url,
            `/apis/sources.trellis.dev/v1alpha1/namespaces/default/mqttsources/${n}`,
            'Ready',
          ),
        )
        .toMatchObject({ status: 'True' });
    for (const n of ['out5', 'out4'])
      await expect
        .poll(() =>
          conditionOf(s.url, `/apis/sinks.trellis.dev/v1alpha1/namespaces/default/mqttsinks/${n}`, 'Ready'),
        )
        .toMatchObject({ status: 'True' });
    const c5 = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5 });
    const c4 = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 4 });
    const out: { topic: string; props?: Record<string, unknown>; payload: string }[] = [];
    c5.on('message', (topic, payload, packet) =>
      out.push({
        topic,
        props: packet.properties?.userProperties as Record<string, unknown>,
        payload: payload.toString(),
      }),
    );
    c4.on('message', (topic, payload) => out.push({ topic, payload: payload.toString() }));
    await c5.subscribeAsync(`t${tag}/out/5`, { qos: 1 });
    await c4.subscribeAsync(`t${tag}/out/4`, { qos: 1 });
    const b = eventToMqtt(
      {
        attrs: {
          specversion: '1.0',
          id: 'in5',
          source: '/dev',
          type: 'reading',
          datacontenttype: 'application/json',
        },
        data: Buffer.from('{"t":21}'),
      },
      'binary',
    );
    await c5.publishAsync(`t${tag}/v5/room1`, b.payload, {
      qos: 1,
      properties: { contentType: b.contentType!, userProperties: b.userProperties! },
    });
    const st = eventToMqtt(
      { attrs: { specversion: '1.0', id: 'in4', source: '/dev', type: 'reading' } },
      'structured',
    );
    await c4.publishAsync(`t${tag}/v4/room2`, st.payload, { qos: 1 });
    await c4.publishAsync(`t${tag}/v4/room3`, '22.5', { qos: 1 });
    const got = await sink.waitFor(3, 15_000).catch((e) => {
      throw new Error(
        `${String(e)} ${JSON.stringify(sink.received.map((x) => [x.event.attrs['id'], x.event.attrs['type'], x.event.attrs['trellisinvalid']]))}`,
      );
    });
    const ids = got.map((x) => String(x.event.attrs['id']));
    expect(ids).toEqual(expect.arrayContaining(['in5', 'in4']));
    expect(
      got.find((x) => x.event.attrs['type'] === 'dev.trellis.mqtt.message')?.event.data?.toString(),
    ).toBe('22.5');
    const res = await fetch(`${s.url}/default/default`, {
      method: 'POST',
      headers: ceHeaders('out-1', 'to.mqtt'),
      body: '{"x":1}',
    });
    expect(res.status).toBe(202);
    await expect.poll(() => out.length, { timeout: 15_000 }).toBe(2);
    const v5 = out.find((m) => m.topic.endsWith('/5'))!;
    expect(v5.props).toMatchObject({ id: 'out-1', type: 'to.mqtt' });
    expect(v5.payload).toBe('{"x":1}');
    expect((JSON.parse(out.find((m) => m.topic.endsWith('/4'))!.payload) as { id: string }).id).toBe('out-1');
    await c5.endAsync();
    await c4.endAsync();
  });

  it('kill -9 of Trellis mid-stream: its persistent session keeps the rest, all arrive after a restart', {
    timeout: 120_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-mqtt-'));
    try {
      await using sink = await startSink((_r, res) => setTimeout(() => res.writeHead(202).end(), 2));
      const args = ['--data-dir', join(dir, 'd')];
      let t = await serve(args);
      const yaml = `apiVersion: sources.trellis.dev/v1alpha1\nkind: MqttSource\nmetadata: {name: k}\nspec:\n  address: ${MQTT_URL}\n  topic: t${tag}/kill\n  clientId: trellis-test-${tag}\n  sink: {uri: '${sink.url}'}\n`;
      expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: t.url } })).code).toBe(0);
      await expect
        .poll(() =>
          conditionOf(t.url, '/apis/sources.trellis.dev/v1alpha1/namespaces/default/mqttsources/k', 'Ready'),
        )
        .toMatchObject({ status: 'True' });
      const c = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5 });
      for (let i = 0; i < 200; i++) await c.publishAsync(`t${tag}/kill`, String(i), { qos: 1 });
      await expect.poll(() => sink.received.length, { timeout: 20_000 }).toBeGreaterThan(10);
      t.child.kill('SIGKILL');
      await t.exited();
      t = await serve(args);
      const got = () => new Set(sink.received.map((x) => x.event.data?.toString()));
      await expect.poll(() => got().size, { timeout: 60_000 }).toBe(200);
      console.log(`MQTT source across kill -9: 200 messages, ${sink.received.length - 200} delivered twice`);
      await c.endAsync();
      t.child.kill('SIGTERM');
      await t.exited();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.runIf(MOSQUITTO !== undefined)(
    'the broker restarts: Disconnected, Connected again, and messages after it arrive',
    { timeout: 120_000 },
    async () => {
      const b = await privateMosquitto();
      try {
        await using s = await testServer();
        await using sink = await startSink();
        await s.apply(
          source('r', {
            address: b.url,
            topic: 'restart/#',
            clientId: `trellis-restart-${tag}`,
            sink: { uri: sink.url },
          }),
        );
        const path = '/apis/sources.trellis.dev/v1alpha1/namespaces/default/mqttsources/r';
        await expect.poll(() => conditionOf(s.url, path, 'Connected')).toMatchObject({ status: 'True' });
        await b.stop();
        await expect
          .poll(() => conditionOf(s.url, path, 'Connected'), { timeout: 15_000 })
          .toMatchObject({ status: 'False' });
        await b.start();
        await expect
          .poll(() => conditionOf(s.url, path, 'Connected'), { timeout: 15_000 })
          .toMatchObject({ status: 'True' });
        const c = await mqtt.connectAsync(b.url, { protocolVersion: 5 });
        await expect
          .poll(
            async () => {
              await c.publishAsync('restart/x', 'after', { qos: 1 });
              return sink.received.some((x) => x.event.data?.toString() === 'after');
            },
            { timeout: 20_000 },
          )
          .toBe(true);
        await c.endAsync();
      } finally {
        await b.stop();
      }
    },
  );

  it('refuses bad specs naming the field', async () => {
    await using s = await testServer();
    const sink = { uri: 'http://127.0.0.1:9/' };
    const cases: [Record<string, unknown>, string][] = [
      [{ topic: 'a', sink }, 'spec.address: is required'],
      [{ address: 'mqtt://u:p@h:1883', topic: 'a', sink }, 'must not carry credentials'],
      [{ address: MQTT_URL, topic: 'a/b#', sink }, 'must be whole levels'],
      [{ address: MQTT_URL, topic: 'a', qos: 2, sink }, 'spec.qos: must be 0 or 1'],
      [{ address: MQTT_URL, topic: 'a', protocolVersion: 3, sink }, 'spec.protocolVersion'],
    ];
    for (const [spec, message] of cases) {
      const r = await s.apply(source('bad', spec));
      expect([r.status, ((await r.json()) as { message: string }).message]).toEqual([
        400,
        expect.stringContaining(message),
      ]);
    }
    const bad = await s.apply({
      apiVersion: 'sinks.trellis.dev/v1alpha1',
      kind: 'MqttSink',
      metadata: { name: 'b', namespace: 'default' },
      spec: { address: MQTT_URL, topic: 'a', protocolVersion: 4, mode: 'binary' },
    });
    expect(((await bad.json()) as { message: string }).message).toContain('MQTT 3.1.1 has no properties');
  });
});
