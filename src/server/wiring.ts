/**
 * Turns reconciled resources into data-plane routes: compiled filters, resolved subscriber URIs and the
 * effective retry policy (the Trigger's DeliverySpec, else its Broker's, else the server default).
 * @module
 */
import { readFileSync, statSync } from 'node:fs';

import type { RetryPolicy } from '../dataplane/retry-policy.js';
import {
  type Anchor,
  type ReplyTarget,
  type StreamRoute,
  type SubscriptionRoute,
  TriggerIndex,
  type TriggerRoute,
} from '../dataplane/routes.js';
import { signingKey } from '../dataplane/sender.js';
import type { TransformRoute } from '../dataplane/transform.js';
import { TrellisError } from '../errors.js';
import { compileAttributesFilter, DERIVED_ATTRIBUTES } from '../filter/attributes.js';
import { compileFilters } from '../filter/dialect.js';
import { streamKey } from '../resources/addressing.js';
import { MAX_LAG_ANNOTATION, retentionOf } from '../resources/broker.js';
import { type ConsumerGroupSpec, groupStream } from '../resources/consumergroup.js';
import {
  type DeliverySpec,
  keepsDeadLetters,
  ORDER_ANNOTATION,
  RATE_LIMIT_ANNOTATION,
  RATE_LIMIT_PER_SENDER_ANNOTATION,
  SIGNING_ANNOTATION,
} from '../resources/delivery-spec.js';
import { parseDuration } from '../resources/duration.js';
import type { EventTransformSpec } from '../resources/eventtransform.js';
import {
  AUTO_CREATED_LABEL,
  type EventCheck,
  type EventTypeSpec,
  eventTypeCheck,
  eventTypeStream,
  eventTypeType,
  VALIDATE_ANNOTATION,
} from '../resources/eventtype.js';
import type { ParallelSpec, SequenceSpec } from '../resources/flows.js';
import { SOURCE_KINDS } from '../resources/kinds.js';
import { parseRate, type RateSpec } from '../resources/rate.js';
import { isReady, type Snapshot } from '../resources/reconciler.js';
import type { SubscriptionSpec } from '../resources/subscription.js';
import { type TriggerSpec, triggerBroker } from '../resources/trigger.js';
import type { ResourceObject } from '../store/types.js';
import { DEFAULT_DELIVERY } from './config.js';

/** Fills a DeliverySpec's unset fields. */
export function toRetryPolicy(
  spec: DeliverySpec,
  deadLetterUri: string | undefined,
  defaultTimeoutMs: number,
): RetryPolicy {
  const ms = (s: string | undefined) => (s === undefined ? undefined : parseDuration(s));
  return {
    retry: spec.retry ?? 0,
    backoffPolicy: spec.backoffPolicy ?? 'exponential',
    backoffDelayMs: ms(spec.backoffDelay) ?? 200,
    timeoutMs: ms(spec.timeout) ?? defaultTimeoutMs,
    retryAfterMaxMs: ms(spec.retryAfterMax),
    backoffMaxMs: ms(spec.backoffMax),
    deadLetterUri,
  };
}

function hasFields(d: DeliverySpec | undefined): d is DeliverySpec {
  return d !== undefined && Object.keys(d).length > 0;
}

export interface RouteTableOptions {
  defaultTimeoutMs: number;
  defaultMaxLag: number;
  /** The server's rate limits for streams whose owner sets none (`--rate-limit`, `--rate-limit-per-sender`). */
  rateLimit?: RateSpec | undefined;
  rateLimitPerSender?: RateSpec | undefined;
  /** True for a URL served by this server (deliveries there carry knativebrokerttl). */
  isSelf?: (url: string) => boolean;
  /** Where EventTransforms go (the transformer's map); a new one when absent. */
  transforms?: Map<string, TransformRoute>;
}

/** What one resource puts into the data plane: the streams it owns and the subscriptions it reads with. */
interface Contribution {
  streams: StreamRoute[];
  subscriptions: SubscriptionRoute[];
  transform?: TransformRoute;
}

const EMPTY: Contribution = { streams: [], subscriptions: [] };

/** The uid of the resource a subscription id belongs to. */
export function subscriptionOwner(id: string): string {
  const i = id.indexOf('#');
  return i < 0 ? id : id.slice(0, i);
}

