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

/** Builds the route table from a reconciled snapshot. */
export function buildRoutes(
  s: Snapshot,
  defaultTimeoutMs: number,
  defaultMaxLag: number,
  /** Filters compiled by earlier calls, by uid and generation: a change recompiles only what changed. */
  cache: Map<string, CompiledFilter> = new Map(),
  /** True for a URL served by this server (deliveries there carry knativebrokerttl). */
  isSelf: (url: string) => boolean = () => false,
): { brokers: Map<string, BrokerRoute>; triggers: TriggerRoute[] } {
  const used = new Set<string>();
  const brokers = new Map<string, BrokerRoute>();
  const brokerObjs = new Map<string, ResourceObject>();
  for (const b of s.brokers) {
    const key = `${b.metadata.namespace}/${b.metadata.name}`;
    const maxLag = Number(b.metadata.annotations?.[MAX_LAG_ANNOTATION] ?? defaultMaxLag);
    brokers.set(key, { key, ready: isReady(b), maxLag, triggers: [], index: new TriggerIndex([]) });
    brokerObjs.set(key, b);
  }
  const triggers: TriggerRoute[] = [];
  for (const t of s.triggers) {
    if (!isReady(t)) continue;
    const spec = t.spec as unknown as TriggerSpec;
    const key = `${t.metadata.namespace}/${spec.broker}`;
    const broker = brokers.get(key);
    const bobj = brokerObjs.get(key);
    if (!broker || !bobj) continue;
    const bspec = bobj.spec as BrokerSpec;
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
    const route: TriggerRoute = {
      id: t.metadata.uid,
      namespace: t.metadata.namespace,
      name: t.metadata.name,
      broker: key,
      ...compiledFilter(t, spec, cache, used),
      subscriberUri: t.status?.['subscriberUri'] as string,
      policy,
      subscriberIsSelf: isSelf(t.status?.['subscriberUri'] as string),
      deadLetterIsSelf: policy.deadLetterUri !== undefined && isSelf(policy.deadLetterUri),
    };
    broker.triggers.push(route);
    triggers.push(route);
  }
  for (const b of brokers.values()) b.index = new TriggerIndex(b.triggers);
  for (const k of cache.keys()) if (!used.has(k)) cache.delete(k);
  return { brokers, triggers };
}

/** A Trigger's filter, compiled once per generation. */
export interface CompiledFilter {
  predicate: TriggerRoute['predicate'];
  anchor: Anchor | undefined;
}

function compiledFilter(
  t: ResourceObject,
  spec: TriggerSpec,
  cache: Map<string, CompiledFilter>,
  used: Set<string>,
): CompiledFilter {
  const key = `${t.metadata.uid}/${t.metadata.generation}`;
  used.add(key);
  let c = cache.get(key);
  if (c === undefined) {
    c = {
      predicate: spec.filters
        ? compileFilters(spec.filters)
        : compileAttributesFilter(spec.filter?.attributes),
      anchor: anchorOf(spec),
    };
    cache.set(key, c);
  }
  return c;
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
