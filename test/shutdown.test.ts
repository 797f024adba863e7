/** Graceful shutdown of the real process under load: SIGTERM exits 0 and loses nothing acknowledged. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startLoad } from './helpers/load.js';
import { serve } from './helpers/process.js';
import { peakRssMiB, report } from './helpers/report.js';
import { startSink } from './helpers/sink.js';

it('SIGTERM under load exits 0; after a restart every acknowledged event is delivered', {
  timeout: 60_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-shutdown-'));
  // A slow subscriber, so that deliveries are in flight and pending when the signal comes.
  await using sink = await startSink((_r, res) => setTimeout(() => res.writeHead(200).end(), 5));
  const file = join(dir, 'res.yaml');
  writeFileSync(
    file,
    `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  subscriber:\n    uri: ${sink.url}\n`,
  );
  const args = ['--data-dir', join(dir, 'data'), '-f', file];
  try {
    const first = await serve(args);
    const load = startLoad(first.url, { concurrency: 16, prefix: 'sd', types: ['t'] });
    await expect.poll(() => load.acked.size, { timeout: 30_000 }).toBeGreaterThan(500);
    const rss = peakRssMiB(first.child.pid!);
    first.child.kill('SIGTERM');
    const { code } = await first.exited();
    await load.stop();
    expect(code).toBe(0);
    expect(first.output()).toContain('SIGTERM: shutting down');
    const acked = [...load.acked];
    expect(acked.length).toBeGreaterThan(100);
    const second = await serve(args);
    try {
      await expect
        .poll(
          () => {
            const got = new Set(sink.received.map((r) => String(r.event.attrs['id'])));
            return acked.filter((id) => !got.has(id)).length;
          },
          {
            timeout: 30_000,
          },
        )
        .toBe(0);
      const got = new Set(sink.received.map((r) => String(r.event.attrs['id'])));
      report({
        scenario: 'graceful shutdown: SIGTERM under load, then restart',
        sent: load.sent,
        acknowledged: acked.length,
        delivered: sink.received.length,
        duplicated: sink.received.length - got.size,
        lost: 0,
        deadLettered: 0,
        peakRssMiB: Math.max(rss, peakRssMiB(second.child.pid!)),
      });
    } finally {
      second.child.kill('SIGTERM');
      await second.exited();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