/**
 * The data plane's routes, kept current from reconciled snapshots. Each resource contributes streams
 * (a Broker, a Channel) and subscriptions (a Trigger, a Subscription); a change recomputes only what the
 * changed resources contribute, and the index of each stream concerned, so applying one resource
 * beside 10,000 costs about the same as beside ten.
 */
export class RouteTable {
  /** Every stream by key; ingress reads this map (it is updated in place). */
  readonly streams = new Map<string, StreamRoute>();
  /** Every EventTransform by key; the transformer reads this map (it is updated in place). */
  readonly transforms: Map<string, TransformRoute>;
  private readonly contributions = new Map<string, Contribution>();
  /** Each stream's subscriptions, by subscription id. */
  private readonly byStream = new Map<string, Map<string, SubscriptionRoute>>();
  private readonly subscriptionsById = new Map<string, SubscriptionRoute>();
  /** Compiled filters by resource id, with the generation they were compiled from. */
  private readonly filters = new Map<string, { generation: number; uid: string; compiled: CompiledFilter }>();

  constructor(private readonly opts: RouteTableOptions) {
    this.transforms = opts.transforms ?? new Map();
  }

  /** Every Ready subscription's route. */
  subscriptions(): SubscriptionRoute[] {
    return [...this.subscriptionsById.values()];
  }

  /** A Ready subscription's route by its id. */
  route(id: string): SubscriptionRoute | undefined {
    return this.subscriptionsById.get(id);
  }

  /** Brings the routes in line with a snapshot; only the changed resources are looked at when it says which. */
  apply(s: Snapshot): void {
    let ids: Iterable<string>;
    if (s.changed !== undefined) ids = s.changed;
    else {
      const all = new Set(this.contributions.keys());
      for (const [kind, m] of s.resources) for (const k of m.keys()) all.add(`${kind}/${k}`);
      ids = all;
    }
    const touched = new Set<string>();
    for (const id of ids) {
      if (id.startsWith('EventType/')) {
        this.eventType(id, objectById(s, id), touched);
        continue;
      }
      const old = this.contributions.get(id);
      if (old !== undefined) {
        for (const st of old.streams) {
          this.streams.delete(st.key);
          this.validation.delete(st.key);
          touched.add(st.key);
        }
        if (old.transform !== undefined) this.transforms.delete(old.transform.key);
        for (const sub of old.subscriptions) {
          this.byStream.get(sub.stream)?.delete(sub.id);
          this.subscriptionsById.delete(sub.id);
          touched.add(sub.stream);
        }
        this.contributions.delete(id);
      }
      const o = objectById(s, id);
      if (o === undefined) {
        this.filters.delete(id);
        continue;
      }
      const c = this.contribute(id, o, s);
      if (c.streams.length === 0 && c.subscriptions.length === 0 && c.transform === undefined) continue;
      this.contributions.set(id, c);
      if (c.transform !== undefined) this.transforms.set(c.transform.key, c.transform);
      for (const st of c.streams) {
        this.streams.set(st.key, st);
        touched.add(st.key);
      }
      for (const sub of c.subscriptions) {
        let m = this.byStream.get(sub.stream);
        if (m === undefined) {
          m = new Map();
          this.byStream.set(sub.stream, m);
        }
        m.set(sub.id, sub);
        this.subscriptionsById.set(sub.id, sub);
        touched.add(sub.stream);
      }
    }
    for (const key of touched) {
      const st = this.streams.get(key);
      const m = this.byStream.get(key);
      if (m !== undefined && m.size === 0) this.byStream.delete(key);
      if (st === undefined) continue;
      st.subscriptions = m ? [...m.values()] : [];
      st.index = new TriggerIndex(st.subscriptions);
      st.check = this.checkFor(st);
    }
  }

  /** The declared EventTypes of a type on a stream. */
  declaredEventTypes(stream: string, type: string): ResourceObject[] {
    const out: ResourceObject[] = [];
    for (const et of this.eventTypes.get(stream)?.values() ?? [])
      if (eventTypeType(et.spec as unknown as EventTypeSpec) === type) out.push(et);
    return out;
  }

  /** Declared EventTypes by the stream they reference, by resource id. */
  private readonly eventTypes = new Map<string, Map<string, ResourceObject>>();
  private readonly eventTypeStreams = new Map<string, string>();
  /** How each stream checks events at ingress: by its owner's `trellis.dev/validate-events`. */
  private readonly validation = new Map<string, string>();

