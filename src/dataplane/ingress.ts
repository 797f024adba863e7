/**
 * Broker ingress: checks the Broker, applies Knative's loop guard (knativebrokerttl) and arrival time,
 * matches Triggers, stores events with their pending deliveries, and only then acknowledges.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import { TrellisError } from '../errors.js';
import type { EventLog } from '../store/types.js';
import { LagCounter } from './lag.js';
import type { DataPlaneObserver } from './observer.js';
import type { StreamRoute } from './routes.js';
import type { IngressTrace, Tracer } from './tracing.js';

/** Knative's default loop guard. */
export const DEFAULT_TTL = 255;

const INT32_MAX = 2147483647;

/**
 * The loop budget an event arrives with: absent means {@link DEFAULT_TTL}; a value above it is lowered to
 * it, so no sender can lift the loop limit. Throws the 400 the sender should see for anything else.
 */
export function ttlOf(raw: unknown): number {
  if (raw === undefined) return DEFAULT_TTL;
  const s = String(raw).trim();
  const ttl = typeof raw === 'number' ? raw : /^[+-]?\d{1,12}$/.test(s) ? Number(s) : Number.NaN;
  if (!Number.isInteger(ttl) || ttl > INT32_MAX || ttl < -INT32_MAX - 1) {
    throw new TrellisError(
      'TRELLIS_ERR_INVALID_EVENT',
      `attribute 'knativebrokerttl': must be an Integer (32 bits), got '${s.slice(0, 40)}'`,
      { attribute: 'knativebrokerttl', rule: 'type' },
    );
  }
  if (ttl < 0) {
    throw new TrellisError(
      'TRELLIS_ERR_INVALID_EVENT',
      `attribute 'knativebrokerttl' is ${ttl}: it must not be negative`,
      { attribute: 'knativebrokerttl', rule: 'range' },
    );
  }
  if (ttl === 0) {
    throw new TrellisError(
      'TRELLIS_ERR_TTL_EXHAUSTED',
      "attribute 'knativebrokerttl' is 0: the event went round through Triggers and replies too often (a loop?)",
      { attribute: 'knativebrokerttl' },
    );
  }
  return Math.min(ttl, DEFAULT_TTL);
}

export interface IngressHooks {
  /** Called for each stored delivery, so the Trigger's worker can start at once. */
  notify(subscription: string, seq: number, event: CloudEvent): void;
  /**
   * Called once per request with the events stored and their sequence numbers (EventType registration,
   * live tails); must be cheap.
   */
  stored?(stream: StreamRoute, events: readonly CloudEvent[], seqs: readonly number[]): void;
}

/** Who sent: a token's subject and issuer. */
export interface SenderIdentity {
  sub: string;
  iss: string;
}

/**
 * Authentication of senders (`--authentication oidc`): the identity an `Authorization` header proves for
 * an audience — at once when the token is known, else a promise —; throws (or rejects with) the 401.
 */
export interface Senders {
  check(
    authorization: string | undefined,
    audience: string,
    /** The connection: a TLS socket, or `{ authorized, getPeerCertificate }` where a transport gives only the verified certificate (gRPC); a client certificate may identify the sender. */
    socket?: unknown,
  ): SenderIdentity | Promise<SenderIdentity>;
  /** Throws the 403 unless the sender may send these events to the stream (its EventPolicies). */
  authorize(stream: string, sender: SenderIdentity, events: readonly CloudEvent[]): void;
}

export interface IngressLimits {
  /** Refuse events (503) while this many are waiting to be made durable. */
  maxPendingWrites: number;
}

export class Ingress {
  /** Every stream ingress serves (Brokers, Channels, flows), by key; kept current by the composition root. */
  streams = new Map<string, StreamRoute>();
  accepting = true;
  accepted = 0;
  /** Hears every request answered and every append (metrics, live stats). */
  observer: DataPlaneObserver = {};
  /** Set when senders must authenticate (HTTP ingress checks their tokens). */
  senders: Senders | undefined;
  /** Set when tracing is on: spans for the filter and the append, under the request's. */
  tracer: Tracer | undefined;

  constructor(
    private readonly log: EventLog,
    private readonly hooks: IngressHooks,
    readonly lag: LagCounter = new LagCounter(),
    private readonly limits: IngressLimits = { maxPendingWrites: Number.POSITIVE_INFINITY },
  ) {}

