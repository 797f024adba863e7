/**
 * The dispatcher: one worker per Trigger drains that Trigger's pending deliveries with its own concurrency
 * window, so a slow or failing subscriber never holds up another. Retries, backoff, Retry-After,
 * dead-letter sinks and replies follow Knative's DeliverySpec and data-plane contract.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import { decodeHttp, flattenHeaders } from '../cloudevents/http.js';
import {
  DEAD_LETTER_PREFIX,
  type DeliveryState,
  type EventLog,
  type PendingDelivery,
} from '../store/types.js';
import type { LocalResult } from './groups.js';
import { LagCounter } from './lag.js';
import type { DataPlaneObserver } from './observer.js';
import { IN_REPLY_TO, REPLY_TO } from './replies.js';
import { backoffMs } from './retry-policy.js';
import type { Logger, SubscriptionRoute } from './routes.js';
import { isRetryable, parseRetryAfter, type Sender, type SendResult } from './sender.js';
import { eventTraceContext, type IngressTrace, type Tracer, type TraceSpan } from './tracing.js';

/** Puts reply events back into a Broker; rejects when they were not stored. */
export type Ingest = (broker: string, events: CloudEvent[], trace?: IngressTrace) => Promise<void>;

export interface DispatcherOptions {
  /** Deliveries in flight per Trigger. */
  concurrency: number;
  /** Deliveries kept in memory per Trigger beyond those in flight; the rest wait in the store. */
  bufferSize: number;
  /** Bytes of the subscriber's answer kept in knativeerrordata. */
  errorDataBytes: number;
}

/** Counters the dispatcher keeps (read by metrics and tests). */
export interface DispatchStats {
  delivered: number;
  failedAttempts: number;
  deadLettered: number;
  dropped: number;
  replies: number;
}

interface Item {
  seq: number;
  attempt: number;
  event: CloudEvent;
  lastError?: FailureInfo | undefined;
}

interface FailureInfo {
  code?: number;
  data: Buffer;
}

const TTL = 'knativebrokerttl';

/** An event's partition key for ordered delivery: the `partitionkey` extension, else one key for all. */
function partitionKey(e: CloudEvent): string {
  const v = e.attrs['partitionkey'];
  return v === undefined ? '' : String(v);
}
/**
 * A delivery's id in logs, `SUBSCRIPTION:SEQ#ATTEMPT`: the part before `#` is the same for every attempt,
 * so the log lines of one delivery can be found together.
 */
function deliveryId(route: SubscriptionRoute, item: { seq: number; attempt: number }): string {
  return `${route.id}:${item.seq}#${item.attempt}`;
}

/** Extensions a kept dead letter carries besides Knative's: its subscription, when, after how many attempts. */
export const DL_SUBSCRIPTION = 'trellissubscription';
export const DL_FAILED_AT = 'trellisfailedat';
export const DL_ATTEMPTS = 'trellisattempts';

/** The dead-letter store of a stream: a flow's steps share their flow's (`sequences/ns/name#1` → `…/name`). */
export function deadLetterStream(stream: string): string {
  const hash = stream.indexOf('#');
  return DEAD_LETTER_PREFIX + (hash < 0 ? stream : stream.slice(0, hash));
}

/** The HTTP headers that carry a span's context to the next hop. */
function traceHeaders(span: TraceSpan): Record<string, string> {
  const h: Record<string, string> = { traceparent: span.context.traceparent! };
  if (span.context.tracestate !== undefined) h['tracestate'] = span.context.tracestate;
  return h;
}

/** What a failed attempt's answer (or error) began with, as text for people: at most 256 bytes. */
function failureText(data: Buffer): string {
  return data.subarray(0, 256).toString('utf8');
}

