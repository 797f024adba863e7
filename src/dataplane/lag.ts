/**
 * Lag per Broker: deliveries stored and not yet finished. Ingress adds what it stores, the dispatcher
 * takes away what it finishes, and a resync from the store corrects any drift when resources change.
 * Ingress refuses new events (429) while a Broker's lag is at its ceiling.
 * @module
 */

export class LagCounter {
  private readonly lag = new Map<string, number>();

  add(broker: string, n: number): void {
    this.lag.set(broker, (this.lag.get(broker) ?? 0) + n);
  }

  /** Takes `n` away, never below 0. */
  sub(broker: string, n: number): void {
    this.lag.set(broker, Math.max(0, (this.lag.get(broker) ?? 0) - n));
  }

  get(broker: string): number {
    return this.lag.get(broker) ?? 0;
  }

  /** Replaces every count (from the store's pending deliveries). */
  reset(counts: ReadonlyMap<string, number>): void {
    this.lag.clear();
    for (const [k, v] of counts) this.lag.set(k, v);
  }
}
