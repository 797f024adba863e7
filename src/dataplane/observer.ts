/**
 * What the data plane reports as it works: requests answered at ingress, appends to the store, each
 * delivery attempt and how each delivery ended. Metrics, the live stats of `trellis get -o wide` and the
 * dashboard implement it; the data plane never imports them. Calls are made on the hot path: an
 * implementation must be cheap and must not throw.
 * @module
 */
import type { SubscriptionRoute } from './routes.js';

/** How a delivery ended (or, for `retried`, that an attempt failed and another is scheduled). */
export type DeliveryOutcome = 'delivered' | 'retried' | 'dead_lettered' | 'dropped';

/** One ingress request answered. */
export interface IngressObservation {
  /** The stream the request was for (`ns/broker`, `channels/ns/name`), undefined when no such stream exists. */
  stream: string | undefined;
  /** Its owner's kind (`Broker`, `Channel`, ...), undefined with `stream`. */
  kind: string | undefined;
  /** Events in the request (1 for a request refused before its events were read). */
  events: number;
  /** The status code the sender got. */
  code: number;
  /** The request body's size. */
  bytes: number;
  /** From the first byte read to the answer. */
  seconds: number;
}

export interface DataPlaneObserver {
  ingress?(o: IngressObservation): void;
  /** An append to the store made durable: how many events, and how long it took. */
  append?(events: number, seconds: number): void;
  /**
   * One attempt to deliver to a subscriber (or a dead-letter sink) answered or failed: the status code
   * (undefined: no answer — refused connection, timeout), the time it took, and on failure the first
   * bytes of the answer or the error.
   */
  attempt?(
    route: SubscriptionRoute,
    code: number | undefined,
    seconds: number,
    failure: string | undefined,
    seq: number,
    eventId: string,
  ): void;
  /** How the delivery of event `seq` (its `id`) ended, or that it will be retried. */
  outcome?(route: SubscriptionRoute, outcome: DeliveryOutcome, seq: number, eventId: string): void;
  /** Reply events a subscriber answered with, passed on. */
  replies?(route: SubscriptionRoute, n: number): void;
  /** Events refused by a rate limit: the stream's own (`stream`) or its per-sender one (`sender`). */
  rateLimited?(stream: string, kind: string, limit: 'stream' | 'sender', events: number): void;
}

/** Several observers as one (undefined members skipped). */
export function observers(...list: (DataPlaneObserver | undefined)[]): DataPlaneObserver {
  const all = list.filter((o): o is DataPlaneObserver => o !== undefined);
  const of = <K extends keyof DataPlaneObserver>(k: K) =>
    all.map((o) => o[k]?.bind(o)).filter((f) => f !== undefined) as NonNullable<DataPlaneObserver[K]>[];
  const ingress = of('ingress');
  const append = of('append');
  const attempt = of('attempt');
  const outcome = of('outcome');
  const replies = of('replies');
  const rateLimited = of('rateLimited');
  return {
    ingress: (o) => {
      for (const f of ingress) f(o);
    },
    append: (n, s) => {
      for (const f of append) f(n, s);
    },
    attempt: (r, c, s, why, seq, id) => {
      for (const f of attempt) f(r, c, s, why, seq, id);
    },
    outcome: (r, o, seq, id) => {
      for (const f of outcome) f(r, o, seq, id);
    },
    replies: (r, n) => {
      for (const f of replies) f(r, n);
    },
    rateLimited: (s, k, l, n) => {
      for (const f of rateLimited) f(s, k, l, n);
    },
  };
}
