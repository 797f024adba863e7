/**
 * Rates as the rate-limit annotations and flags write them: `100/s`, `6000/m`, `50000/h`, optionally with
 * a burst (`100/s,500`).
 * @module
 */

/** Events per second, and how many may come at once. */
export interface RateSpec {
  perSecond: number;
  burst: number;
}

const RATE = /^(\d{1,9}(?:\.\d{1,3})?)\/(s|m|h)(?:,(\d{1,9}))?$/;
const PER = { s: 1, m: 60, h: 3600 } as const;

/**
 * Parses `100/s`, `6000/m`, `50000/h`, optionally with a burst (`100/s,500`; default: one second's
 * worth, at least 1). Undefined when it is not one.
 */
export function parseRate(v: string): RateSpec | undefined {
  const m = RATE.exec(v.trim());
  if (m === null) return undefined;
  const perSecond = Number(m[1]) / PER[m[2] as keyof typeof PER];
  if (!(perSecond > 0)) return undefined;
  const burst = m[3] === undefined ? Math.max(1, Math.ceil(perSecond)) : Number(m[3]);
  return burst >= 1 ? { perSecond, burst } : undefined;
}
