/**
 * Cluster mode: two `trellis serve --store nats` processes on the NATS server of this machine, one mesh.
 * Each test run uses its own stream prefix and removes it afterwards.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destroyNatsStore } from '../src/store/nats/nats-store.js';
import { NATS_URL, natsUp } from './helpers/nats.js';
import { run, type Served, serve } from './helpers/process.js';
import { ceHeaders } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const NATS = NATS_URL;
const up = await natsUp();

describe.runIf(up)('two processes on one NATS', () => {
  const prefix = `c${randomBytes(5).toString('hex')}`;
  let dir: string;
  let a: Served;
  let b: Served;
  const args = () => [
    '--store',
    'nats',
    '--nats-url',
    NATS,
    '--nats-prefix',
    prefix,
    '--data-dir',
    join(dir, 'unused'),
  ];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trellis-cluster-'));
    a = await serve(args());
    b = await serve(args());
  });
  afterAll(async () => {
    for (const s of [a, b]) {
      s?.child.kill('SIGTERM');
      await s?.exited();
    }
    await destroyNatsStore(NATS, prefix);
    rmSync(dir, { recursive: true, force: true });
  });

  const ready = (url: string, path: string) =>
    expect
      .poll(
        async () => {
          const r = await fetch(`${url}${path}`);
          if (r.status !== 200) return 'missing';
          const o = (await r.json()) as { status?: { conditions?: { type: string; status: string }[] } };
          return o.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? 'unknown';
        },
        { timeout: 20_000 },
      )
      .toBe('True');

  it('config applied on one process is served by both; every event reaches the subscriber once', async () => {
    await using sink = await startSink();
    const yaml = `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: shop}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: all}\nspec:\n  broker: shop\n  subscriber: {uri: '${sink.url}'}\n`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: a.url } })).code).toBe(0);
    await ready(b.url, '/apis/eventing.knative.dev/v1/namespaces/default/triggers/all');
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) {
      const target = i % 2 === 0 ? a : b;
      const r = await fetch(`${target.url}/default/shop`, {
        method: 'POST',
        headers: ceHeaders(`c${i}`),
        body: '{}',
      });
      expect(r.status).toBe(202);
      ids.push(`c${i}`);
    }
    await expect
      .poll(() => new Set(sink.received.map((r) => String(r.event.attrs['id']))).size, { timeout: 30_000 })
      .toBe(100);
    const dupes = sink.received.length - 100;
    console.log(`cluster: 100 events through two processes, ${dupes} duplicates`);
    expect(dupes).toBe(0);
  });

  it('retries follow the DeliverySpec exactly across processes: retry 2 means 3 attempts and one dead letter', async () => {
    await using failing = await startSink((_r, res) => res.writeHead(500).end());
    await using dls = await startSink();
    const yaml = `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: pay}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: flaky}\nspec:\n  broker: pay\n  subscriber: {uri: '${failing.url}'}\n  delivery:\n    retry: 2\n    backoffDelay: PT0.05S\n    deadLetterSink: {uri: '${dls.url}'}\n`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: b.url } })).code).toBe(0);
    await ready(a.url, '/apis/eventing.knative.dev/v1/namespaces/default/triggers/flaky');
    await ready(b.url, '/apis/eventing.knative.dev/v1/namespaces/default/triggers/flaky');
    for (let i = 0; i < 5; i++)
      expect(
        (await fetch(`${a.url}/default/pay`, { method: 'POST', headers: ceHeaders(`f${i}`), body: '{}' }))
          .status,
      ).toBe(202);
    await dls.waitFor(5, 30_000);
    // Give a wrongly multiplied redelivery time to show itself: wait until every delivery is settled.
    await expect.poll(async () => (await fetch(`${a.url}/readyz`)).status).toBe(200);
    expect(failing.received).toHaveLength(15);
    expect(dls.received).toHaveLength(5);
  });
});