  private eventType(id: string, o: ResourceObject | undefined, touched: Set<string>): void {
    const old = this.eventTypeStreams.get(id);
    if (old !== undefined) {
      this.eventTypes.get(old)?.delete(id);
      this.eventTypeStreams.delete(id);
      touched.add(old);
    }
    if (o === undefined || o.metadata.labels?.[AUTO_CREATED_LABEL] === 'true') return;
    const stream = eventTypeStream(o.spec as unknown as EventTypeSpec);
    if (stream === undefined) return;
    let m = this.eventTypes.get(stream);
    if (m === undefined) {
      m = new Map();
      this.eventTypes.set(stream, m);
    }
    m.set(id, o);
    this.eventTypeStreams.set(id, stream);
    touched.add(stream);
  }

  /**
   * The ingress check of a stream: with `declared`, an event whose type has declared EventTypes must
   * match one of them; with `strict`, an event whose type has none is refused too.
   */
  private checkFor(st: StreamRoute): StreamRoute['check'] {
    const mode = this.validation.get(st.key);
    if (mode !== 'declared' && mode !== 'strict') return undefined;
    const byType = new Map<string, EventCheck[]>();
    for (const et of this.eventTypes.get(st.key)?.values() ?? []) {
      const t = eventTypeType(et.spec as unknown as EventTypeSpec);
      if (t === undefined) continue;
      byType.set(t, [...(byType.get(t) ?? []), eventTypeCheck(et)]);
    }
    return (e) => {
      const checks = byType.get(String(e.attrs['type']));
      if (checks === undefined) {
        if (mode === 'strict')
          throw new TrellisError(
            'TRELLIS_ERR_EVENT_TYPE_UNKNOWN',
            `no EventType is declared for type '${String(e.attrs['type'])}' on /${st.key}, and it takes only declared types`,
            { attribute: 'type' },
          );
        return;
      }
      let first: unknown;
      for (const c of checks) {
        try {
          c(e);
          return;
        } catch (err) {
          first ??= err;
        }
      }
      throw first;
    };
  }

  private contribute(id: string, o: ResourceObject, s: Snapshot): Contribution {
    if (SOURCE_KINDS.has(o.kind)) return this.source(o);
    switch (o.kind) {
      case 'Broker':
      case 'Channel':
      case 'InMemoryChannel':
        return { streams: [this.stream(o)], subscriptions: [] };
      case 'Trigger': {
        const r = this.trigger(id, o, s);
        return r === undefined ? EMPTY : { streams: [], subscriptions: [r] };
      }
      case 'Subscription': {
        const r = this.subscription(o, s);
        return r === undefined ? EMPTY : { streams: [], subscriptions: [r] };
      }
      case 'ConsumerGroup': {
        const r = this.consumerGroup(id, o, s);
        return r === undefined ? EMPTY : { streams: [], subscriptions: [r] };
      }
      case 'EventTransform': {
        const spec = o.spec as unknown as EventTransformSpec;
        const sinkUri = o.status?.['sinkUri'] as string | undefined;
        const timeout = this.opts.defaultTimeoutMs;
        return {
          streams: [],
          subscriptions: [],
          transform: {
            key: streamKey('EventTransform', o.metadata.namespace, o.metadata.name),
            name: `${o.metadata.namespace}/${o.metadata.name}`,
            ready: isReady(o),
            expression: spec.jsonata.expression,
            reply: spec.reply?.jsonata?.expression,
            discard: spec.reply?.discard === true,
            sinkUri,
            sinkIsSelf: sinkUri !== undefined && (this.opts.isSelf ?? (() => false))(sinkUri),
            timeoutMs: timeout,
          },
        };
      }
      case 'Sequence':
        return this.sequence(o);
      case 'Parallel':
        return this.parallel(o);
      default:
        return EMPTY;
    }
  }

  private stream(o: ResourceObject): StreamRoute {
    const key = streamKey(o.kind, o.metadata.namespace, o.metadata.name);
    const maxLag = Number(o.metadata.annotations?.[MAX_LAG_ANNOTATION] ?? this.opts.defaultMaxLag);
    this.validation.set(key, o.metadata.annotations?.[VALIDATE_ANNOTATION] ?? 'off');
    return {
      key,
      kind: o.kind,
      ready: isReady(o),
      maxLag,
      ...this.rates(o.metadata.annotations),
      retention: retentionOf(o.metadata.annotations),
      subscriptions: [],
      index: new TriggerIndex([]),
      ref: { apiVersion: o.apiVersion, kind: o.kind, namespace: o.metadata.namespace, name: o.metadata.name },
    };
  }

