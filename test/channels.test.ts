/** Channels and Subscriptions (messaging.knative.dev/v1) on the one delivery engine, against a real server. */
import { describe, expect, it } from 'vitest';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const MSG = '/apis/messaging.knative.dev/v1/namespaces/default';

function channel(name: string, kind = 'InMemoryChannel', spec: Record<string, unknown> = {}) {
  return { apiVersion: 'messaging.knative.dev/v1', kind, metadata: { name }, spec };
}
function subscription(name: string, spec: Record<string, unknown>) {
  return { apiVersion: 'messaging.knative.dev/v1', kind: 'Subscription', metadata: { name }, spec };
}
const imcRef = (name: string) => ({ apiVersion: 'messaging.knative.dev/v1', kind: 'InMemoryChannel', name });

type Status = {
  status: Record<string, unknown> & {
    conditions: { type: string; status: string; reason?: string; message?: string }[];
  };
};

async function applyAny(url: string, doc: { kind: string; metadata: { name: string } }): Promise<Response> {
  const plural = `${doc.kind.toLowerCase()}s`;
  return fetch(`${url}${MSG}/${plural}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(doc),
  });
}

describe('Channel and Subscription', () => {
  it('fans every event out to every Subscription, at an address of its own', async () => {
    await using a = await startSink();
    await using b = await startSink();
    await using s = await testServer();
    const res = await applyAny(s.url, channel('orders'));
    expect(res.status).toBe(201);
    const ch = (await res.json()) as Status;
    expect((ch.status['address'] as { url: string }).url).toBe(`${s.url}/inmemorychannels/default/orders`);
    expect(ch.status.conditions.find((c) => c.type === 'Durable')?.status).toBe('True');
    for (const [n, sink] of [
      ['to-a', a],
      ['to-b', b],
    ] as const)
      expect(
        (await applyAny(s.url, subscription(n, { channel: imcRef('orders'), subscriber: { uri: sink.url } })))
          .status,
      ).toBe(201);
    const listed = (await (await fetch(`${s.url}${MSG}/inmemorychannels/orders`)).json()) as Status;
    expect((listed.status['subscribers'] as { name: string }[]).map((x) => x.name).sort()).toEqual([
      'to-a',
      'to-b',
    ]);
    for (let i = 0; i < 20; i++)
      expect((await s.post('/inmemorychannels/default/orders', ceHeaders(`o${i}`), '{}')).status).toBe(202);
    await a.waitFor(20);
    await b.waitFor(20);
    expect(new Set(a.received.map((r) => r.event.attrs['id']))).toEqual(
      new Set(b.received.map((r) => r.event.attrs['id'])),
    );
  });

  it('ingress like a Broker: 400 for a bad event, 404 for an unknown channel, 413 over the limit', async () => {
    await using s = await testServer();
    await applyAny(
      s.url,
      channel('c', 'Channel', {
        channelTemplate: { apiVersion: 'messaging.knative.dev/v1', kind: 'InMemoryChannel' },
      }),
    );
    expect((await s.post('/channels/default/c', ceHeaders('ok'), '{}')).status).toBe(202);
    const bad = await s.post('/channels/default/c', { 'ce-specversion': '1.0', 'ce-id': 'x' }, '{}');
    expect(bad.status).toBe(400);
    const none = await s.post('/channels/default/nope', ceHeaders('n'), '{}');
    expect(none.status).toBe(404);
    expect(((await none.json()) as { code: string }).code).toBe('TRELLIS_ERR_DESTINATION_NOT_FOUND');
    expect((await s.post('/widgets/default/c', ceHeaders('w'), '{}')).status).toBe(404);
    const big = await s.post('/channels/default/c', ceHeaders('big'), 'x'.repeat(2 * 1024 * 1024));
    expect(big.status).toBe(413);
  });

  it('sends a reply to spec.reply, and drops it when there is none', async () => {
    await using replies = await startSink();
    const replier = (
      r: { event: { attrs: Record<string, unknown> } },
      res: import('node:http').ServerResponse,
    ) =>
      res
        .writeHead(200, {
          'ce-specversion': '1.0',
          'ce-id': `re-${String(r.event.attrs['id'])}`,
          'ce-source': '/r',
          'ce-type': 'reply',
        })
        .end('{}');
    await using withReply = await startSink(replier);
    await using noReply = await startSink(replier);
    await using s = await testServer();
    await applyAny(s.url, channel('c'));
    await applyAny(
      s.url,
      subscription('with', {
        channel: imcRef('c'),
        subscriber: { uri: withReply.url },
        reply: { uri: replies.url },
      }),
    );
    await applyAny(
      s.url,
      subscription('without', { channel: imcRef('c'), subscriber: { uri: noReply.url } }),
    );
    expect((await s.post('/inmemorychannels/default/c', ceHeaders('q'), '{}')).status).toBe(202);
    const [got] = await replies.waitFor(1);
    expect(got!.event.attrs['id']).toBe('re-q');
    await noReply.waitFor(1);
    await expect
      .poll(() => s.dispatcher.inflight() + s.ingress.lag.get('inmemorychannels/default/c'))
      .toBe(0);
    expect(replies.received).toHaveLength(1);
    expect(s.dispatcher.stats.replies).toBe(1);
  });

  it('a reply into a Broker by ref carries the TTL down, and a failing subscriber is dead-lettered', async () => {
    await using fromBroker = await startSink();
    await using dls = await startSink();
    await using fails = await startSink((_r, res) => res.writeHead(500).end());
    await using replier = await startSink((r, res) =>
      res
        .writeHead(200, {
          'ce-specversion': '1.0',
          'ce-id': `re-${String(r.event.attrs['id'])}`,
          'ce-source': '/r',
          'ce-type': 'reply',
        })
        .end(),
    );
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(trigger('all', { broker: 'b', subscriber: { uri: fromBroker.url } }));
    await applyAny(s.url, channel('c'));
    await applyAny(
      s.url,
      subscription('r', {
        channel: imcRef('c'),
        subscriber: { uri: replier.url },
        reply: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'b' } },
      }),
    );
    await applyAny(
      s.url,
      subscription('f', {
        channel: imcRef('c'),
        subscriber: { uri: fails.url },
        delivery: { retry: 1, backoffDelay: 'PT0.01S', deadLetterSink: { uri: dls.url } },
      }),
    );
    expect((await s.post('/inmemorychannels/default/c', ceHeaders('e'), '{}')).status).toBe(202);
    const [inBroker] = await fromBroker.waitFor(1);
    expect(inBroker!.event.attrs['id']).toBe('re-e');
    const [dead] = await dls.waitFor(1);
    expect(dead!.event.attrs['knativeerrorcode']).toBe('500');
    expect(fails.received).toHaveLength(2);
  });

  it('a Subscription to a channel not there yet turns Ready when it appears; a missing kind says so', async () => {
    await using sink = await startSink();
    await using s = await testServer();
    const early = (await (
      await applyAny(
        s.url,
        subscription('early', { channel: imcRef('later'), subscriber: { uri: sink.url } }),
      )
    ).json()) as Status;
    expect(early.status.conditions[0]).toMatchObject({
      type: 'Ready',
      status: 'False',
      reason: 'ChannelNotFound',
    });
    await applyAny(s.url, channel('later'));
    const now = (await (await fetch(`${s.url}${MSG}/subscriptions/early`)).json()) as Status;
    expect(now.status.conditions[0]).toMatchObject({ type: 'Ready', status: 'True' });
    expect((now.status['physicalSubscription'] as { subscriberUri: string }).subscriberUri).toBe(sink.url);
    expect((await s.post('/inmemorychannels/default/later', ceHeaders('l'), '{}')).status).toBe(202);
    await sink.waitFor(1);
    const kafka = (await (
      await applyAny(
        s.url,
        subscription('k', {
          channel: { apiVersion: 'messaging.knative.dev/v1beta1', kind: 'KafkaChannel', name: 'x' },
          subscriber: { uri: sink.url },
        }),
      )
    ).json()) as Status;
    expect(kafka.status.conditions[0]).toMatchObject({ status: 'False', reason: 'ChannelKindNotSupported' });
  });

  it("deleting a Subscription drops its backlog and leaves a Trigger's alone", async () => {
    await using down = await startSink((_r, res) => res.writeHead(503).end());
    await using s = await testServer();
    await s.apply(broker('b'));
    const t = (await (
      await s.apply(
        trigger('t', {
          broker: 'b',
          subscriber: { uri: down.url },
          delivery: { retry: 5, backoffDelay: 'PT1H' },
        }),
      )
    ).json()) as { metadata: { uid: string } };
    await applyAny(s.url, channel('c'));
    const sub = (await (
      await applyAny(
        s.url,
        subscription('s', {
          channel: imcRef('c'),
          subscriber: { uri: down.url },
          delivery: { retry: 5, backoffDelay: 'PT1H' },
        }),
      )
    ).json()) as { metadata: { uid: string } };
    await s.post('/default/b', ceHeaders('tb'), '{}');
    await s.post('/inmemorychannels/default/c', ceHeaders('tc'), '{}');
    await down.waitFor(2);
    const counts = async () => s.store.deliveries.counts();
    await expect
      .poll(async () => [(await counts()).get(t.metadata.uid), (await counts()).get(sub.metadata.uid)])
      .toEqual([1, 1]);
    expect((await fetch(`${s.url}${MSG}/subscriptions/s`, { method: 'DELETE' })).status).toBe(200);
    await expect.poll(async () => (await counts()).get(sub.metadata.uid)).toBeUndefined();
    expect((await counts()).get(t.metadata.uid)).toBe(1);
  });
});
