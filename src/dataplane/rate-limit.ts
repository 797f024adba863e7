/**
 * Rate limits at ingress, as Apache EventMesh's flow control: a token bucket per Broker, Channel or flow
 * (`trellis.dev/rate-limit`, `--rate-limit`) and per sender of each (`trellis.dev/rate-limit-per-sender`,
 * `--rate-limit-per-sender`; the sender is its authenticated identity, else its network address). A request
 * takes one token per event; without enough, it is answered 429 with the seconds to wait in
 * Retry-After, and nothing is stored.
 * @module
 */

/** Events per second, and how many may come at once (the bucket's size); parsed by resources/rate.ts. */
export interface Rate {
  perSecond: number;
  burst: number;
}

/** Token buckets by key, at most `max` of them (the least recently used go first). */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly max = 10_000) {}

  /** Takes `n` tokens from `key`'s bucket: 0 when they were there, else the seconds until they will be. */
  take(key: string, rate: Rate, n: number, now = performance.now()): number {
    let b = this.buckets.get(key);
    if (b === undefined) {
      b = { tokens: rate.burst, at: now };
      if (this.buckets.size >= this.max) this.buckets.delete(this.buckets.keys().next().value!);
    } else this.buckets.delete(key); // re-inserted below: the most recently used last
    this.buckets.set(key, b);
    b.tokens = Math.min(rate.burst, b.tokens + ((now - b.at) / 1000) * rate.perSecond);
    b.at = now;
    if (b.tokens >= n) {
      b.tokens -= n;
      return 0;
    }
    // A batch larger than the bucket can never pass whole: it waits for a full bucket, and is told so.
    return Math.max(1, Math.ceil((Math.min(n, rate.burst) - b.tokens) / rate.perSecond));
  }
}
