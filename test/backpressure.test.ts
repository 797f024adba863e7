/** Backpressure at ingress: a Broker's lag ceiling (429) and the store's write queue (503), both with Retry-After. */
import { describe, expect, it } from 'vitest';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

describe('backpressure', () => {
  it("answers 429 with Retry-After while a Broker's lag is at its ceiling, and recovers", async () => {
    await using s = await testServer();
    const b = broker('b');
    (b.metadata as Record<string, unknown>)['annotations'] = { 'trellis.dev/max-lag': '5' };
    expect((await s.apply(b)).status).toBe(201);
    // A subscriber that is down, with a long backoff: deliveries stay pending.
    await s.apply(
      trigger('stuck', {
        broker: 'b',
        subscriber: { uri: 'http://127.0.0.1:1/' },
        delivery: { retry: 100, backoffDelay: 'PT10S' },
      }),
    );
    for (let i = 0; i < 5; i++)
      expect((await s.post('/default/b', ceHeaders(`l${i}`), '{}')).status).toBe(202);
    const refused = await s.post('/default/b', ceHeaders('l5'), '{}');
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    const body = (await refused.json()) as { code: string; message: string; lag: number; maxLag: number };
    expect(body.code).toBe('TRELLIS_ERR_BROKER_LAGGING');
    expect(body).toMatchObject({ lag: 5, maxLag: 5 });
    // The stuck Trigger goes away: its pending deliveries with it, and the Broker accepts again.
    await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/stuck`, {
      method: 'DELETE',
    });
    await expect.poll(async () => (await s.post('/default/b', ceHeaders('again'), '{}')).status).toBe(202);
  });

  it('a Broker without Triggers has no lag', async () => {
    await using s = await testServer({ maxLag: 1 });
    await s.apply(broker('b'));
    for (let i = 0; i < 3; i++)
      expect((await s.post('/default/b', ceHeaders(`n${i}`), '{}')).status).toBe(202);
  });

  it('refuses a bad max-lag annotation with the field path', async () => {
    await using s = await testServer();
    const b = broker('b');
    (b.metadata as Record<string, unknown>)['annotations'] = { 'trellis.dev/max-lag': 'lots' };
    const res = await s.apply(b);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { field: string }).field).toBe('metadata.annotations.trellis.dev/max-lag');
  });

  it('answers 503 with Retry-After when the store falls behind; whatever got 202 is delivered', async () => {
    await using sink = await startSink();
    await using s = await testServer({ maxPendingWrites: 2 });
    await s.apply(broker('b'));
    await s.apply(trigger('t', { broker: 'b', subscriber: { uri: sink.url } }));
    const answers = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const res = await s.post('/default/b', ceHeaders(`f${i}`), '{}');
        if (res.status === 503) {
          expect(res.headers.get('retry-after')).toBe('1');
          expect(((await res.json()) as { code: string }).code).toBe('TRELLIS_ERR_OVERLOADED');
        }
        return { id: `f${i}`, status: res.status };
      }),
    );
    const accepted = answers.filter((a) => a.status === 202).map((a) => a.id);
    expect(answers.every((a) => a.status === 202 || a.status === 503)).toBe(true);
    expect(answers.some((a) => a.status === 503)).toBe(true);
    expect(accepted.length).toBeGreaterThan(0);
    await sink.waitFor(accepted.length);
    expect(new Set(sink.received.map((r) => String(r.event.attrs['id'])))).toEqual(new Set(accepted));
  });
});
