/**
 * Turns reconciled resources into data-plane routes: compiled filters, resolved subscriber URIs and the
 * effective retry policy (the Trigger's DeliverySpec, else its Broker's, else the server default).
 * @module
 */

import type { RetryPolicy } from '../dataplane/retry-policy.js';
import { type Anchor, type BrokerRoute, TriggerIndex, type TriggerRoute } from '../dataplane/routes.js';
import { compileAttributesFilter, DERIVED_ATTRIBUTES } from '../filter/attributes.js';
import { compileFilters } from '../filter/dialect.js';
import type { BrokerSpec } from '../resources/broker.js';
import { MAX_LAG_ANNOTATION } from '../resources/broker.js';
import type { DeliverySpec } from '../resources/delivery-spec.js';
import { parseDuration } from '../resources/duration.js';
import { isReady, type Snapshot } from '../resources/reconciler.js';
import type { TriggerSpec } from '../resources/trigger.js';
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
  /** True for a URL served by this server (deliveries there carry knativebrokerttl). */
  isSelf?: (url: string) => boolean;
}

/**
 * The data plane's routes, kept current from reconciled snapshots: a change recomputes only the Triggers
 * and Brokers it touched (and the index of each Broker concerned), so applying one resource beside 10,000
 * costs about the same as beside ten.
 */
export class RouteTable {
  /** Ready and not-Ready Brokers by `namespace/name`; ingress reads this map (it is updated in place). */
  readonly brokers = new Map<string, BrokerRoute>();
  /** Routes of Ready Triggers, by Trigger `namespace/name`. */
  private readonly routes = new Map<string, TriggerRoute>();
  /** Each Broker's Trigger routes, by Trigger key. */
  private readonly byBroker = new Map<string, Map<string, TriggerRoute>>();
  /** Compiled filters by Trigger key, with the generation they were compiled from. */
  private readonly filters = new Map<string, { generation: number; uid: string; compiled: CompiledFilter }>();

  constructor(private readonly opts: RouteTableOptions) {}

  /** Every Ready Trigger's route. */
  triggers(): TriggerRoute[] {
    return [...this.routes.values()];
  }

  /** Brings the routes in line with a snapshot; only the changed keys are looked at when it says which. */
  apply(s: Snapshot): void {
    const brokerKeys = s.changed ? s.changed.brokers : new Set([...this.brokers.keys(), ...s.brokers.keys()]);
    const triggerKeys = s.changed
      ? s.changed.triggers
      : new Set([...this.routes.keys(), ...s.triggers.keys()]);
    const touched = new Set<string>();
    for (const key of brokerKeys) {
      const b = s.brokers.get(key);
      touched.add(key);
      if (b === undefined) {
        this.brokers.delete(key);
        continue;
      }
      const maxLag = Number(b.metadata.annotations?.[MAX_LAG_ANNOTATION] ?? this.opts.defaultMaxLag);
      this.brokers.set(key, { key, ready: isReady(b), maxLag, triggers: [], index: new TriggerIndex([]) });
    }
    for (const key of triggerKeys) {
      const old = this.routes.get(key);
      if (old !== undefined) {
        this.routes.delete(key);
        this.byBroker.get(old.broker)?.delete(key);
        touched.add(old.broker);
      }
      const t = s.triggers.get(key);
      if (t === undefined) {
        this.filters.delete(key);
        continue;
      }
      const route = this.route(key, t, s);
      if (route === undefined) continue;
      this.routes.set(key, route);
      let m = this.byBroker.get(route.broker);
      if (m === undefined) {
        m = new Map();
        this.byBroker.set(route.broker, m);
      }
      m.set(key, route);
      touched.add(route.broker);
    }
    for (const key of touched) {
      const br = this.brokers.get(key);
      const m = this.byBroker.get(key);
      if (m !== undefined && m.size === 0) this.byBroker.delete(key);
      if (br === undefined) continue;
      br.triggers = m ? [...m.values()] : [];
      br.index = new TriggerIndex(br.triggers);
    }
  }

  private route(key: string, t: ResourceObject, s: Snapshot): TriggerRoute | undefined {
    if (!isReady(t)) return undefined;
    const spec = t.spec as unknown as TriggerSpec;
    const bkey = `${t.metadata.namespace}/${spec.broker}`;
    const bobj = s.brokers.get(bkey);
    if (bobj === undefined || !this.brokers.has(bkey)) return undefined;
    const bspec = bobj.spec as BrokerSpec;
    const { defaultTimeoutMs } = this.opts;
    let policy: RetryPolicy;
    if (hasFields(spec.delivery)) {
      policy = toRetryPolicy(
        spec.delivery,
        t.status?.['deadLetterSinkUri'] as string | undefined,
        defaultTimeoutMs,
      );
    } else if (hasFields(bspec.delivery)) {
      policy = toRetryPolicy(
        bspec.delivery,
        bobj.status?.['deadLetterSinkUri'] as string | undefined,
        defaultTimeoutMs,
      );
    } else {
      policy = toRetryPolicy(DEFAULT_DELIVERY, undefined, defaultTimeoutMs);
    }
    let f = this.filters.get(key);
    if (f === undefined || f.generation !== t.metadata.generation || f.uid !== t.metadata.uid) {
      f = {
        generation: t.metadata.generation,
        uid: t.metadata.uid,
        compiled: {
          predicate: spec.filters
            ? compileFilters(spec.filters)
            : compileAttributesFilter(spec.filter?.attributes),
          anchor: anchorOf(spec),
        },
      };
      this.filters.set(key, f);
    }
    const isSelf = this.opts.isSelf ?? (() => false);
    const subscriberUri = t.status?.['subscriberUri'] as string;
    return {
      id: t.metadata.uid,
      kind: 'Trigger',
      namespace: t.metadata.namespace,
      name: t.metadata.name,
      broker: bkey,
      stream: bkey,
      reply: { kind: 'ingest', stream: bkey },
      ...f.compiled,
      subscriberUri,
      policy,
      subscriberIsSelf: isSelf(subscriberUri),
      deadLetterIsSelf: policy.deadLetterUri !== undefined && isSelf(policy.deadLetterUri),
    };
  }
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
