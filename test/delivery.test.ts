/** Triggers and delivery end to end: filters, retries, backoff, Retry-After, timeouts, dead letters, replies. */
import { describe, expect, it } from 'vitest';
import { backoffMs, type RetryPolicy } from '../src/dataplane/retry-policy.js';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const fast = { retry: 3, backoffPolicy: 'linear', backoffDelay: 'PT0.01S' };

describe('filter.attributes', () => {
  it('ANDs keys, compares case-sensitively, "" means present and non-empty, a missing extension never matches', async () => {
    await using sink = await startSink();
    await using other = await startSink();
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('typed', {
        broker: 'b',
        filter: { attributes: { type: 'order.created', region: '' } },
        subscriber: { uri: sink.url },
      }),
    );
    await s.apply(trigger('catch-all', { broker: 'b', subscriber: { uri: other.url } }));
    const send = (id: string, type: string, extra: Record<string, string> = {}) =>
      s.post('/default/b', ceHeaders(id, type, extra), '{}');
    await send('match', 'order.created', { 'ce-region': 'eu' });
    await send('wrong-case', 'Order.Created', { 'ce-region': 'eu' });
    await send('missing-ext', 'order.created');
    await send('empty-ext', 'order.created', { 'ce-region': '' });
    await send('last', 'order.created', { 'ce-region': 'us' });
    await other.waitFor(5);
    await sink.waitFor(2);
    expect(sink.received.map((r) => r.event.attrs['id']).sort()).toEqual(['last', 'match']);
  });
});

describe('retries and dead letters', () => {
  it('retries 503 and delivers on the third attempt', async () => {
    await using sink = await startSink((_r, res, n) => res.writeHead(n < 3 ? 503 : 200).end());
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(trigger('t', { broker: 'b', subscriber: { uri: sink.url }, delivery: fast }));
    await s.post('/default/b', ceHeaders('r1'), '{}');
    await sink.waitFor(3);
    await expect.poll(() => s.dispatcher.stats.delivered).toBe(1);
    expect(s.dispatcher.stats.failedAttempts).toBe(2);
  });

  it('does not retry a 400 and dead-letters it with knativeerror* extensions', async () => {
    const bigBody = 'e'.repeat(3000);
    await using sink = await startSink((_r, res) =>
      res.writeHead(400, { 'content-type': 'text/plain' }).end(bigBody),
    );
    await using dls = await startSink();
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('t', {
        broker: 'b',
        subscriber: { uri: sink.url },
        delivery: { ...fast, deadLetterSink: { uri: dls.url } },
      }),
    );
    await s.post('/default/b', ceHeaders('dl1', 'demo.type', { 'ce-region': 'eu' }), '{"k":1}');
    const [got] = await dls.waitFor(1);
    expect(sink.received).toHaveLength(1);
    const a = got!.event.attrs;
    expect(a['id']).toBe('dl1');
    expect(a['region']).toBe('eu');
    expect(a['knativeerrorcode']).toBe('400');
    expect(a['knativeerrordest']).toBe(sink.url);
    const data = Buffer.from(String(a['knativeerrordata']), 'base64').toString();
    expect(data).toBe('e'.repeat(1024));
    expect(got!.event.data?.toString()).toBe('{"k":1}');
  });

  it('dead-letters after the retries run out; the Broker delivery spec is the default', async () => {
    await using sink = await startSink((_r, res) => res.writeHead(500).end('boom'));
    await using dls = await startSink();
    await using s = await testServer();
    await s.apply(
      broker('b', { delivery: { retry: 2, backoffDelay: 'PT0.01S', deadLetterSink: { uri: dls.url } } }),
    );
    await s.apply(trigger('t', { broker: 'b', subscriber: { uri: sink.url } }));
    await s.post('/default/b', ceHeaders('dl2'), '{}');
    const [got] = await dls.waitFor(1);
    expect(sink.received).toHaveLength(3);
    expect(got!.event.attrs['knativeerrorcode']).toBe('500');
    expect(Buffer.from(String(got!.event.attrs['knativeerrordata']), 'base64').toString()).toBe('boom');
  });

  it('a Trigger delivery spec overrides the Broker one', async () => {
    await using sink = await startSink((_r, res) => res.writeHead(500).end());
    await using s = await testServer();
    await s.apply(broker('b', { delivery: { retry: 5, backoffDelay: 'PT0.01S' } }));
    await s.apply(
      trigger('t', {
        broker: 'b',
        subscriber: { uri: sink.url },
        delivery: { retry: 1, backoffDelay: 'PT0.01S' },
      }),
    );
    await s.post('/default/b', ceHeaders('ov'), '{}');
    await expect.poll(() => s.dispatcher.stats.dropped).toBe(1);
    expect(sink.received).toHaveLength(2);
  });

  it('retries a subscriber that times out or refuses connections', async () => {
    await using hang = await startSink((_r, res, n) => {
      if (n > 1) res.writeHead(200).end();
    });
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('t', { broker: 'b', subscriber: { uri: hang.url }, delivery: { ...fast, timeout: 'PT0.2S' } }),
    );
    await s.apply(
      trigger('refused', {
        broker: 'b',
        subscriber: { uri: 'http://127.0.0.1:1/' },
        delivery: { retry: 1, backoffDelay: 'PT0.01S' },
      }),
    );
    await s.post('/default/b', ceHeaders('to'), '{}');
    await hang.waitFor(2);
    await expect.poll(() => s.dispatcher.stats.delivered).toBe(1);
    await expect.poll(() => s.dispatcher.stats.dropped).toBe(1);
  });

  it('honours Retry-After on 429 up to retryAfterMax', async () => {
    await using sink = await startSink((_r, res, n) =>
      res.writeHead(n === 1 ? 429 : 200, { 'retry-after': '1' }).end(),
    );
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('t', {
        broker: 'b',
        subscriber: { uri: sink.url },
        delivery: { ...fast, retryAfterMax: 'PT5S' },
      }),
    );
    await s.post('/default/b', ceHeaders('ra'), '{}');
    const got = await sink.waitFor(2);
    expect(got[1]!.at - got[0]!.at).toBeGreaterThanOrEqual(900);
  });

  it('computes Knative backoff, linear and exponential, with the optional cap', () => {
    const p: RetryPolicy = {
      retry: 20,
      backoffPolicy: 'exponential',
      backoffDelayMs: 1000,
      timeoutMs: 1000,
      retryAfterMaxMs: undefined,
      backoffMaxMs: undefined,
      deadLetterUri: undefined,
    };
    expect([1, 2, 3].map((n) => backoffMs(p, n))).toEqual([2000, 4000, 8000]);
    expect(backoffMs({ ...p, backoffPolicy: 'linear' }, 3)).toBe(3000);
    expect(backoffMs({ ...p, backoffMaxMs: 60_000 }, 20)).toBe(60_000);
  });
});

