/**
 * Pending deliveries belong to the resource that made them: deleting one subscription removes its own
 * pending deliveries and no others — not those of a Sequence's steps or a source's sink — and in a
 * cluster a process does not remove those of a resource it has not heard of yet.
 */
import { describe, expect, it } from 'vitest';
import { run } from './helpers/process.js';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

describe('pending deliveries when a subscription is deleted', () => {
  it('a Sequence step and a source keep theirs, retried until their subscriber takes them', async () => {
    let healthy = false;
    await using failing = await startSink((_r, res) => res.writeHead(healthy ? 202 : 503).end());
    await using other = await startSink();
    await using s = await testServer();
    const step = { retry: 1000, backoffPolicy: 'linear', backoffDelay: 'PT0.1S' };
    for (const doc of [
      broker('default'),
      trigger('other', { broker: 'default', subscriber: { uri: other.url } }),
      {
        apiVersion: 'flows.knative.dev/v1',
        kind: 'Sequence',
        metadata: { name: 'seq', namespace: 'default' },
        spec: { steps: [{ uri: failing.url, delivery: step }] },
      },
      {
        apiVersion: 'sources.knative.dev/v1alpha1',
        kind: 'IntegrationSource',
        metadata: { name: 'tick', namespace: 'default' },
        spec: {
          timer: { period: 100, repeatCount: 1, message: 'tick' },
          sink: { uri: `${failing.url}tick` },
        },
      },
    ])
      expect((await s.apply(doc)).status, JSON.stringify(doc)).toBeLessThan(300);
    await s.settled();
    expect((await s.post('/sequences/default/seq', ceHeaders('in-seq'), '{}')).status).toBe(202);
    const attempts = (path: string) => failing.received.filter((r) => r.path === path).length;
    // Both are failing and pending.
    await expect.poll(() => attempts('/') > 0 && attempts('/tick') > 0, { timeout: 10_000 }).toBe(true);
    // A source's wide row shows its delivery to the sink: nothing delivered, failures, one pending.
    const wide = await run(['get', 'integrationsources', '-o', 'wide'], { env: { TRELLIS_SERVER: s.url } });
    expect(wide.stdout).toMatch(/DELIVERED\s+FAILED\s+DEAD-LETTERED\s+LAG/);
    expect(wide.stdout).toMatch(/^tick\s.*\s0\s+[1-9]\d*\s+0\s+1\s*$/m);
    // Another subscription goes; the dispatcher cleans up after it.
    const del = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/other`, {
      method: 'DELETE',
    });
    expect(del.status).toBe(200);
    await s.settled();
    const seen = { seq: attempts('/'), tick: attempts('/tick') };
    // Still retried after the cleanup, and taken once the subscriber is back.
    await expect
      .poll(() => attempts('/') > seen.seq + 2 && attempts('/tick') > seen.tick + 2, { timeout: 10_000 })
      .toBe(true);
    const from = failing.received.length;
    healthy = true;
    const paths = () => new Set(failing.received.slice(from).map((r) => r.path));
    await expect.poll(() => [...paths()].sort(), { timeout: 10_000 }).toEqual(['/', '/tick']);
  });
});
