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

/**
 * The wait before retry number `n` (1 for the first retry), as Knative computes it:
 * linear `delay * n`, exponential `delay * 2^n`, capped by `backoffMaxMs`.
 */
export function backoffMs(p: RetryPolicy, n: number): number {
  const raw = p.backoffPolicy === 'linear' ? p.backoffDelayMs * n : p.backoffDelayMs * 2 ** n;
  return p.backoffMaxMs !== undefined ? Math.min(raw, p.backoffMaxMs) : raw;
}