/** The longest delay one Node timer can wait (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Dispatcher {
  private readonly workers = new Map<string, SubscriptionWorker>();
  readonly stats: DispatchStats = {
    delivered: 0,
    failedAttempts: 0,
    deadLettered: 0,
    dropped: 0,
    replies: 0,
  };
  private stopping = false;
  /** Hears every attempt and outcome (metrics, live stats). */
  observer: DataPlaneObserver = {};
  /** Set when tracing is on: a span per attempt, its context sent to the subscriber. */
  tracer: Tracer | undefined;
  /**
   * Set when Trellis mints tokens: the audience a delivery of `route` to `url` needs a token for (its
   * destination's `audience`; an addressable of this server when senders must authenticate), and the
   * token for it, as the subscription's own identity.
   */
  tokens:
    | {
        audience(route: SubscriptionRoute, url: string): string | undefined;
        token(audience: string, route: SubscriptionRoute): Promise<string>;
      }
    | undefined;
  /** The last failed answer of deliveries waiting for a retry here, by `subscription:seq` (bounded). */
  private readonly lastAnswers = new Map<string, { code?: number | undefined; answer: string; at: string }>();

  /** Remembers why a delivery's attempt failed, for `GET /apis/retries`; forgets the oldest beyond 10,000. */
  noteFailure(subscription: string, seq: number, code: number | undefined, answer: string): void {
    const key = `${subscription}:${seq}`;
    this.lastAnswers.delete(key);
    this.lastAnswers.set(key, { code, answer, at: new Date().toISOString() });
    if (this.lastAnswers.size > 10_000) this.lastAnswers.delete(this.lastAnswers.keys().next().value!);
  }

  forgetFailure(subscription: string, seq: number): void {
    if (this.lastAnswers.size > 0) this.lastAnswers.delete(`${subscription}:${seq}`);
  }

  /** The last failed answer of a delivery waiting for a retry in this process. */
  lastAnswer(subscription: string, seq: number) {
    return this.lastAnswers.get(`${subscription}:${seq}`);
  }

  constructor(
    readonly log: EventLog,
    readonly state: DeliveryState,
    readonly sender: Sender,
    readonly ingest: Ingest,
    readonly logger: Logger,
    readonly opts: DispatcherOptions,
    readonly lag: LagCounter = new LagCounter(),
  ) {
    this.stopListening = state.onDeliveries?.((sub) => this.workers.get(sub)?.wake());
  }

  private readonly stopListening: (() => void) | undefined;

  /** True when the store says when deliveries arrive, so idle workers need not poll. */
  get pushed(): boolean {
    return this.stopListening !== undefined;
  }

  /** False until the first update has read the store's pending counts. */
  private synced = false;

  /**
   * Brings workers in line with the routes: starts new ones, updates changed ones, stops those whose Trigger is
   * no longer Ready. When a subscription went away (or on the first call), the lag counts are read again from
   * the store and the pending deliveries of subscriptions whose resource is gone (`stillOwned`) are removed.
   */
  async update(
    routes: readonly SubscriptionRoute[],
    stillOwned: () => Promise<(id: string) => boolean>,
  ): Promise<void> {
    if (this.stopping) return;
    let resync = !this.synced;
    const seen = new Set<string>();
    for (const r of routes) {
      seen.add(r.id);
      const w = this.workers.get(r.id);
      if (w) {
        if (w.route.stream !== r.stream) resync = true;
        w.route = r;
      } else {
        const nw = new SubscriptionWorker(this, r);
        this.workers.set(r.id, nw);
        nw.pump();
      }
    }
    for (const [id, w] of this.workers) {
      if (!seen.has(id)) {
        w.stop();
        this.workers.delete(id);
        this.sender.release(id);
        resync = true;
      }
    }
    if (!resync) return;
    this.synced = true;
    const counts = await this.resyncLag();
    // Counts first, then who owns them: a subscription made after the counts were read has nothing in them.
    const owned = await stillOwned();
    for (const id of counts.keys()) {
      if (!owned(id)) {
        this.logger.info({ subscription: id }, 'removing the pending deliveries of a deleted subscription');
        await this.state.dropSubscription(id);
      }
    }
  }

  /** Reads every subscription's pending count from the store and sets the lag per stream from it. */
  async resyncLag(): Promise<Map<string, number>> {
    const counts = await this.state.counts();
    const lag = new Map<string, number>();
    for (const w of this.workers.values())
      lag.set(w.route.stream, (lag.get(w.route.stream) ?? 0) + (counts.get(w.route.id) ?? 0));
    this.lag.reset(lag);
    return counts;
  }

  /** Asks every idle worker to look for deliveries (a shared store: other processes append too). */
  poll(): void {
    for (const w of this.workers.values()) w.poll();
  }

  /** Called by ingress after an event was stored with a pending delivery for `subscription`. */
  notify(subscription: string, seq: number, event: CloudEvent): void {
    this.workers.get(subscription)?.notify(seq, event);
  }

  /** Deliveries of a subscription were recorded without an append here (a replay): its worker looks. */
  wake(subscription: string): void {
    this.workers.get(subscription)?.wake();
  }

  /** Deliveries in flight across all workers. */
  inflight(): number {
    let n = 0;
    for (const w of this.workers.values()) n += w.inflight;
    return n;
  }

  /** Stops starting deliveries and waits up to `graceMs` for those in flight. Unfinished ones stay pending. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    this.stopListening?.();
    for (const w of this.workers.values()) w.stop();
    const deadline = Date.now() + graceMs;
    while (this.inflight() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  }
}

class SubscriptionWorker {
  inflight = 0;
  private buffer: Item[] = [];
  private backlog = true;
  private scanning = false;
  private missed = false;
  private stopped = false;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly d: Dispatcher,
    public route: SubscriptionRoute,
  ) {}

  /** `Trigger default/orders`, for logs. */
  private label(): string {
    return `${this.route.kind} ${this.route.namespace}/${this.route.name}`;
  }

  notify(seq: number, event: CloudEvent): void {
    if (this.stopped) return;
    if (!this.backlog && !this.scanning && this.buffer.length < this.d.opts.bufferSize) {
      // Leased here unless a fetch already returned it (the store makes a commit visible a moment
      // before the append resolves).
      if (!this.d.state.claim(this.route.id, seq)) return;
      this.buffer.push({ seq, attempt: 0, event });
      this.pump();
    } else {
      this.backlog = true;
      if (this.scanning) this.missed = true;
      this.pump();
    }
  }

  /** The store has deliveries for this subscription: look for them now, or after the scan running. */
  wake(): void {
    if (this.stopped) return;
    this.backlog = true;
    if (this.scanning) this.missed = true;
    this.pump();
  }

  /** Looks in the store for deliveries when idle (nothing buffered, no scan running). */
  poll(): void {
    if (this.stopped || this.scanning || this.buffer.length > 0) return;
    this.backlog = true;
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    this.d.state.release(this.route.id);
    this.holders.clear();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.buffer = [];
  }

  pump(): void {
    const { concurrency } = this.d.opts;
    if (this.route.ordered) {
      this.pumpOrdered(concurrency);
    } else {
      while (!this.stopped && this.inflight < concurrency && this.buffer.length > 0)
        this.start(this.buffer.shift()!);
    }
    if (!this.stopped && this.buffer.length === 0 && this.backlog && !this.scanning) void this.scan();
  }

  private start(item: Item): void {
    this.inflight++;
    void this.process(item).finally(() => {
      this.inflight--;
      this.pump();
    });
  }

  /**
   * Ordered delivery: events with the same partition key go one at a time, in order. A key is held by
   * its oldest unfinished event from its first attempt until it is delivered, dead-lettered or dropped,
   * retries and their waits included; other keys go on meanwhile, up to the concurrency window.
   */
  private pumpOrdered(concurrency: number): void {
    if (this.stopped) return;
    const seen = new Set<string>();
    const keep: Item[] = [];
    for (const item of this.buffer) {
      const key = partitionKey(item.event);
      const holder = this.holders.get(key);
      // A held key lets only its holder go (a retry comes back at the end of the buffer); a free key lets
      // its first event in the buffer go, which is its oldest.
      const free = holder !== undefined ? holder === item.seq : !seen.has(key);
      seen.add(key);
      if (free && this.inflight < concurrency) {
        this.holders.set(key, item.seq);
        this.start(item);
      } else keep.push(item);
    }
    this.buffer = keep;
  }

  /** Which event holds each partition key (ordered subscriptions only). */
  private readonly holders = new Map<string, number>();

  /** Loads the next page of pending deliveries from the store. */
  private async scan(): Promise<void> {
    this.scanning = true;
    this.missed = false;
    const limit = this.d.opts.bufferSize;
    let rows: PendingDelivery[];
    try {
      rows = await this.d.state.fetch(this.route.id, limit, { exclusive: this.route.ordered === true });
    } catch (err) {
      this.scanning = false;
      this.d.logger.error(
        { err, subscription: this.label() },
        'reading pending deliveries failed; retrying in 1s',
      );
      this.later(1000, () => this.pump());
      return;
    }
    this.scanning = false;
    if (this.stopped) return;
    const now = Date.now();
    for (const r of rows) {
      if (r.dueAt > now) {
        // An ordered key waits for its oldest event's retry, even across a restart.
        if (this.route.ordered && !this.holders.has(partitionKey(r.event)))
          this.holders.set(partitionKey(r.event), r.seq);
        this.wakeAt(
          r.dueAt,
          r.seq,
          r.attempt,
          undefined,
          this.d.state.retriesRefetched ? r.event : undefined,
        );
      } else this.buffer.push({ seq: r.seq, attempt: r.attempt, event: r.event });
    }
    if (rows.length < limit && !this.missed) this.backlog = false;
    this.pump();
  }

  /** Runs `fn` after `ms`, however long: Node's timers fire at once beyond 2^31-1 ms, so long waits are chained. */
  private later(ms: number, fn: () => void): void {
    const step = Math.min(ms, MAX_TIMER_MS);
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (ms > MAX_TIMER_MS) this.later(ms - MAX_TIMER_MS, fn);
      else fn();
    }, step);
    this.timers.add(t);
  }

  /**
   * One attempt to a URL on this subscription's connections: with the span's trace context, and signed
   * when the subscription signs its deliveries (never unsigned when its secret could not be read).
   */
  private sendTo(
    url: string,
    event: CloudEvent,
    omit: string | undefined,
    item: Item,
    span: TraceSpan | undefined,
  ) {
    const signing = this.route.signing;
    if (signing !== undefined && 'error' in signing)
      return Promise.resolve<SendResult>({ kind: 'error', error: signing.error, timeout: false });
    const audience = this.d.tokens?.audience(this.route, url);
    if (audience !== undefined)
      return this.d.tokens!.token(audience, this.route).then(
        (token) => this.send(url, event, omit, item, span, { authorization: `Bearer ${token}` }),
        (err: unknown): SendResult => ({
          kind: 'error',
          error: `minting a token failed: ${(err as Error).message}`,
          timeout: false,
        }),
      );
    return this.send(url, event, omit, item, span);
  }

  private send(
    url: string,
    event: CloudEvent,
    omit: string | undefined,
    item: Item,
    span: TraceSpan | undefined,
    auth?: Record<string, string>,
  ): Promise<SendResult> {
    const signing = this.route.signing as { key: Buffer } | undefined;
    const headers = span === undefined ? auth : { ...traceHeaders(span), ...auth };
    return this.d.sender.send(this.route.id, url, event, this.route.policy.timeoutMs, omit, headers, {
      sign: signing === undefined ? undefined : { key: signing.key, id: `${this.route.id}:${item.seq}` },
      ca: this.route.caCerts,
    });
  }

  /** A span for one attempt, under the trace the event's distributed-tracing extension started. */
  private span(what: string, item: Item, url: string): TraceSpan {
    const r = this.route;
    return this.d.tracer!.start(
      `${what} ${r.kind} ${r.namespace}/${r.name}`,
      eventTraceContext(item.event.attrs),
      'client',
      {
        'messaging.system': 'trellis',
        'messaging.destination.name': r.stream,
        'cloudevents.event_id': String(item.event.attrs['id']),
        'cloudevents.event_type': String(item.event.attrs['type']),
        'cloudevents.event_source': String(item.event.attrs['source']),
        'trellis.subscription': `${r.kind} ${r.namespace}/${r.name}`,
        'trellis.attempt': item.attempt + 1,
        'url.full': url,
      },
    );
  }

  /** Brings a delivery back when its retry is due, re-reading the event from the store unless it is given. */
  private wakeAt(
    dueAt: number,
    seq: number,
    attempt: number,
    lastError: FailureInfo | undefined,
    held?: CloudEvent,
  ): void {
    this.later(Math.max(0, dueAt - Date.now()), () => {
      if (held !== undefined) {
        if (this.stopped) return;
        this.buffer.push({ seq, attempt, event: held, lastError });
        this.pump();
        return;
      }
      void this.d.log.getEvent(this.route.stream, seq).then(
        (event) => {
          if (event === undefined || this.stopped) return;
          this.buffer.push({ seq, attempt, event, lastError });
          this.pump();
        },
        (err: unknown) => {
          this.d.logger.error({ err, seq }, 'reading an event for retry failed; retrying in 1s');
          this.wakeAt(Date.now() + 1000, seq, attempt, lastError);
        },
      );
    });
  }

  private async process(item: Item): Promise<void> {
    const { policy } = this.route;
    try {
      if (item.attempt <= policy.retry) {
        const out = this.outgoing(item.event, this.route.subscriberIsSelf === true);
        if (out === undefined) {
          this.loopEnded(item, this.route.subscriberUri);
          return;
        }
        const started = performance.now();
        const span =
          this.d.tracer === undefined ? undefined : this.span('deliver', item, this.route.subscriberUri);
        const local = this.route.local;
        const res =
          local !== undefined
            ? await local.deliver(out, item.seq, item.attempt, policy.timeoutMs)
            : await this.sendTo(
                this.route.subscriberUri,
                out,
                out === item.event ? TTL : undefined,
                item,
                span,
              );
        const seconds = (performance.now() - started) / 1000;
        const code = res.kind === 'response' ? res.status : undefined;
        const outcome = await this.handleResponse(item, res, span);
        if (span !== undefined) {
          if (code !== undefined) span.set('http.response.status_code', code);
          span.end(outcome === 'done' ? undefined : outcome.info.data.subarray(0, 256).toString('utf8'));
        }
        const obs = this.d.observer;
        if (outcome === 'done') {
          this.d.stats.delivered++;
          obs.attempt?.(this.route, code, seconds, undefined, item.seq, String(item.event.attrs['id']));
          obs.outcome?.(this.route, 'delivered', item.seq, String(item.event.attrs['id']));
          this.done(item, 'ack');
          return;
        }
        this.d.stats.failedAttempts++;
        obs.attempt?.(
          this.route,
          code,
          seconds,
          failureText(outcome.info.data),
          item.seq,
          String(item.event.attrs['id']),
        );
        item.lastError = outcome.info;
        if (outcome.retry && item.attempt < policy.retry) {
          obs.outcome?.(this.route, 'retried', item.seq, String(item.event.attrs['id']));
          this.d.noteFailure(this.route.id, item.seq, code, failureText(outcome.info.data));
          const n = item.attempt + 1;
          let wait = backoffMs(policy, n);
          if (outcome.retryAfterMs !== undefined && policy.retryAfterMaxMs !== undefined) {
            wait = Math.max(wait, Math.min(outcome.retryAfterMs, policy.retryAfterMaxMs));
          }
          await this.retryLater(item, n, wait);
          return;
        }
        // Kept in the dead-letter store first (a failure to store it retries the delivery, at least once).
        const kept = this.route.keepDeadLetters === true && (await this.keep(item));
        if (policy.deadLetterUri === undefined && kept) {
          this.d.stats.deadLettered++;
          obs.outcome?.(this.route, 'dead_lettered', item.seq, String(item.event.attrs['id']));
          this.done(item);
          return;
        }
        if (policy.deadLetterUri === undefined) {
          this.d.stats.dropped++;
          obs.outcome?.(this.route, 'dropped', item.seq, String(item.event.attrs['id']));
          this.d.logger.warn(
            {
              subscription: this.label(),
              delivery: deliveryId(this.route, item),
              id: item.event.attrs['id'],
              code: outcome.info.code,
            },
            'delivery failed and no dead-letter sink is set: event dropped',
          );
          this.done(item);
          return;
        }
        item.attempt = policy.retry + 1;
      }
      await this.deadLetter(item);
    } catch (err) {
      // A store write failed: keep the delivery and try again shortly (at least once).
      this.d.logger.error(
        { err, subscription: this.label(), delivery: deliveryId(this.route, item) },
        'delivery bookkeeping failed; retrying',
      );
      this.wakeAt(Date.now() + 1000, item.seq, item.attempt, item.lastError, item.event);
    }
  }

  /**
   * The event as it goes out: to a subscriber elsewhere without knativebrokerttl (as Knative does); to an
   * ingress of this server with it lowered by one, or undefined when it has reached 0 (a loop ends here).
   */
  private outgoing(e: CloudEvent, self: boolean): CloudEvent | undefined {
    if (!self) return e;
    const ttl = Number(e.attrs[TTL] ?? 255) - 1;
    if (!(ttl > 0)) return undefined;
    return { ...e, attrs: { ...e.attrs, [TTL]: ttl } };
  }

  private loopEnded(item: Item, target: string): void {
    this.d.stats.dropped++;
    this.d.observer.outcome?.(this.route, 'dropped', item.seq, String(item.event.attrs['id']));
    this.d.logger.warn(
      {
        subscription: this.label(),
        delivery: deliveryId(this.route, item),
        id: item.event.attrs['id'],
        target,
      },
      'event dropped: knativebrokerttl reached 0 on its way back into this server (an event loop?)',
    );
    this.done(item);
  }

  /**
   * Records that a delivery is finished. The concurrency slot is not held while the store makes that durable:
   * if the process dies first, the delivery is simply made again after the restart (at least once).
   */
  private done(item: Item, how: 'ack' | 'terminate' = 'terminate'): void {
    if (this.route.ordered) {
      const key = partitionKey(item.event);
      if (this.holders.get(key) === item.seq) this.holders.delete(key);
    }
    this.d.lag.sub(this.route.stream, 1);
    this.d.forgetFailure(this.route.id, item.seq);
    const settle =
      how === 'ack'
        ? this.d.state.ack(this.route.id, item.seq)
        : this.d.state.terminate(this.route.id, item.seq);
    settle.catch((err: unknown) => {
      this.d.logger.error(
        { err, subscription: this.label(), delivery: deliveryId(this.route, item) },
        'recording a finished delivery failed; it will be delivered again after a restart',
      );
    });
  }

  /** Records a failed attempt and brings the delivery back when the next one is due. */
  private async retryLater(item: Item, attempt: number, waitMs: number): Promise<void> {
    const due = Date.now() + waitMs;
    // An ordered subscription's retry holds its key: it must not queue behind the newer events it holds up.
    if (this.d.state.retriesRefetched && !this.route.ordered) {
      // A shared store hands the retry out again through fetch (to this process or another); only the
      // one that fetches it waits for it. A failed write keeps the lease, so the delivery is not lost.
      await this.d.state.retry(this.route.id, item.seq, attempt, due);
      this.backlog = true;
      return;
    }
    this.d.state.retry(this.route.id, item.seq, attempt, due, true).catch((err: unknown) => {
      this.d.logger.error(
        { err, subscription: this.label(), delivery: deliveryId(this.route, item) },
        'recording a retry failed; the retry goes ahead',
      );
    });
    // A shared store may not keep the event itself for the retention's sake: the retry keeps it here.
    const event = this.d.state.retriesRefetched ? item.event : undefined;
    if (!this.stopped) this.wakeAt(due, item.seq, attempt, item.lastError, event);
  }

  /** Knative's error extensions for an event that failed for good: where, the status code, the answer. */
  private errorExtensions(item: Item): Record<string, string> {
    const ext: Record<string, string> = { knativeerrordest: this.route.subscriberUri };
    const info = item.lastError;
    if (info?.code !== undefined) ext['knativeerrorcode'] = String(info.code);
    const data = info?.data ?? Buffer.from('the delivery failed before a restart; the response was not kept');
    if (data.length > 0)
      ext['knativeerrordata'] = data.subarray(0, this.d.opts.errorDataBytes).toString('base64');
    return ext;
  }

  /**
   * Stores an event that failed for good in the dead-letter store of its stream, with Knative's error
   * extensions and which subscription it was for (to redrive it there); true once durable.
   */
  private async keep(item: Item): Promise<boolean> {
    const attrs = {
      ...item.event.attrs,
      ...this.errorExtensions(item),
      [DL_SUBSCRIPTION]: this.route.id,
      [DL_FAILED_AT]: new Date().toISOString(),
      [DL_ATTEMPTS]: item.attempt + 1,
    };
    await this.d.log.append([
      { stream: deadLetterStream(this.route.stream), event: { ...item.event, attrs }, deliveries: [] },
    ]);
    this.d.logger.info(
      { subscription: this.label(), delivery: deliveryId(this.route, item), id: item.event.attrs['id'] },
      'delivery failed for good: the event is kept in the dead-letter store',
    );
    return true;
  }

  private async deadLetter(item: Item): Promise<void> {
    const { policy } = this.route;
    const ev: CloudEvent = { ...item.event, attrs: { ...item.event.attrs, ...this.errorExtensions(item) } };
    const out = this.outgoing(ev, this.route.deadLetterIsSelf === true);
    if (out === undefined) {
      this.loopEnded(item, policy.deadLetterUri!);
      return;
    }
    const span =
      this.d.tracer === undefined ? undefined : this.span('dead-letter', item, policy.deadLetterUri!);
    const res = await this.sendTo(policy.deadLetterUri!, out, out === ev ? TTL : undefined, item, span);
    const ok = res.kind === 'response' && res.status >= 200 && res.status < 300;
    if (span !== undefined) {
      if (res.kind === 'response') span.set('http.response.status_code', res.status);
      span.end(ok ? undefined : res.kind === 'error' ? res.error : `answered ${res.status}`);
    }
    if (ok) {
      this.d.stats.deadLettered++;
      this.d.observer.outcome?.(this.route, 'dead_lettered', item.seq, String(item.event.attrs['id']));
      this.done(item);
      return;
    }
    const dlsTry = item.attempt - policy.retry; // 1 for the first dead-letter attempt
    if (dlsTry <= policy.retry) {
      this.d.observer.outcome?.(this.route, 'retried', item.seq, String(item.event.attrs['id']));
      await this.retryLater(item, item.attempt + 1, backoffMs(policy, dlsTry));
      return;
    }
    if (this.route.keepDeadLetters === true) {
      // It is in the dead-letter store already.
      this.d.stats.deadLettered++;
      this.d.observer.outcome?.(this.route, 'dead_lettered', item.seq, String(item.event.attrs['id']));
      this.d.logger.warn(
        {
          subscription: this.label(),
          delivery: deliveryId(this.route, item),
          deadLetterSink: policy.deadLetterUri,
        },
        'the dead-letter sink failed too; the event is in the dead-letter store',
      );
      this.done(item);
      return;
    }
    this.d.stats.dropped++;
    this.d.observer.outcome?.(this.route, 'dropped', item.seq, String(item.event.attrs['id']));
    this.d.logger.error(
      {
        subscription: this.label(),
        delivery: deliveryId(this.route, item),
        id: item.event.attrs['id'],
        deadLetterSink: policy.deadLetterUri,
      },
      'the dead-letter sink failed too: event dropped',
    );
    this.done(item);
  }

  /** 'done' on success (after storing any reply); otherwise what failed and whether to retry. */
  private async handleResponse(
    item: Item,
    res: SendResult,
    span?: TraceSpan,
  ): Promise<'done' | { retry: boolean; info: FailureInfo; retryAfterMs?: number | undefined }> {
    if (res.kind === 'error') return { retry: true, info: { data: Buffer.from(res.error) } };
    if (res.status < 200 || res.status >= 300) {
      const retryAfterMs =
        (res as LocalResult).retryAfterMs ??
        (res.status === 429 || res.status === 503 ? parseRetryAfter(res.headers['retry-after']) : undefined);
      return { retry: isRetryable(res.status), info: { code: res.status, data: res.body }, retryAfterMs };
    }
    if (res.status === 202 || res.status === 204) return 'done';
    const ct = res.headers['content-type'];
    const looksLikeEvent =
      res.headers['ce-specversion'] !== undefined ||
      (typeof ct === 'string' && ct.toLowerCase().startsWith('application/cloudevents'));
    if (!looksLikeEvent) return 'done';
    const headers = flattenHeaders(res.headers);
    let reply: CloudEvent[];
    try {
      reply = decodeHttp(headers, res.body).events;
    } catch (err) {
      // Knative discards a response body that is not a CloudEvent: the delivery itself succeeded.
      this.d.logger.debug(
        {
          subscription: this.label(),
          delivery: deliveryId(this.route, item),
          reason: (err as Error).message,
        },
        'response is not a CloudEvent; ignored',
      );
      return 'done';
    }
    if (reply.length !== 1) {
      // A reply is one event (Knative's contract); a batch would let one delivery multiply events.
      this.d.logger.warn(
        { subscription: this.label(), delivery: deliveryId(this.route, item), events: reply.length },
        'reply ignored: a reply must be one event, not a batch',
      );
      return 'done';
    }
    const ttl = Number(item.event.attrs[TTL] ?? 255) - 1;
    const events: CloudEvent[] = [];
    for (const r of reply) {
      if (ttl <= 0) {
        this.d.logger.warn(
          { subscription: this.label(), delivery: deliveryId(this.route, item), id: r.attrs['id'] },
          'reply dropped: knativebrokerttl reached 0 (event loop?)',
        );
        continue;
      }
      const attrs: CloudEvent['attrs'] = { ...r.attrs, [TTL]: ttl };
      // The answer to a request over the mesh carries the request's token back to whoever waits.
      const token = item.event.attrs[REPLY_TO];
      if (token !== undefined) attrs[IN_REPLY_TO] = token;
      events.push({ ...r, attrs });
    }
    if (events.length === 0) return 'done';
    const target = this.route.reply;
    if (target.kind === 'drop') {
      this.d.logger.debug(
        { subscription: this.label(), delivery: deliveryId(this.route, item) },
        'reply dropped: the subscription has no reply destination',
      );
      return 'done';
    }
    if (target.kind === 'ingest') {
      try {
        await this.d.ingest(
          target.stream,
          events,
          span === undefined ? undefined : { span, start: span.context },
        );
        this.d.stats.replies += events.length;
        this.d.observer.replies?.(this.route, events.length);
        return 'done';
      } catch (err) {
        return {
          retry: true,
          info: {
            code: res.status,
            data: Buffer.from(`storing the reply failed: ${(err as Error).message}`),
          },
        };
      }
    }
    // To a reply destination, as Knative's channel dispatcher does: if it does not take the reply, the
    // delivery failed and is retried (the subscriber sees the event again).
    const r = await this.sendTo(target.uri, events[0]!, target.self ? undefined : TTL, item, span);
    if (r.kind === 'response' && r.status >= 200 && r.status < 300) {
      this.d.stats.replies++;
      this.d.observer.replies?.(this.route, 1);
      return 'done';
    }
    const why = r.kind === 'error' ? r.error : `the reply destination answered ${r.status}`;
    return {
      retry: true,
      info: {
        code: r.kind === 'response' ? r.status : undefined,
        data: Buffer.from(`sending the reply to ${target.uri} failed: ${why}`),
      },
    };
  }
}
