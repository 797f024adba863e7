/**
 * Live counts per subscription (delivered, failed attempts, dead-lettered, dropped, replies) and its
 * recent failures with the subscriber's answer: what `trellis get triggers -o wide`, `trellis top` and
 * the dashboard show. Kept in memory by each process, from its start; plain numbers, cheap to keep.
 * @module
 */
import type { DataPlaneObserver, DeliveryOutcome, IngressObservation } from '../dataplane/observer.js';
import type { SubscriptionRoute } from '../dataplane/routes.js';

/** One failed attempt, as the subscriber answered it. */
export interface FailureRecord {
  time: string;
  /** The status code, or undefined when there was no answer. */
  code?: number | undefined;
  /** The first bytes of the answer, or the error (a refused connection, a timeout). */
  answer: string;
}

export interface SubscriptionStats {
  kind: string;
  namespace: string;
  name: string;
  delivered: number;
  failedAttempts: number;
  retried: number;
  deadLettered: number;
  dropped: number;
  replies: number;
  /** The last failures, newest first. */
  recentFailures: FailureRecord[];
}

export interface StreamStats {
  kind: string;
  stream: string;
  accepted: number;
  rejected: number;
}

/** Failures kept per subscription. */
const RECENT = 10;
/** Delivery records kept for event details (failed attempts and endings), across subscriptions. */
const RECENT_DELIVERIES = 10_000;

/** One thing that happened to one delivery. */
export interface DeliveryRecord {
  time: number;
  stream: string;
  seq: number;
  eventId: string;
  kind: string;
  namespace: string;
  name: string;
  /** `failed`: an attempt failed (another may follow); the others say how the delivery ended. */
  what: 'failed' | 'delivered' | 'dead_lettered' | 'dropped';
  code?: number | undefined;
  answer?: string | undefined;
}

export class LiveStats implements DataPlaneObserver {
  private readonly subs = new Map<string, SubscriptionStats>();
  private readonly streams = new Map<string, StreamStats>();

  /** By route object (found without building a key on every call); routes are replaced when resources change. */
  private readonly byRoute = new WeakMap<SubscriptionRoute, SubscriptionStats>();

  private of(r: SubscriptionRoute): SubscriptionStats {
    const known = this.byRoute.get(r);
    if (known !== undefined) return known;
    const key = `${r.kind}/${r.namespace}/${r.name}`;
    let s = this.subs.get(key);
    if (s === undefined) {
      s = {
        kind: r.kind,
        namespace: r.namespace,
        name: r.name,
        delivered: 0,
        failedAttempts: 0,
        retried: 0,
        deadLettered: 0,
        dropped: 0,
        replies: 0,
        recentFailures: [],
      };
      this.subs.set(key, s);
    }
    this.byRoute.set(r, s);
    return s;
  }

  ingress(o: IngressObservation): void {
    if (o.stream === undefined) return;
    let s = this.streams.get(o.stream);
    if (s === undefined) {
      s = { kind: o.kind ?? '', stream: o.stream, accepted: 0, rejected: 0 };
      this.streams.set(o.stream, s);
    }
    if (o.code === 202) s.accepted += o.events;
    else s.rejected += o.events;
  }

  attempt(
    r: SubscriptionRoute,
    code: number | undefined,
    _seconds: number,
    failure: string | undefined,
    seq: number,
    eventId: string,
  ): void {
    if (failure === undefined) return;
    this.record(r, seq, eventId, 'failed', code, failure);
    const s = this.of(r);
    s.failedAttempts++;
    s.recentFailures.unshift({ time: new Date().toISOString(), code, answer: failure });
    if (s.recentFailures.length > RECENT) s.recentFailures.length = RECENT;
  }

  outcome(r: SubscriptionRoute, outcome: DeliveryOutcome, seq: number, eventId: string): void {
    if (outcome !== 'retried') this.record(r, seq, eventId, outcome);
    const s = this.of(r);
    if (outcome === 'delivered') s.delivered++;
    else if (outcome === 'retried') s.retried++;
    else if (outcome === 'dead_lettered') s.deadLettered++;
    else s.dropped++;
  }

  replies(r: SubscriptionRoute, n: number): void {
    this.of(r).replies += n;
  }

  /** The last {@link RECENT_DELIVERIES} things that happened to deliveries: failed attempts and how they ended. */
  private readonly ring: (DeliveryRecord | undefined)[] = new Array(RECENT_DELIVERIES);
  private next = 0;

  private record(
    r: SubscriptionRoute,
    seq: number,
    eventId: string,
    what: DeliveryRecord['what'],
    code?: number,
    answer?: string,
  ): void {
    this.ring[this.next] = {
      time: Date.now(),
      stream: r.stream,
      seq,
      eventId,
      kind: r.kind,
      namespace: r.namespace,
      name: r.name,
      what,
      code,
      answer,
    };
    this.next = (this.next + 1) % RECENT_DELIVERIES;
  }

  /** What happened to the deliveries of an event (by id, optionally its stream), among the recent ones, oldest first. */
  deliveriesOf(eventId: string, stream?: string): DeliveryRecord[] {
    const out: DeliveryRecord[] = [];
    for (let i = 0; i < RECENT_DELIVERIES; i++) {
      const x = this.ring[(this.next + i) % RECENT_DELIVERIES];
      if (x !== undefined && x.eventId === eventId && (stream === undefined || x.stream === stream))
        out.push(x);
    }
    return out;
  }

  /** Every subscription's counts (those that saw a delivery since the start). */
  subscriptions(): SubscriptionStats[] {
    return [...this.subs.values()];
  }

  /** Every stream's counts (those that took a request since the start). */
  streamStats(): StreamStats[] {
    return [...this.streams.values()];
  }

  /** Forgets what no longer exists (its resource was deleted). */
  retain(keys: ReadonlySet<string>): void {
    for (const k of this.subs.keys()) if (!keys.has(k)) this.subs.delete(k);
  }
}
