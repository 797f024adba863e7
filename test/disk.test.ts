/**
 * Disk trouble with a real filesystem: the data directory is a tiny tmpfs that fills up. Ingress answers
 * 503 and acknowledges nothing it could not store; once there is room again, it accepts again, and every
 * event that got a 202 is delivered. Needs root (mount); skipped with a message where mount is refused.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { report } from './helpers/report.js';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const dir = mkdtempSync(join(tmpdir(), 'trellis-disk-'));
let mounted = false;
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', dir], { stdio: 'pipe' });
  mounted = true;
} catch (err) {
  console.warn(
    `SKIPPED: disk-full test: cannot mount a tmpfs here (${(err as Error).message.split('\n')[0]}); it needs root`,
  );
  rmSync(dir, { recursive: true, force: true });
}

it.skipIf(!mounted)(
  'a full disk gives 503 without acknowledging, and the server recovers when there is room',
  { timeout: 60_000 },
  async () => {
    await using sink = await startSink();
    const s = await testServer({ dataDir: join(dir, 'data') });
    try {
      await s.apply(broker('b'));
      await s.apply(trigger('t', { broker: 'b', subscriber: { uri: sink.url } }));
      const acked: string[] = [];
      const big = `"${'x'.repeat(64 * 1024)}"`;
      let full: Response | undefined;
      for (let i = 0; i < 500 && !full; i++) {
        const res = await s.post('/default/b', ceHeaders(`d${i}`), big);
        if (res.status === 202) acked.push(`d${i}`);
        else full = res;
      }
      expect(full, 'the disk never filled up').toBeDefined();
      expect(full!.status).toBe(503);
      expect(full!.headers.get('retry-after')).toBe('1');
      const body = (await full!.json()) as { code: string; message: string };
      expect(body.code).toBe('TRELLIS_ERR_STORE_UNAVAILABLE');
      expect(body.message).toMatch(/full|disk|SQLITE/i);
      expect((await fetch(`${s.url}/healthz`)).status).toBe(200);

      execFileSync('mount', ['-o', 'remount,size=256m', dir]);
      await expect
        .poll(async () => (await s.post('/default/b', ceHeaders('after'), '{}')).status, { timeout: 10_000 })
        .toBe(202);
      acked.push('after');
      await sink.waitFor(acked.length);
      const got = new Set(sink.received.map((r) => String(r.event.attrs['id'])));
      expect(acked.filter((id) => !got.has(id))).toEqual([]);
      report({
        scenario: 'disk full (3 MiB tmpfs), then room again (in-process: RSS of the test)',
        sent: acked.length + 1,
        acknowledged: acked.length,
        delivered: sink.received.length,
        duplicated: sink.received.length - got.size,
        lost: 0,
        deadLettered: 0,
        peakRssMiB: Math.round(process.memoryUsage().rss / 1048576),
      });
    } finally {
      await s.close();
      execFileSync('umount', ['-l', dir]);
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