  /**
   * A source's stream (`pingsources/namespace/name`: what it emits is stored there first, so a firing
   * survives a crash) and the subscription that delivers it to the sink, with the default DeliverySpec.
   */
  private source(o: ResourceObject): Contribution {
    const { namespace, name } = o.metadata;
    const key = `${o.kind.toLowerCase()}s/${namespace}/${name}`;
    // What a source took in is delivered once its sink resolves, whether or not the source itself is
    // running right now (a connector reconnecting, a process restarting).
    const subscriberUri = o.status?.['sinkUri'] as string | undefined;
    const stream: StreamRoute = {
      key,
      kind: o.kind,
      ready: subscriberUri !== undefined,
      maxLag: this.opts.defaultMaxLag,
      subscriptions: [],
      index: new TriggerIndex([]),
      source: true,
    };
    if (subscriberUri === undefined) return { streams: [stream], subscriptions: [] };
    // A KafkaSource's own DeliverySpec; the default for the others.
    const own = (o.spec as { delivery?: DeliverySpec }).delivery;
    const policy = hasFields(own)
      ? toRetryPolicy(own, o.status?.['deadLetterSinkUri'] as string | undefined, this.opts.defaultTimeoutMs)
      : toRetryPolicy(DEFAULT_DELIVERY, undefined, this.opts.defaultTimeoutMs);
    return {
      streams: [stream],
      subscriptions: [
        {
          id: o.metadata.uid,
          kind: o.kind,
          namespace,
          name,
          stream: key,
          subscriberUri,
          policy,
          reply: { kind: 'drop' },
          ...this.selfFlags(subscriberUri, policy),
        },
      ],
    };
  }

  /** The effective retry policy: the subscription's DeliverySpec, else its stream owner's, else the default. */
  private policy(own: DeliverySpec | undefined, ownDls: unknown, owner: ResourceObject): RetryPolicy {
    const { defaultTimeoutMs } = this.opts;
    if (hasFields(own)) return toRetryPolicy(own, ownDls as string | undefined, defaultTimeoutMs);
    const od = (owner.spec as { delivery?: DeliverySpec }).delivery;
    if (hasFields(od))
      return toRetryPolicy(od, owner.status?.['deadLetterSinkUri'] as string | undefined, defaultTimeoutMs);
    return toRetryPolicy(DEFAULT_DELIVERY, undefined, defaultTimeoutMs);
  }

  /** A stream's rate limits: its owner's annotations, else the server's flags. */
  private rates(
    a: Record<string, string> | undefined,
  ): Pick<StreamRoute, 'rateLimit' | 'rateLimitPerSender'> {
    const own = a?.[RATE_LIMIT_ANNOTATION];
    const perSender = a?.[RATE_LIMIT_PER_SENDER_ANNOTATION];
    return {
      rateLimit: own !== undefined ? parseRate(own) : this.opts.rateLimit,
      rateLimitPerSender: perSender !== undefined ? parseRate(perSender) : this.opts.rateLimitPerSender,
    };
  }

  /** Signing keys read, by where they are (`file:` ones again when the file changes). */
  private readonly keys = new Map<string, { mtime: number; key: Buffer }>();

  /** The signing key a resource's `trellis.dev/webhook-secret` names, or why it cannot be read. */
  private signing(annotations: Record<string, string> | undefined): SubscriptionRoute['signing'] {
    const ref = annotations?.[SIGNING_ANNOTATION];
    if (ref === undefined) return undefined;
    try {
      let secret: string | undefined;
      if (ref.startsWith('env:')) secret = process.env[ref.slice(4)];
      else {
        const path = ref.slice(5);
        const mtime = statSync(path).mtimeMs;
        const known = this.keys.get(ref);
        if (known !== undefined && known.mtime === mtime) return { key: known.key };
        secret = readFileSync(path, 'utf8');
        if (secret.trim() !== '') this.keys.set(ref, { mtime, key: signingKey(secret) });
      }
      if (secret === undefined || secret.trim() === '')
        return {
          error: `the signing secret at ${ref} is not set or empty: deliveries are not sent unsigned`,
        };
      return { key: signingKey(secret) };
    } catch (err) {
      return {
        error: `the signing secret at ${ref} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}): deliveries are not sent unsigned`,
      };
    }
  }

