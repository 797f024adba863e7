/**
 * The store conformance suite: every adapter runs it (SQLite today, NATS JetStream later).
 * `open(dir)` must open a store persisted under `dir`, so durability across reopen is tested too.
 * An adapter that cannot do something names the case in `skip` with the reason (printed, never silent).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it as vitestIt } from 'vitest';
import type { CloudEvent } from '../src/cloudevents/event.js';
import { ConflictError, type ResourceEvent, type ResourceObject, type Store } from '../src/store/types.js';

function ev(id: string, data?: string): CloudEvent {
  const attrs = { specversion: '1.0', id, source: '/s', type: 't', n: 7, b: true };
  return data === undefined ? { attrs } : { attrs, data: Buffer.from(data) };
}

function res(name: string, spec: Record<string, unknown> = {}): ResourceObject {
  return {
    apiVersion: 'eventing.knative.dev/v1',
    kind: 'Broker',
    metadata: {
      name,
      namespace: 'ns',
      uid: `uid-${name}`,
      generation: 1,
      resourceVersion: '',
      creationTimestamp: new Date(0).toISOString(),
    },
    spec,
  };
}

/**
 * Fetches until `want` deliveries came or a few seconds passed: `fetch` leases *up to* `max`, and a
 * shared store hands out what has reached this process so far.
 */
async function fetchAll(s: Store, sub: string, want: number, max = 1000) {
  const got = [];
  const deadline = Date.now() + 5000;
  while (got.length < want && Date.now() < deadline) got.push(...(await s.deliveries.fetch(sub, max)));
  return got;
}

