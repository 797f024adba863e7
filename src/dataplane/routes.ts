/**
 * What the data plane routes by: each Ready Broker with its Ready Triggers, compiled filters and retry
 * policies. Built by the composition root from resources; read by ingress and dispatcher per event.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import type { Predicate } from '../filter/attributes.js';
import type { StreamRetention } from '../store/types.js';
import type { LocalDestination } from './groups.js';
import type { Rate } from './rate-limit.js';
import type { RetryPolicy } from './retry-policy.js';

/** An exact constraint every event of a Trigger must meet, used to find candidate Triggers by lookup. */
export interface Anchor {
  attribute: string;
  value: string;
}

/** What happens to a subscriber's reply event (a 2xx answer that is a CloudEvent). */
export type ReplyTarget =
  /** Back into a stream of this server (a Trigger's reply goes into its Broker). */
  | { kind: 'ingest'; stream: string }
  /** Sent to a destination (a Subscription's `reply`); `self` when it is an ingress of this server. */
  | { kind: 'send'; uri: string; self: boolean }
  /** Nowhere: the reply is dropped (a Subscription without `reply`). */
  | { kind: 'drop' };

/**
 * One subscription the dispatcher drains, whatever resource it comes from (a Trigger, a Channel's
 * Subscription, a flow step): where events go, with which delivery policy and dead-letter sink, what to
 * do with a reply, and which stream's lag it counts in.
 */
export interface SubscriptionRoute {
  /** The subscription id in the store (a resource uid, or uid and a step for flows). */
  id: string;
  /** The resource it comes from, for logs: `Trigger`, `Subscription`, ... */
  kind: string;
  namespace: string;
  name: string;
  /** The stream its events come from (`namespace/broker`, `channels/namespace/name`): its lag key. */
  stream: string;
  subscriberUri: string;
  policy: RetryPolicy;
  reply: ReplyTarget;
  /**
   * True when the subscriber (or the dead-letter sink) is an ingress of this server: the event then goes
   * with its knativebrokerttl lowered by one, so that a loop back into a Broker still counts down.
   */
  subscriberIsSelf?: boolean;
  deadLetterIsSelf?: boolean;
  /** Events with the same partition key are delivered one at a time, in order. */
  ordered?: boolean;
  /** Events that fail for good are kept in the dead-letter store (`deadletters/` + the stream's address). */
  keepDeadLetters?: boolean;
  /**
   * Sign every delivery (Standard Webhooks) with this key; `error` when the secret named could not be
   * read (deliveries then fail rather than go unsigned).
   */
  signing?: { key: Buffer } | { error: string } | undefined;
  /** PEM CA certificates its https destinations are trusted with, besides the system's (their CACerts). */
  caCerts?: string | undefined;
  /** The subscriber's OIDC audience, when its destination names one: deliveries carry a token for it. */
  subscriberAudience?: string | undefined;
  /**
   * Set for a consumer group's subscription in a process where it has members: attempts go to them
   * instead of `subscriberUri` (which then only names the group, in logs and error extensions).
   */
  local?: LocalDestination | undefined;
  /** Which events of the stream it takes; undefined: every one. */
  predicate?: Predicate | undefined;
  /** Set when the filter requires an exact attribute value: the subscription is found by lookup. */
  anchor?: Anchor | undefined;
}

/** A Trigger's subscription: its Broker's stream, with the filter the Broker's index evaluates. */
export interface TriggerRoute extends SubscriptionRoute {
  /** `namespace/broker` (the same as `stream`). */
  broker: string;
  predicate: Predicate;
  /** Set when the filter requires an exact attribute value: the Trigger is found by lookup. */
  anchor?: Anchor | undefined;
}

/** A stream ingress appends to (a Broker's, a Channel's, a flow's), with the subscriptions that read it. */
export interface StreamRoute {
  /** The stream key: `namespace/broker`, `channels/namespace/name`, ... */
  key: string;
  /** The kind of resource that owns it, for messages (`Broker`, `Channel`). */
  kind: string;
  ready: boolean;
  /** Ingress answers 429 while this many deliveries of the stream are pending. */
  maxLag: number;
  subscriptions: SubscriptionRoute[];
  /** Finds the subscriptions an event matches; built once when resources change. */
  index: TriggerIndex;
  /** Checks each event before it is stored (declared EventTypes); throws the 400 to answer. */
  check?: ((e: CloudEvent) => void) | undefined;
  /** A source's stream (a PingSource's): its events get no Broker attributes (knativearrivaltime, TTL). */
  source?: boolean;
  /** Events per second HTTP ingress takes for the stream (429 beyond), and per sender address. */
  rateLimit?: Rate | undefined;
  rateLimitPerSender?: Rate | undefined;
  /** How much of its history is kept, from its owner's annotations (the server's default when absent). */
  retention?: StreamRetention | undefined;
  /** The resource it belongs to, when events there are registered as EventTypes (Brokers, Channels). */
  ref?: { apiVersion: string; kind: string; namespace: string; name: string } | undefined;
}

/** The Broker's stream route (the name the Broker-only code used). */
export type BrokerRoute = StreamRoute;

/**
 * A Broker's Triggers indexed by an exact attribute value their filter requires (`type` first): an event
 * is checked only against the Triggers its own values select, plus those without such a constraint. The
 * cost per event follows the number of candidate Triggers, not the number of Triggers.
 */
export class TriggerIndex {
  private readonly byAttr = new Map<string, Map<string, SubscriptionRoute[]>>();
  private readonly rest: SubscriptionRoute[] = [];

  constructor(triggers: readonly SubscriptionRoute[]) {
    for (const t of triggers) {
      if (t.anchor === undefined) {
        this.rest.push(t);
        continue;
      }
      let m = this.byAttr.get(t.anchor.attribute);
      if (m === undefined) {
        m = new Map();
        this.byAttr.set(t.anchor.attribute, m);
      }
      const list = m.get(t.anchor.value);
      if (list === undefined) m.set(t.anchor.value, [t]);
      else list.push(t);
    }
  }

  /** The ids of the Triggers whose filter passes the event. */
  match(e: CloudEvent): string[] {
    const out: string[] = [];
    for (const [attr, m] of this.byAttr) {
      const v = e.attrs[attr];
      if (v === undefined) continue;
      const list = m.get(typeof v === 'string' ? v : String(v));
      if (list !== undefined)
        for (const t of list) if (t.predicate === undefined || t.predicate(e)) out.push(t.id);
    }
    for (const t of this.rest) if (t.predicate === undefined || t.predicate(e)) out.push(t.id);
    return out;
  }
}

/** Minimal structured logger (pino's shape). */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