  private selfFlags(subscriberUri: string, policy: RetryPolicy) {
    const isSelf = this.opts.isSelf ?? (() => false);
    return {
      subscriberIsSelf: isSelf(subscriberUri),
      deadLetterIsSelf: policy.deadLetterUri !== undefined && isSelf(policy.deadLetterUri),
    };
  }

  private trigger(id: string, t: ResourceObject, s: Snapshot): TriggerRoute | undefined {
    if (!isReady(t)) return undefined;
    const spec = t.spec as unknown as TriggerSpec;
    const b = triggerBroker(t);
    const bkey = streamKey('Broker', b.namespace, b.name);
    const bobj = s.resources.get('Broker')?.get(`${b.namespace}/${b.name}`);
    if (bobj === undefined) return undefined;
    const policy = this.policy(spec.delivery, t.status?.['deadLetterSinkUri'], bobj);
    const compiled = this.compiled(id, t, spec);
    const subscriberUri = t.status?.['subscriberUri'] as string;
    return {
      id: t.metadata.uid,
      kind: 'Trigger',
      namespace: t.metadata.namespace,
      name: t.metadata.name,
      broker: bkey,
      stream: bkey,
      reply: { kind: 'ingest', stream: bkey },
      ...compiled,
      subscriberUri,
      policy,
      ordered: t.metadata.annotations?.[ORDER_ANNOTATION] === 'ordered',
      keepDeadLetters: keepsDeadLetters(t.metadata.annotations, bobj.metadata.annotations),
      signing: this.signing(t.metadata.annotations),
      caCerts: caCertsOf(spec.subscriber, spec.delivery?.deadLetterSink),
      subscriberAudience: spec.subscriber.audience,
      ...this.selfFlags(subscriberUri, policy),
    };
  }

  /** A filter compiled once per generation of its resource. */
  private compiled(
    id: string,
    o: ResourceObject,
    spec: Pick<TriggerSpec, 'filter' | 'filters'>,
  ): CompiledFilter {
    let f = this.filters.get(id);
    if (f === undefined || f.generation !== o.metadata.generation || f.uid !== o.metadata.uid) {
      f = {
        generation: o.metadata.generation,
        uid: o.metadata.uid,
        compiled: {
          predicate: spec.filters
            ? compileFilters(spec.filters)
            : compileAttributesFilter(spec.filter?.attributes),
          anchor: anchorOf(spec as TriggerSpec),
        },
      };
      this.filters.set(id, f);
    }
    return f.compiled;
  }

  /**
   * A consumer group's subscription: its stream, filter and delivery policy. Its attempts go to members
   * (the server attaches them where it has some); a nack's delay is honoured up to a day unless the
   * group's `retryAfterMax` says otherwise. Replies go back into a Broker; a Channel's group drops them.
   */
  private consumerGroup(id: string, g: ResourceObject, s: Snapshot): SubscriptionRoute | undefined {
    if (!isReady(g)) return undefined;
    const spec = g.spec as unknown as ConsumerGroupSpec;
    const { namespace, name } = g.metadata;
    const st = groupStream(g, { get: (k, ns, n) => s.resources.get(k)?.get(`${ns}/${n}`) });
    const owner = s.resources.get(st.kind)?.get(`${namespace}/${st.name}`);
    if (owner === undefined) return undefined;
    const key = streamKey(st.kind, namespace, st.name);
    const base = this.policy(spec.delivery, g.status?.['deadLetterSinkUri'], owner);
    const policy = { ...base, retryAfterMaxMs: base.retryAfterMaxMs ?? 86_400_000 };
    return {
      id: g.metadata.uid,
      kind: 'ConsumerGroup',
      namespace,
      name,
      stream: key,
      subscriberUri: `trellis:consumergroups/${namespace}/${name}`,
      policy,
      reply: st.kind === 'Broker' ? { kind: 'ingest', stream: key } : { kind: 'drop' },
      ...this.compiled(id, g, spec),
      ordered: spec.ordered === true,
      keepDeadLetters: keepsDeadLetters(g.metadata.annotations, owner.metadata.annotations),
      deadLetterIsSelf:
        policy.deadLetterUri !== undefined && (this.opts.isSelf ?? (() => false))(policy.deadLetterUri),
    };
  }

