/**
 * Crash safety with the real process: under load, `kill -9` the server at random moments and restart it
 * on the same data directory; every event that got a 202 reaches every matching subscriber at least once.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startLoad } from './helpers/load.js';
import { serve } from './helpers/process.js';
import { peakRssMiB, report } from './helpers/report.js';
import { startSink } from './helpers/sink.js';

const CYCLES = Number(process.env['TRELLIS_CRASH_CYCLES'] ?? 5);

it(`every acknowledged event is delivered after ${CYCLES} kill -9 restarts`, {
  timeout: 60_000 + CYCLES * 15_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-crash-'));
  await using a = await startSink();
  await using b = await startSink();
  const file = join(dir, 'res.yaml');
  const t = (name: string, uri: string, filter: string) =>
    `---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: ${name}\nspec:\n  broker: b\n${filter}  subscriber:\n    uri: ${uri}\n  delivery:\n    retry: 1000\n    backoffDelay: PT0.05S\n    backoffMax: PT0.5S\n`;
  writeFileSync(
    file,
    `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n${t('all', a.url, '')}${t('odd', b.url, '  filter:\n    attributes:\n      type: odd\n')}`,
  );
  const args = ['--data-dir', join(dir, 'data'), '-f', file];
  let server = await serve(args);
  const load = startLoad(server.url, { concurrency: 64, prefix: 'ev', types: ['even', 'odd'] });
  try {
    let rss = 0;
    let upMs = 0;
    for (let i = 0; i < CYCLES; i++) {
      const wait = 500 + Math.random() * 1500;
      upMs += wait;
      await new Promise((r) => setTimeout(r, wait));
      rss = Math.max(rss, peakRssMiB(server.child.pid!));
      server.child.kill('SIGKILL');
      await server.exited();
      server = await serve(args);
      load.retarget(server.url);
    }
    // Some load reaches the last server before the load stops.
    const before = load.acked.size;
    const t0 = Date.now();
    await expect.poll(() => load.acked.size, { timeout: 30_000 }).toBeGreaterThan(before + 200);
    upMs += Date.now() - t0;
    await load.stop();
    const acked = [...load.acked];
    const oddAcked = acked.filter((id) => Number(id.split('-')[1]) % 2 === 1);
    const count = (sink: typeof a) => {
      const m = new Map<string, number>();
      for (const r of sink.received)
        m.set(String(r.event.attrs['id']), (m.get(String(r.event.attrs['id'])) ?? 0) + 1);
      return m;
    };
    await expect
      .poll(
        () =>
          (() => {
            const ca = count(a);
            const cb = count(b);
            return acked.filter((id) => !ca.has(id)).length + oddAcked.filter((id) => !cb.has(id)).length;
          })(),
        {
          timeout: 60_000,
          interval: 500,
        },
      )
      .toBe(0);
    const dupA = [...count(a).values()].reduce((s, n) => s + n - 1, 0);
    const dupB = [...count(b).values()].reduce((s, n) => s + n - 1, 0);
    console.log(
      `crash test: ${CYCLES} kill -9 cycles, sent ${load.sent}, acknowledged ${acked.length}, ` +
        `delivered ${a.received.length + b.received.length}, lost 0, duplicated ${dupA + dupB}; ` +
        `${Math.round(acked.length / (upMs / 1000))} acknowledged/s while up`,
    );
    report({
      scenario: `crash: ${CYCLES} x kill -9 under load, 2 Triggers`,
      sent: load.sent,
      acknowledged: acked.length,
      delivered: a.received.length + b.received.length,
      duplicated: dupA + dupB,
      lost: 0,
      deadLettered: 0,
      peakRssMiB: Math.max(rss, peakRssMiB(server.child.pid!)),
    });
    expect(acked.length).toBeGreaterThan(CYCLES * 100);
  } finally {
    await load.stop().catch(() => undefined);
    if (process.env['KEEP']) console.log(dir, server.output());
    server.child.kill('SIGKILL');
    await server.exited();
    if (!process.env['KEEP']) rmSync(dir, { recursive: true, force: true });
  }
});