describe('replies', () => {
  it('a 200 with a CloudEvent goes back into the Broker; a 202 is never a reply; other bodies are ignored', async () => {
    await using replier = await startSink((r, res) => {
      const id = String(r.event.attrs['id']);
      const status = id === 'no-reply-202' ? 202 : 200;
      if (id === 'plain-body') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
        return;
      }
      res.writeHead(status, {
        'ce-specversion': '1.0',
        'ce-id': `reply-to-${id}`,
        'ce-source': '/replier',
        'ce-type': 'demo.reply',
        'content-type': 'application/json',
      });
      res.end('{"r":1}');
    });
    await using replies = await startSink();
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('ask', {
        broker: 'b',
        filter: { attributes: { type: 'demo.ask' } },
        subscriber: { uri: replier.url },
      }),
    );
    await s.apply(
      trigger('answers', {
        broker: 'b',
        filter: { attributes: { type: 'demo.reply' } },
        subscriber: { uri: replies.url },
      }),
    );
    await s.post('/default/b', ceHeaders('q1', 'demo.ask'), '{}');
    await s.post('/default/b', ceHeaders('no-reply-202', 'demo.ask'), '{}');
    await s.post('/default/b', ceHeaders('plain-body', 'demo.ask'), '{}');
    const [got] = await replies.waitFor(1);
    expect(got!.event.attrs['id']).toBe('reply-to-q1');
    expect(got!.event.data?.toString()).toBe('{"r":1}');
    await replier.waitFor(3);
    await expect.poll(() => s.dispatcher.stats.delivered).toBe(4);
    expect(replies.received).toHaveLength(1);
    expect(s.dispatcher.stats.failedAttempts).toBe(0);
  });

  it('knativebrokerttl ends a reply loop', async () => {
    await using looper = await startSink((r, res) => {
      res.writeHead(200, {
        'ce-specversion': '1.0',
        'ce-id': `${String(r.event.attrs['id'])}+`,
        'ce-source': '/loop',
        'ce-type': 'loop',
      });
      res.end();
    });
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(trigger('loop', { broker: 'b', subscriber: { uri: looper.url } }));
    await s.post('/default/b', ceHeaders('l', 'loop', { 'ce-knativebrokerttl': '3' }), '{}');
    await looper.waitFor(3);
    await expect.poll(() => s.dispatcher.inflight() + s.ingress.lag.get('default/b')).toBe(0);
    expect(looper.received.map((r) => r.event.attrs['id'])).toEqual(['l', 'l+', 'l++']);
  });
});

