// `npm run soak`: the long versions of the reliability tests, then one table of what they counted.
// Scale with TRELLIS_CRASH_CYCLES (20), TRELLIS_FUZZ_CASES (5000), TRELLIS_FLOOD_SECONDS (30).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const reportFile = join(tmpdir(), `trellis-soak-${process.pid}.jsonl`);
rmSync(reportFile, { force: true });
const env = {
  ...process.env,
  TRELLIS_SOAK_REPORT: reportFile,
  TRELLIS_CRASH_CYCLES: process.env.TRELLIS_CRASH_CYCLES ?? '20',
  TRELLIS_FUZZ_CASES: process.env.TRELLIS_FUZZ_CASES ?? '5000',
  TRELLIS_FLOOD_SECONDS: process.env.TRELLIS_FLOOD_SECONDS ?? '30',
};
const files = [
  'test/crash.test.ts',
  'test/outage.test.ts',
  'test/flood.test.ts',
  'test/fuzz.test.ts',
  'test/disk.test.ts',
  'test/shutdown.test.ts',
];
const r = spawnSync(
  process.execPath,
  [join(ROOT, 'node_modules', 'vitest', 'vitest.mjs'), 'run', ...files, '--testTimeout', '1800000'],
  {
    cwd: ROOT,
    env,
    stdio: 'inherit',
  },
);
const rows = existsSync(reportFile)
  ? readFileSync(reportFile, 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l))
  : [];
rmSync(reportFile, { force: true });
const head = [
  'scenario',
  'sent',
  'acknowledged',
  'delivered',
  'duplicated',
  'lost',
  'dead-lettered',
  'peak RSS MiB',
];
const table = [
  head,
  ...rows.map((x) =>
    [x.scenario, x.sent, x.acknowledged, x.delivered, x.duplicated, x.lost, x.deadLettered, x.peakRssMiB].map(
      String,
    ),
  ),
];
const widths = head.map((_, i) => Math.max(...table.map((row) => row[i].length)));
console.log('\nsoak results');
for (const row of table)
  console.log(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
process.exit(r.status ?? 1);