export function runStoreConformance(
  adapter: string,
  open: (dir: string) => Promise<Store>,
  skip: Readonly<Record<string, string>> = {},
): void {
  describe(`store conformance: ${adapter}`, () => {
    // Each case runs unless the adapter says why it cannot.
    const it = (name: string, fn: () => Promise<void>) => {
      const why = skip[name];
      if (why === undefined) vitestIt(name, fn);
      else vitestIt.skip(`${name} (skipped for ${adapter}: ${why})`, fn);
    };
    const dirs: string[] = [];
    const stores: Store[] = [];
    const fresh = async (dir?: string) => {
      const d = dir ?? mkdtempSync(join(tmpdir(), 'trellis-store-'));
      if (!dir) dirs.push(d);
      const s = await open(d);
      stores.push(s);
      return { s, dir: d };
    };
    afterEach(async () => {
      for (const s of stores.splice(0)) await s.close().catch(() => undefined);
      for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    });

    it('appends events with increasing sequence numbers and reads them back', async () => {
      const { s } = await fresh();
      const [a, b] = await Promise.all([
        s.events.append([{ stream: 'ns/b', event: ev('1', 'x'), deliveries: ['sub'] }]),
        s.events.append([{ stream: 'ns/b', event: ev('2'), deliveries: ['sub'] }]),
      ]);
      expect(b![0]!).toBeGreaterThan(a![0]!);
      expect(await s.events.getEvent('ns/b', a![0]!)).toEqual(ev('1', 'x'));
      expect(await s.events.getEvent('ns/b', b![0]!)).toEqual(ev('2'));
    });

    it('keeps pending deliveries per subscription, in order', async () => {
      const { s } = await fresh();
      const seqs = await s.events.append([
        { stream: 'ns/b', event: ev('1'), deliveries: ['a', 'b'] },
        { stream: 'ns/b', event: ev('2'), deliveries: ['a'] },
        { stream: 'ns/b', event: ev('3'), deliveries: [] },
      ]);
      const pa = await s.deliveries.peek('a', 0, 10);
      expect(pa.map((p) => p.event.attrs['id'])).toEqual(['1', '2']);
      expect(pa[0]).toMatchObject({ subscription: 'a', seq: seqs[0], attempt: 0 });
      expect((await s.deliveries.peek('a', seqs[0]!, 10)).map((p) => p.seq)).toEqual([seqs[1]]);
      expect((await s.deliveries.peek('b', 0, 10)).length).toBe(1);
      expect(await s.deliveries.counts()).toEqual(
        new Map([
          ['a', 2],
          ['b', 1],
        ]),
      );
    });

    it("reports each subscription's backlog: pending count and when the oldest was stored", async () => {
      const { s } = await fresh();
      const before = Date.now();
      const [first] = await s.events.append([{ stream: 'ns/b', event: ev('1'), deliveries: ['a', 'b'] }]);
      await s.events.append([{ stream: 'ns/b', event: ev('2'), deliveries: ['a'] }]);
      const after = Date.now();
      const b = await s.deliveries.backlog();
      expect([...b.keys()].sort()).toEqual(['a', 'b']);
      expect(b.get('a')!.pending).toBe(2);
      expect(b.get('b')!.pending).toBe(1);
      for (const x of b.values()) {
        // Store clocks round to the millisecond (NATS to its own clock, here the same machine's).
        expect(x.oldestMs).toBeGreaterThanOrEqual(before - 1000);
        expect(x.oldestMs).toBeLessThanOrEqual(after + 1000);
      }
      const [got] = await fetchAll(s, 'b', 1, 1);
      expect(got!.seq).toBe(first);
      await s.deliveries.ack('b', first!);
      await expect.poll(async () => (await s.deliveries.backlog()).has('b')).toBe(false);
    });

    it('leases: a fetched delivery is not fetched again until it is released', async () => {
      const { s } = await fresh();
      const seqs = await s.events.append(
        ['1', '2', '3'].map((id) => ({ stream: 'ns/b', event: ev(id), deliveries: ['a'] })),
      );
      const first = await fetchAll(s, 'a', 2, 2);
      expect(first.map((l) => l.event.attrs['id'])).toEqual(['1', '2']);
      expect((await fetchAll(s, 'a', 1)).map((l) => l.seq)).toEqual([seqs[2]]);
      expect(await s.deliveries.fetch('a', 10)).toEqual([]);
      // Settled ones are gone; unsettled ones come back after a release (a worker that stopped).
      await s.deliveries.ack('a', seqs[0]!);
      await s.deliveries.terminate('a', seqs[1]!);
      s.deliveries.release('a');
      expect((await fetchAll(s, 'a', 1)).map((l) => l.seq)).toEqual([seqs[2]]);
      // The in-memory fast path, where an adapter has it: an appended delivery claimed before any fetch
      // is not fetched again. Without it, claim says false and fetch returns the delivery.
      const [four] = await s.events.append([{ stream: 'ns/b', event: ev('4'), deliveries: ['a'] }]);
      if (s.deliveries.claim('a', four!)) {
        expect(await s.deliveries.fetch('a', 10)).toEqual([]);
        expect(s.deliveries.claim('a', four!)).toBe(false);
      } else expect((await fetchAll(s, 'a', 1)).map((l) => l.seq)).toEqual([four]);
    });

    it('enqueues deliveries of stored events (a replay), also behind where the leases have reached', async () => {
      const { s, dir } = await fresh();
      const seqs = await s.events.append(
        ['1', '2', '3'].map((id) => ({ stream: 'ns/b', event: ev(id), deliveries: id === '3' ? ['a'] : [] })),
      );
      // The subscription's leases are past the first two events already.
      expect((await fetchAll(s, 'a', 1)).map((l) => l.seq)).toEqual([seqs[2]]);
      const history = await s.events.read('ns/b', 0, 10);
      await s.deliveries.enqueue('a', 'ns/b', history.slice(0, 2));
      const replayed = await fetchAll(s, 'a', 2);
      expect(replayed.map((l) => l.event.attrs['id']).sort()).toEqual(['1', '2']);
      expect(replayed.every((l) => l.attempt === 0)).toBe(true);
      // Durable: after a reopen, the replayed deliveries not settled are pending again.
      await s.deliveries.ack('a', seqs[0]!);
      await s.deliveries.ack('a', seqs[2]!);
      await s.close();
      const { s: again } = await fresh(dir);
      expect((await fetchAll(again, 'a', 1)).map((l) => l.event.attrs['id'])).toEqual(['2']);
    });

    it('acks, retries and terminates deliveries durably', async () => {
      const { s, dir } = await fresh();
      const [one, two, three] = await s.events.append([
        { stream: 'ns/b', event: ev('1'), deliveries: ['a'] },
        { stream: 'ns/b', event: ev('2'), deliveries: ['a'] },
        { stream: 'ns/b', event: ev('3'), deliveries: ['a'] },
      ]);
      await fetchAll(s, 'a', 3);
      await s.deliveries.ack('a', one!);
      await s.deliveries.retry('a', two!, 3, 123456);
      await s.deliveries.terminate('a', three!);
      await s.close();
      const { s: again } = await fresh(dir);
      const p = await fetchAll(again, 'a', 1);
      expect(p).toHaveLength(1);
      expect(p[0]).toMatchObject({ seq: two, attempt: 3, dueAt: 123456 });
    });

    it('reads a stream from a position', async () => {
      const { s } = await fresh();
      const seqs = await s.events.append([
        { stream: 'ns/b', event: ev('1'), deliveries: ['a'] },
        { stream: 'ns/other', event: ev('x'), deliveries: ['a'] },
        { stream: 'ns/b', event: ev('2'), deliveries: ['a'] },
        { stream: 'ns/b', event: ev('3'), deliveries: ['a'] },
      ]);
      expect((await s.events.read('ns/b', 0, 10)).map((r) => r.event.attrs['id'])).toEqual(['1', '2', '3']);
      expect((await s.events.read('ns/b', seqs[0]!, 1)).map((r) => r.seq)).toEqual([seqs[2]]);
      expect(await s.events.read('ns/none', 0, 10)).toEqual([]);
    });

    it('survives a reopen with every acknowledged append', async () => {
      const { s, dir } = await fresh();
      const items = Array.from({ length: 200 }, (_, i) => ({
        stream: 'ns/b',
        event: ev(String(i)),
        deliveries: ['a'],
      }));
      await Promise.all(items.map((it) => s.events.append([it])));
      await s.close();
      const { s: again } = await fresh(dir);
      expect((await fetchAll(again, 'a', 200)).length).toBe(200);
    });

    it('rejects appends after close', async () => {
      const { s } = await fresh();
      await s.close();
      await expect(s.events.append([{ stream: 'ns/b', event: ev('1'), deliveries: [] }])).rejects.toThrow();
    });

    it('keeps dead letters through compaction; removes events by sequence number', async () => {
      const { s } = await fresh();
      const [dl1, dl2] = await s.events.append([
        { stream: 'deadletters/ns/b', event: ev('d1'), deliveries: [] },
        { stream: 'deadletters/ns/b', event: ev('d2'), deliveries: [] },
      ]);
      await s.events.append([{ stream: 'ns/b', event: ev('plain'), deliveries: [] }]);
      // Compaction removes what is older than now: poll past the millisecond the event was stored in.
      await expect
        .poll(async () => {
          await s.compact(0);
          return (await s.events.read('ns/b', 0, 10)).length;
        })
        .toBe(0);
      expect((await s.events.read('deadletters/ns/b', 0, 10)).map((r) => r.event.attrs['id'])).toEqual([
        'd1',
        'd2',
      ]);
      expect(await s.events.remove('deadletters/ns/b', [dl1!, 999_999])).toBe(1);
      expect((await s.events.read('deadletters/ns/b', 0, 10)).map((r) => r.seq)).toEqual([dl2]);
      expect(await s.events.remove('nothing/here', [1])).toBe(0);
    });

    it('drops a subscription and compacts delivered events', async () => {
      const { s } = await fresh();
      const [a, b] = await s.events.append([
        { stream: 'ns/b', event: ev('1'), deliveries: ['x'] },
        { stream: 'ns/b', event: ev('2'), deliveries: ['y'] },
      ]);
      await s.deliveries.dropSubscription('x');
      expect(await s.deliveries.fetch('x', 10)).toEqual([]);
      expect(await s.compact(0)).toBe(1);
      expect(await s.events.getEvent('ns/b', a!)).toBeUndefined();
      expect(await s.events.getEvent('ns/b', b!)).toBeDefined();
    });

    it('stores resources with optimistic concurrency and a watch', async () => {
      const { s } = await fresh();
      const seen: ResourceEvent[] = [];
      const stop = s.resources.watch((e) => seen.push(e));
      const created = await s.resources.put(res('a'), '');
      expect(created.metadata.resourceVersion).not.toBe('');
      await expect(s.resources.put(res('a'), '')).rejects.toBeInstanceOf(ConflictError);
      const updated = await s.resources.put(res('a', { x: 1 }), created.metadata.resourceVersion);
      expect(Number(updated.metadata.resourceVersion)).toBeGreaterThan(
        Number(created.metadata.resourceVersion),
      );
      await expect(s.resources.put(res('a'), created.metadata.resourceVersion)).rejects.toBeInstanceOf(
        ConflictError,
      );
      await s.resources.put(res('b'));
      expect((await s.resources.list('Broker', 'ns')).map((r) => r.metadata.name)).toEqual(['a', 'b']);
      expect(await s.resources.list('Broker', 'other')).toEqual([]);
      expect((await s.resources.get('Broker', 'ns', 'a'))?.spec).toEqual({ x: 1 });
      expect(await s.resources.delete('Broker', 'ns', 'a')).toBeDefined();
      expect(await s.resources.get('Broker', 'ns', 'a')).toBeUndefined();
      expect(await s.resources.delete('Broker', 'ns', 'a')).toBeUndefined();
      // A watch may deliver a moment later (a KV watch over the network): poll for it.
      await expect
        .poll(() => seen.map((e) => `${e.type} ${e.object.metadata.name}`))
        .toEqual(['ADDED a', 'MODIFIED a', 'ADDED b', 'DELETED a']);
      stop();
      await s.resources.put(res('c'));
      expect(seen.map((e) => e.object.metadata.name)).not.toContain('c');
    });

    it('keeps resource versions increasing across a reopen', async () => {
      const { s, dir } = await fresh();
      const a = await s.resources.put(res('a'));
      await s.close();
      const { s: again } = await fresh(dir);
      const b = await again.resources.put(res('b'));
      expect(Number(b.metadata.resourceVersion)).toBeGreaterThan(Number(a.metadata.resourceVersion));
    });
  });
}