describe('isolation and lifecycle', () => {
  it('a hanging subscriber never holds up another Trigger', async () => {
    await using hang = await startSink(() => undefined);
    await using ok = await startSink();
    await using s = await testServer({ concurrency: 4 });
    await s.apply(broker('b'));
    await s.apply(
      trigger('hangs', { broker: 'b', subscriber: { uri: hang.url }, delivery: { timeout: 'PT30S' } }),
    );
    await s.apply(trigger('healthy', { broker: 'b', subscriber: { uri: ok.url } }));
    for (let i = 0; i < 50; i++)
      expect((await s.post('/default/b', ceHeaders(`i${i}`), '{}')).status).toBe(202);
    await ok.waitFor(50);
    expect(hang.received.length).toBe(4);
  });

  it('a Trigger that falls behind reads its backlog from the store, without delivering twice', async () => {
    await using sink = await startSink((_r, res) => setTimeout(() => res.writeHead(202).end(), 2));
    await using s = await testServer({ concurrency: 8, deliveryBufferSize: 5 });
    await s.apply(broker('b'));
    await s.apply(trigger('slow', { broker: 'b', subscriber: { uri: sink.url } }));
    // 64 producers, one event per request: the Trigger keeps falling behind and catching up.
    let n = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (n < 2000) {
          const id = `bk-${n++}`;
          expect((await s.post('/default/b', ceHeaders(id), '{}')).status).toBe(202);
        }
      }),
    );
    await sink.waitFor(2000);
    await expect.poll(() => s.dispatcher.inflight() + s.ingress.lag.get('default/b')).toBe(0);
    const ids = sink.received.map((r) => String(r.event.attrs['id']));
    expect(ids.length).toBe(2000);
    expect(new Set(ids).size).toBe(2000);
  });

  it('a Trigger applied before its Broker turns Ready when the Broker appears', async () => {
    await using sink = await startSink();
    await using s = await testServer();
    const t = (await (
      await s.apply(trigger('early', { broker: 'late', subscriber: { uri: sink.url } }))
    ).json()) as {
      status: { conditions: { type: string; status: string; reason: string }[] };
    };
    expect(t.status.conditions[0]).toMatchObject({
      type: 'Ready',
      status: 'False',
      reason: 'BrokerDoesNotExist',
    });
    await s.apply(broker('late'));
    const again = (await (
      await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/early`)
    ).json()) as typeof t;
    expect(again.status.conditions[0]).toMatchObject({ type: 'Ready', status: 'True' });
    expect((await s.post('/default/late', ceHeaders('e1'), '{}')).status).toBe(202);
    await sink.waitFor(1);
  });

  it('a subscriber ref to a Broker forwards events into that Broker', async () => {
    await using sink = await startSink();
    await using s = await testServer();
    await s.apply(broker('front'));
    await s.apply(broker('back'));
    await s.apply(
      trigger('fwd', {
        broker: 'front',
        subscriber: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'back' } },
      }),
    );
    await s.apply(trigger('out', { broker: 'back', subscriber: { uri: sink.url } }));
    await s.post('/default/front', ceHeaders('fw'), '{}');
    const [got] = await sink.waitFor(1);
    expect(got!.event.attrs['id']).toBe('fw');
  });

  it('deleting a Trigger drops its pending deliveries', async () => {
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('gone', {
        broker: 'b',
        subscriber: { uri: 'http://127.0.0.1:1/' },
        delivery: { retry: 100, backoffDelay: 'PT10S' },
      }),
    );
    await s.post('/default/b', ceHeaders('p'), '{}');
    await expect.poll(async () => (await s.store.deliveries.counts()).size).toBe(1);
    const res = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/gone`, {
      method: 'DELETE',
    });
    expect(res.status).toBe(200);
    await expect.poll(async () => (await s.store.deliveries.counts()).size).toBe(0);
  });
});