  /** A flow's streams (its address, then internal ones as `key#suffix`) and its parts' subscriptions. */
  private flow(o: ResourceObject, internal: string[], parts: FlowPart[]): Contribution {
    const base = streamKey(o.kind, o.metadata.namespace, o.metadata.name);
    const ready = isReady(o);
    const mk = (key: string): StreamRoute => ({
      key,
      kind: o.kind,
      ready,
      maxLag: Number(o.metadata.annotations?.[MAX_LAG_ANNOTATION] ?? this.opts.defaultMaxLag),
      ...this.rates(o.metadata.annotations),
      subscriptions: [],
      index: new TriggerIndex([]),
    });
    const streams = [mk(base), ...internal.map((k) => mk(k))];
    if (!ready) return { streams, subscriptions: [] };
    const subscriptions: SubscriptionRoute[] = [];
    for (const p of parts) {
      if (p.uri === undefined) continue;
      const policy = hasFields(p.delivery)
        ? toRetryPolicy(p.delivery, p.deadLetterUri, this.opts.defaultTimeoutMs)
        : toRetryPolicy(DEFAULT_DELIVERY, undefined, this.opts.defaultTimeoutMs);
      subscriptions.push({
        id: p.id,
        kind: o.kind,
        namespace: o.metadata.namespace,
        name: `${o.metadata.name} ${p.name}`,
        stream: p.stream,
        reply: p.reply,
        subscriberUri: p.uri,
        policy,
        keepDeadLetters: keepsDeadLetters(o.metadata.annotations),
        signing: this.signing(o.metadata.annotations),
        ...this.selfFlags(p.uri, policy),
      });
    }
    return { streams, subscriptions };
  }

  private replyTo(uri: string | undefined): ReplyTarget {
    if (uri === undefined) return { kind: 'drop' };
    return { kind: 'send', uri, self: (this.opts.isSelf ?? (() => false))(uri) };
  }

  /** Step i reads stream i (the Sequence's address for step 0); its reply goes into stream i+1. */
  private sequence(o: ResourceObject): Contribution {
    const spec = o.spec as unknown as SequenceSpec;
    const base = streamKey(o.kind, o.metadata.namespace, o.metadata.name);
    const st = (o.status?.['subscriptionStatuses'] ?? []) as {
      subscriberUri?: string;
      replyUri?: string;
      deadLetterSinkUri?: string;
    }[];
    const key = (i: number) => (i === 0 ? base : `${base}#${i}`);
    const n = spec.steps.length;
    const parts: FlowPart[] = spec.steps.map((step, i) => ({
      id: `${o.metadata.uid}#${i}`,
      name: `step ${i}`,
      stream: key(i),
      uri: st[i]?.subscriberUri,
      delivery: step.delivery,
      deadLetterUri: st[i]?.deadLetterSinkUri,
      reply: i < n - 1 ? { kind: 'ingest', stream: key(i + 1) } : this.replyTo(st[i]?.replyUri),
    }));
    return this.flow(
      o,
      spec.steps.slice(1).map((_, i) => key(i + 1)),
      parts,
    );
  }

  /**
   * Every branch reads the Parallel's address; a branch with a filter reads it through the filter, whose
   * reply (the event, to let it through) goes into the branch's own stream.
   */
  private parallel(o: ResourceObject): Contribution {
    const spec = o.spec as unknown as ParallelSpec;
    const base = streamKey(o.kind, o.metadata.namespace, o.metadata.name);
    type BranchStatus = {
      filterSubscriptionStatus?: { subscriberUri?: string; deadLetterSinkUri?: string };
      subscriptionStatus?: { subscriberUri?: string; replyUri?: string; deadLetterSinkUri?: string };
    };
    const st = (o.status?.['branchStatuses'] ?? []) as BranchStatus[];
    const internal: string[] = [];
    const parts: FlowPart[] = [];
    for (const [i, b] of spec.branches.entries()) {
      const branchStream = b.filter !== undefined ? `${base}#b${i}` : base;
      if (b.filter !== undefined) {
        internal.push(branchStream);
        parts.push({
          id: `${o.metadata.uid}#f${i}`,
          name: `branch ${i} filter`,
          stream: base,
          uri: st[i]?.filterSubscriptionStatus?.subscriberUri,
          delivery: b.delivery,
          deadLetterUri: st[i]?.filterSubscriptionStatus?.deadLetterSinkUri,
          reply: { kind: 'ingest', stream: branchStream },
        });
      }
      parts.push({
        id: `${o.metadata.uid}#b${i}`,
        name: `branch ${i}`,
        stream: branchStream,
        uri: st[i]?.subscriptionStatus?.subscriberUri,
        delivery: b.delivery,
        deadLetterUri: st[i]?.subscriptionStatus?.deadLetterSinkUri,
        reply: this.replyTo(st[i]?.subscriptionStatus?.replyUri),
      });
    }
    return this.flow(o, internal, parts);
  }

