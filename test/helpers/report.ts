/** Rows for the `npm run soak` table: written to $TRELLIS_SOAK_REPORT (JSON lines) when it is set. */
import { appendFileSync, readFileSync } from 'node:fs';

export interface SoakRow {
  scenario: string;
  sent: number;
  acknowledged: number;
  delivered: number;
  duplicated: number;
  lost: number;
  deadLettered: number;
  peakRssMiB: number;
}

export function report(row: SoakRow): void {
  const file = process.env['TRELLIS_SOAK_REPORT'];
  if (file) appendFileSync(file, `${JSON.stringify(row)}\n`);
}

/** Peak resident memory of a process, MiB (Linux /proc). */
export function peakRssMiB(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : 0;
  } catch {
    return 0;
  }
}