  /** Looks a stream up, or throws the 404 the producer should see. */
  route(key: string): StreamRoute {
    const b = this.streams.get(key);
    if (b === undefined) {
      const slash = key.split('/');
      if (slash.length === 2)
        throw new TrellisError('TRELLIS_ERR_BROKER_NOT_FOUND', `Broker ${key} does not exist`, {
          broker: key,
        });
      throw new TrellisError('TRELLIS_ERR_DESTINATION_NOT_FOUND', `nothing takes events at /${key}`, {
        path: `/${key}`,
      });
    }
    if (!b.ready) {
      if (b.kind === 'Broker')
        throw new TrellisError('TRELLIS_ERR_BROKER_NOT_READY', `Broker ${key} is not Ready`, { broker: key });
      throw new TrellisError('TRELLIS_ERR_DESTINATION_NOT_READY', `${b.kind} at /${key} is not Ready`, {
        path: `/${key}`,
      });
    }
    return b;
  }

  /**
   * Stores events for a Broker; resolves once they and their deliveries are durable, with how many
   * deliveries were recorded (0: no subscription took them). Throws TrellisError (404, 400 for TTL, 503
   * when the store fails).
   */
  async accept(key: string, events: CloudEvent[], trace?: IngressTrace): Promise<number> {
    if (!this.accepting)
      throw new TrellisError(
        'TRELLIS_ERR_SHUTTING_DOWN',
        'the server is shutting down; retry on another instance or later',
      );
    const broker = this.route(key);
    if (this.log.pendingWrites() >= this.limits.maxPendingWrites) {
      throw new TrellisError(
        'TRELLIS_ERR_OVERLOADED',
        `the store is ${this.log.pendingWrites()} events behind; nothing was accepted, retry after the Retry-After delay`,
        { retryAfter: 1 },
      );
    }
    const lag = this.lag.get(key);
    if (lag >= broker.maxLag) {
      throw new TrellisError(
        'TRELLIS_ERR_BROKER_LAGGING',
        `${broker.kind} ${key} has ${lag} deliveries waiting (its ceiling is ${broker.maxLag}); its subscribers are behind. ` +
          'Nothing was accepted; retry after the Retry-After delay',
        { broker: key, lag, maxLag: broker.maxLag, retryAfter: 1 },
      );
    }
    const arrival = new Date().toISOString();
    const check = broker.check;
    const tracer = trace === undefined ? undefined : this.tracer;
    const filterSpan = tracer?.start('filter', trace!.span, 'internal');
    let items: { stream: string; event: CloudEvent; deliveries: string[] }[];
    try {
      items = events.map((e) => {
        // The distributed-tracing extension carries where the transmission started: kept when the event
        // has it, else added (the CloudEvents extension allows a middleware to).
        if (
          trace !== undefined &&
          e.attrs['traceparent'] === undefined &&
          trace.start.traceparent !== undefined
        ) {
          e.attrs['traceparent'] = trace.start.traceparent;
          if (trace.start.tracestate !== undefined) e.attrs['tracestate'] = trace.start.tracestate;
        }
        if (check !== undefined) check(e);
        if (broker.source === true) return { stream: key, event: e, deliveries: broker.index.match(e) };
        const ttl = ttlOf(e.attrs['knativebrokerttl']);
        // The decoded event belongs to this request: the Broker's attributes are set in place.
        e.attrs['knativebrokerttl'] = ttl;
        e.attrs['knativearrivaltime'] = arrival;
        const event = e;
        const deliveries = broker.index.match(event);
        return { stream: key, event, deliveries };
      });
    } catch (err) {
      filterSpan?.end((err as Error).message);
      throw err;
    }
    if (filterSpan !== undefined) {
      let n = 0;
      for (const it of items) n += it.deliveries.length;
      filterSpan.set('trellis.deliveries', n);
      filterSpan.end();
    }
    let seqs: number[];
    const started = performance.now();
    const appendSpan = tracer?.start('store append', trace!.span, 'internal', {
      'messaging.batch.message_count': items.length,
    });
    try {
      seqs = await this.log.append(items);
      this.observer.append?.(items.length, (performance.now() - started) / 1000);
      appendSpan?.end();
    } catch (err) {
      appendSpan?.end((err as Error).message);
      throw new TrellisError(
        'TRELLIS_ERR_STORE_UNAVAILABLE',
        `the store could not make the events durable: ${(err as Error).message}; nothing was accepted, retry later`,
        { retryAfter: 1 },
        { cause: err },
      );
    }
    this.accepted += items.length;
    this.hooks.stored?.(broker, events, seqs);
    let stored = 0;
    for (const it of items) stored += it.deliveries.length;
    if (stored > 0) this.lag.add(key, stored);
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      for (const sub of it.deliveries) this.hooks.notify(sub, seqs[i]!, it.event);
    }
    return stored;
  }
}
