/** Ordered delivery (Knative Kafka broker's `delivery.order: ordered`), opt-in per Trigger or Subscription. */
import { describe, expect, it } from 'vitest';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const ORDERED = { 'kafka.eventing.knative.dev/delivery.order': 'ordered' };

/** A subscriber that fails the first attempt of every third event, and notes what overlaps per key. */
async function flakySubscriber() {
  const inFlight = new Set<string>();
  const overlaps: string[] = [];
  const tried = new Set<string>();
  const delivered = new Map<string, number[]>();
  const sink = await startSink((r, res) => {
    const key = String(r.event.attrs['partitionkey'] ?? '');
    const id = String(r.event.attrs['id']);
    const n = Number(id.split('-')[1]);
    if (inFlight.has(key)) overlaps.push(`${key}: ${id} while another was in flight`);
    inFlight.add(key);
    setTimeout(() => {
      inFlight.delete(key);
      if (n % 3 === 0 && !tried.has(id)) {
        tried.add(id);
        res.writeHead(503).end();
        return;
      }
      delivered.set(key, [...(delivered.get(key) ?? []), n]);
      res.writeHead(202).end();
    }, 1);
  });
  return { sink, overlaps, delivered };
}

describe('ordered delivery', () => {
  it('delivers each partition key one at a time and in order, retries included', async () => {
    const { sink, overlaps, delivered } = await flakySubscriber();
    await using _s = sink;
    await using s = await testServer({ concurrency: 16 });
    await s.apply(broker('b'));
    const t = trigger('ordered', {
      broker: 'b',
      subscriber: { uri: sink.url },
      delivery: { retry: 3, backoffDelay: 'PT0.02S' },
    });
    const res = await s.apply({ ...t, metadata: { ...t.metadata, annotations: ORDERED } });
    expect(res.status).toBe(201);
    const keys = ['k0', 'k1', 'k2', 'k3'];
    for (let i = 0; i < 120; i++)
      expect(
        (await s.post('/default/b', ceHeaders(`e-${i}`, 't', { 'ce-partitionkey': keys[i % 4]! }), '{}'))
          .status,
      ).toBe(202);
    await expect
      .poll(() => [...delivered.values()].reduce((a, l) => a + l.length, 0), { timeout: 30_000 })
      .toBe(120);
    expect(overlaps).toEqual([]);
    for (const [i, k] of keys.entries()) {
      const want = Array.from({ length: 30 }, (_, j) => j * 4 + i);
      expect([k, delivered.get(k)]).toEqual([k, want]);
    }
  });

  it("the annotation's value is validated", async () => {
    await using s = await testServer();
    const t = trigger('t', { broker: 'b', subscriber: { uri: 'http://127.0.0.1:9/' } });
    const bad = await s.apply({
      ...t,
      metadata: { ...t.metadata, annotations: { 'kafka.eventing.knative.dev/delivery.order': 'sorted' } },
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { field: string }).field).toBe(
      'metadata.annotations.kafka.eventing.knative.dev/delivery.order',
    );
  });
});