  private subscription(o: ResourceObject, s: Snapshot): SubscriptionRoute | undefined {
    if (!isReady(o)) return undefined;
    const spec = o.spec as unknown as SubscriptionSpec;
    const ch = spec.channel;
    const channel = s.resources.get(ch.kind)?.get(`${ch.namespace}/${ch.name}`);
    if (channel === undefined) return undefined;
    const physical = (o.status?.['physicalSubscription'] ?? {}) as Record<string, string | undefined>;
    const policy = this.policy(spec.delivery, physical['deadLetterSinkUri'], channel);
    const replyUri = physical['replyUri'];
    // Without a subscriber, events go straight to the reply destination (as Knative does).
    const subscriberUri = physical['subscriberUri'] ?? replyUri;
    if (subscriberUri === undefined) return undefined;
    const isSelf = this.opts.isSelf ?? (() => false);
    const reply: ReplyTarget =
      physical['subscriberUri'] !== undefined && replyUri !== undefined
        ? { kind: 'send', uri: replyUri, self: isSelf(replyUri) }
        : { kind: 'drop' };
    return {
      id: o.metadata.uid,
      kind: 'Subscription',
      namespace: o.metadata.namespace,
      name: o.metadata.name,
      stream: streamKey(ch.kind, ch.namespace, ch.name),
      reply,
      subscriberUri,
      policy,
      ordered: o.metadata.annotations?.[ORDER_ANNOTATION] === 'ordered',
      keepDeadLetters: keepsDeadLetters(o.metadata.annotations, channel.metadata.annotations),
      signing: this.signing(o.metadata.annotations),
      caCerts: caCertsOf(spec.subscriber, spec.reply, spec.delivery?.deadLetterSink),
      subscriberAudience: spec.subscriber?.audience,
      ...this.selfFlags(subscriberUri, policy),
    };
  }
}

/** A flow's part: where it reads, where it sends, what happens to the reply. */
interface FlowPart {
  id: string;
  name: string;
  stream: string;
  uri: string | undefined;
  delivery: DeliverySpec | undefined;
  deadLetterUri: string | undefined;
  reply: ReplyTarget;
}

function objectById(s: Snapshot, id: string): ResourceObject | undefined {
  const [kind, ns, name] = id.split('/');
  return s.resources.get(kind!)?.get(`${ns}/${name}`);
}

/** A Trigger's filter, compiled once per generation. */
export interface CompiledFilter {
  predicate: TriggerRoute['predicate'];
  anchor: Anchor | undefined;
}

/** An exact value the Trigger's filter requires (type preferred), so the index can find it by lookup. */
export function anchorOf(spec: TriggerSpec): Anchor | undefined {
  const exact: Record<string, string> = {};
  if (spec.filters) {
    for (const f of spec.filters) if ('exact' in f) Object.assign(exact, f.exact);
  } else {
    for (const [k, v] of Object.entries(spec.filter?.attributes ?? {})) if (v !== '') exact[k] = v;
  }
  for (const k of DERIVED_ATTRIBUTES) delete exact[k];
  const attribute = 'type' in exact ? 'type' : 'source' in exact ? 'source' : Object.keys(exact)[0];
  return attribute === undefined ? undefined : { attribute, value: exact[attribute]! };
}

/** The CA certificates a subscription's destinations name (`CACerts`), as one PEM bundle. */
function caCertsOf(...destinations: ({ CACerts?: string } | undefined)[]): string | undefined {
  const pems = destinations.map((d) => d?.CACerts).filter((c): c is string => c !== undefined);
  return pems.length === 0 ? undefined : pems.join('\n');
}
