/**
 * A flood well above what the subscriber keeps up with, against the real process: ingress answers 429
 * with Retry-After once the Broker's lag ceiling is reached, memory stays under a ceiling, everything
 * acknowledged is delivered, and the Broker accepts again when the flood stops.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startLoad } from './helpers/load.js';
import { serve } from './helpers/process.js';
import { peakRssMiB, report } from './helpers/report.js';
import { startSink } from './helpers/sink.js';

const SECONDS = Number(process.env['TRELLIS_FLOOD_SECONDS'] ?? 4);
/** The documented ceiling (docs/reliability.md) for this scenario. */
const RSS_CEILING_MIB = 400;

it(`a ${SECONDS} s flood is refused with 429 at the lag ceiling, within the memory ceiling, losing nothing`, {
  timeout: 180_000 + SECONDS * 5_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-flood-'));
  // About 500 events/s at most: 10 in flight, 20 ms each.
  await using sink = await startSink((_r, res) => setTimeout(() => res.writeHead(202).end(), 20));
  const file = join(dir, 'res.yaml');
  writeFileSync(
    file,
    `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n  annotations:\n    trellis.dev/max-lag: "2000"\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  subscriber:\n    uri: ${sink.url}\n`,
  );
  const server = await serve(['--data-dir', join(dir, 'data'), '-f', file, '--concurrency', '10']);
  try {
    const load = startLoad(server.url, { concurrency: 32, prefix: 'fl', types: ['t'] });
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    await load.stop();
    const acked = [...load.acked];
    expect(load.failed, 'the flood was never refused').toBeGreaterThan(0);
    const probe = await fetch(`${server.url}/default/b`, {
      method: 'POST',
      headers: { 'ce-specversion': '1.0', 'ce-id': 'probe', 'ce-source': '/flood', 'ce-type': 't' },
    });
    if (probe.status === 429) {
      expect(probe.headers.get('retry-after')).toBe('1');
      expect(((await probe.json()) as { code: string }).code).toBe('TRELLIS_ERR_BROKER_LAGGING');
    }
    await sink.waitFor(acked.length, 120_000);
    const got = new Set(sink.received.map((r) => String(r.event.attrs['id'])));
    const lost = acked.filter((id) => !got.has(id)).length;
    expect(lost).toBe(0);
    const delivered = sink.received.length;
    const duplicated = delivered - got.size;
    // Caught up: the Broker accepts again.
    await expect
      .poll(
        async () =>
          (
            await fetch(`${server.url}/default/b`, {
              method: 'POST',
              headers: { 'ce-specversion': '1.0', 'ce-id': 'after', 'ce-source': '/flood', 'ce-type': 't' },
            })
          ).status,
        { timeout: 30_000 },
      )
      .toBe(202);
    const rss = peakRssMiB(server.child.pid!);
    expect(rss).toBeLessThan(RSS_CEILING_MIB);
    console.log(
      `flood: ${SECONDS} s, sent ${load.sent}, acknowledged ${acked.length}, refused ${load.failed}, lost ${lost}, peak RSS ${rss} MiB`,
    );
    report({
      scenario: `flood: ${SECONDS} s at 32 connections, subscriber ~500/s, max-lag 2000`,
      sent: load.sent,
      acknowledged: acked.length,
      delivered,
      duplicated,
      lost,
      deadLettered: 0,
      peakRssMiB: rss,
    });
  } finally {
    server.child.kill('SIGTERM');
    await server.exited();
    rmSync(dir, { recursive: true, force: true });
  }
});
