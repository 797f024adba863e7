/**
 * The retry policy a subscription's deliveries follow, with every default filled in, and Knative's backoff.
 * @module
 */

export interface RetryPolicy {
  /** Retries after the first attempt. */
  retry: number;
  backoffPolicy: 'linear' | 'exponential';
  backoffDelayMs: number;
  timeoutMs: number;
  /** Undefined: Retry-After is not honoured (Knative's default). */
  retryAfterMaxMs: number | undefined;
  /** Undefined: no cap on the wait between attempts (Knative's behaviour). */
  backoffMaxMs: number | undefined;
  /** The resolved dead-letter sink, if any. */
  deadLetterUri: string | undefined;
}

/** The longest wait between two attempts, whatever the policy computes: 365 days. */
export const MAX_BACKOFF_MS = 365 * 24 * 3600 * 1000;

/**
 * The wait before retry number `n` (1 for the first retry), as Knative computes it:
 * linear `delay * n`, exponential `delay * 2^n`, capped by `backoffMaxMs` and by {@link MAX_BACKOFF_MS}
 * (so that `2^n` overflowing to Infinity, or `0 * Infinity`, never makes a due time that is not a number).
 */
export function backoffMs(p: RetryPolicy, n: number): number {
  if (p.backoffDelayMs <= 0) return 0;
  const raw = p.backoffPolicy === 'linear' ? p.backoffDelayMs * n : p.backoffDelayMs * 2 ** n;
  const capped = p.backoffMaxMs !== undefined ? Math.min(raw, p.backoffMaxMs) : raw;
  return Number.isFinite(capped) ? Math.min(capped, MAX_BACKOFF_MS) : MAX_BACKOFF_MS;
}
