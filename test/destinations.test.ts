/** Destination rules: deliveries never reach link-local or metadata addresses, loopback when told, or what the allow-list leaves out. */
import { describe, expect, it } from 'vitest';
import { run } from './helpers/process.js';
import { broker, ceHeaders, conditionOf, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const TRIGGERS = '/apis/eventing.knative.dev/v1/namespaces/default/triggers';

describe('destination rules', () => {
  it('a subscriber or dead-letter sink at a cloud metadata address is not Ready, and says why', async () => {
    await using s = await testServer();
    expect((await s.apply(broker('default'))).status).toBe(201);
    const meta = trigger('metadata', {
      broker: 'default',
      subscriber: { uri: 'http://169.254.169.254/latest/meta-data/' },
    });
    const mapped = trigger('mapped', {
      broker: 'default',
      subscriber: { uri: 'http://[::ffff:169.254.169.254]/' },
    });
    const dls = trigger('dls', {
      broker: 'default',
      subscriber: { uri: 'http://127.0.0.1:9/' },
      delivery: { deadLetterSink: { uri: 'http://169.254.170.2/v2/credentials' } },
    });
    for (const t of [meta, mapped, dls]) expect((await s.apply(t)).status).toBe(201);
    for (const name of ['metadata', 'mapped', 'dls']) {
      await expect
        .poll(() => conditionOf(s.url, `${TRIGGERS}/${name}`, 'Ready').then((c) => c?.reason))
        .toBe('DestinationDenied');
    }
    const c = await conditionOf(s.url, `${TRIGGERS}/metadata`, 'Ready');
    expect(c!.message).toContain('http://169.254.169.254/latest/meta-data/: deliveries there are refused');
    expect(c!.message).toContain('link-local');
  });

  it('--deny-loopback: addresses written in URLs are refused up front, host names after DNS; the server itself is still reached', async () => {
    await using sink = await startSink();
    await using s = await testServer({ denyLoopback: true });
    const port = new URL(sink.url).port;
    expect((await s.apply(broker('default'))).status).toBe(201);
    expect((await s.apply(broker('next'))).status).toBe(201);
    expect(
      (
        await s.apply(
          trigger('literal', { broker: 'default', subscriber: { uri: `http://127.0.0.1:${port}/` } }),
        )
      ).status,
    ).toBe(201);
    expect(
      (
        await s.apply(
          trigger('named', {
            broker: 'default',
            filter: { attributes: { type: 'to.named' } },
            subscriber: { uri: `http://localhost:${port}/` },
            delivery: { retry: 0 },
          }),
        )
      ).status,
    ).toBe(201);
    // To another Broker of this server (loopback, but itself).
    const chain = trigger('chain', {
      broker: 'default',
      filter: { attributes: { type: 'to.next' } },
      subscriber: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'next' } },
    });
    expect((await s.apply(chain)).status).toBe(201);
    await expect
      .poll(() => conditionOf(s.url, `${TRIGGERS}/literal`, 'Ready').then((c) => c?.message ?? ''))
      .toContain('127.0.0.1 is loopback (--deny-loopback)');
    await expect
      .poll(() => conditionOf(s.url, `${TRIGGERS}/named`, 'Ready').then((c) => c?.status))
      .toBe('True');
    await expect
      .poll(() => conditionOf(s.url, `${TRIGGERS}/chain`, 'Ready').then((c) => c?.status))
      .toBe('True');
    expect((await s.post('/default/default', ceHeaders('n-1', 'to.named'), '{}')).status).toBe(202);
    expect((await s.post('/default/default', ceHeaders('c-1', 'to.next'), '{}')).status).toBe(202);
    type Stats = {
      subscriptions: { name: string; recentFailures: { answer: string }[] }[];
      streams: { stream: string; accepted: number }[];
    };
    const stats = async () => (await (await fetch(`${s.url}/apis/stats`)).json()) as Stats;
    await expect
      .poll(
        async () => (await stats()).subscriptions.find((x) => x.name === 'named')?.recentFailures[0]?.answer,
      )
      .toMatch(/^destination denied: localhost resolves to (127\.0\.0\.1|::1): .* is loopback/);
    await expect
      .poll(async () => (await stats()).streams.find((x) => x.stream === 'default/next')?.accepted)
      .toBe(1);
    expect(sink.received.length).toBe(0);
  });

  it('refuses credentials in a destination URI (they would be stored and printed in plain text)', async () => {
    await using s = await testServer();
    for (const [spec, field] of [
      [{ broker: 'default', subscriber: { uri: 'http://user:secret@127.0.0.1:9/' } }, 'spec.subscriber.uri'],
      [
        {
          broker: 'default',
          subscriber: { uri: 'http://127.0.0.1:9/' },
          delivery: { deadLetterSink: { uri: 'https://only-user@x.example/' } },
        },
        'spec.delivery.deadLetterSink.uri',
      ],
    ] as const) {
      const r = await s.apply(trigger('creds', spec));
      expect(r.status).toBe(400);
      const body = (await r.json()) as { message: string };
      expect(body.message).toContain(`${field}: must not carry credentials`);
      expect(body.message).not.toContain('secret');
    }
  });

  it('--allow-networks lets deliveries reach only those networks (and loopback); bad networks are refused at start', async () => {
    await using sink = await startSink();
    await using s = await testServer({ allowNetworks: ['10.0.0.0/8'] });
    expect((await s.apply(broker('default'))).status).toBe(201);
    expect(
      (await s.apply(trigger('lan', { broker: 'default', subscriber: { uri: 'http://192.168.1.10/' } })))
        .status,
    ).toBe(201);
    expect(
      (await s.apply(trigger('local', { broker: 'default', subscriber: { uri: sink.url } }))).status,
    ).toBe(201);
    await expect
      .poll(() => conditionOf(s.url, `${TRIGGERS}/lan`, 'Ready').then((c) => c?.message ?? ''))
      .toContain('192.168.1.10 is not in --allow-networks');
    await expect
      .poll(() => conditionOf(s.url, `${TRIGGERS}/local`, 'Ready').then((c) => c?.status))
      .toBe('True');
    expect((await s.post('/default/default', ceHeaders('l-1'), '{}')).status).toBe(202);
    await sink.waitFor(1);
    const bad = await run(['serve', '--port', '0', '--deny-networks', '169.254.0.0/16,nonsense']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("--deny-networks: 'nonsense' is not a network");
  });
});
