/**
 * Trigger (`eventing.knative.dev/v1`): spec validation for broker, filter.attributes, subscriber and delivery.
 * @module
 */
import { FILTER_KEY } from '../filter/attributes.js';
import { FilterError, filterWarnings, type SubscriptionsFilter, validateFilters } from '../filter/dialect.js';
import type { ResourceObject } from '../store/types.js';
import { resolveDeadLetter } from './broker.js';
import { type Cond, isReady, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import {
  type DeliverySpec,
  type Destination,
  validateDelivery,
  validateDestination,
} from './delivery-spec.js';
import {
  DNS1123_LABEL,
  DNS1123_SUBDOMAIN,
  describe,
  invalid,
  isObject,
  objectAt,
  stringAt,
} from './validation.js';

export interface TriggerSpec {
  broker: string;
  /** Set from `spec.brokerRef.namespace` when the Broker is in another namespace. */
  brokerNamespace?: string;
  filter?: { attributes?: Record<string, string> };
  /** Knative's filters dialect; when non-empty it overrides filter.attributes. */
  filters?: SubscriptionsFilter[];
  subscriber: Destination;
  delivery?: DeliverySpec;
}

/**
 * A subscription's `filters` (the filters dialect) and `filter.attributes` as a Trigger has them (a
 * ConsumerGroup too); throws TRELLIS_ERR_RESOURCE_INVALID naming the field.
 */
export function validateFilterFields(o: Record<string, unknown>): Pick<TriggerSpec, 'filter' | 'filters'> {
  const out: Pick<TriggerSpec, 'filter' | 'filters'> = {};
  if (o['filters'] !== undefined && o['filters'] !== null) {
    try {
      const filters = validateFilters('spec.filters', o['filters']);
      if (filters.length > 0) out.filters = filters;
    } catch (err) {
      if (err instanceof FilterError) invalid(err.path, err.rule);
      throw err;
    }
  }
  const filter = objectAt('spec.filter', o['filter'], ['attributes'], true);
  if (filter !== undefined) {
    const attrs = filter['attributes'];
    if (attrs !== undefined && attrs !== null) {
      if (!isObject(attrs))
        invalid('spec.filter.attributes', `must be a map of attribute to value, got ${describe(attrs)}`);
      const attributes: Record<string, string> = {};
      for (const [k, v] of Object.entries(attrs)) {
        const path = `spec.filter.attributes.${k}`;
        if (!FILTER_KEY.test(k)) invalid(path, 'attribute names must match ^[a-z][a-z0-9]*$');
        if (typeof v !== 'string')
          invalid(path, `must be a string (quote numbers and booleans), got ${describe(v)}`);
        attributes[k] = v;
      }
      out.filter = { attributes };
    } else {
      out.filter = {};
    }
  }
  return out;
}

/** Validates a Trigger spec. */
export function validateTriggerSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, ['broker', 'filter', 'filters', 'subscriber', 'delivery', 'brokerRef'])!;
  let broker: string;
  let brokerNamespace: string | undefined;
  if (o['brokerRef'] !== undefined && o['brokerRef'] !== null) {
    // Knative's brokerRef (cross-namespace event links): a Broker by reference, possibly elsewhere.
    const r = objectAt('spec.brokerRef', o['brokerRef'], ['apiVersion', 'kind', 'name', 'namespace'])!;
    const kind = stringAt('spec.brokerRef.kind', r['kind'], true) ?? 'Broker';
    if (kind !== 'Broker') invalid('spec.brokerRef.kind', `must be Broker, got '${kind}'`);
    const apiVersion = stringAt('spec.brokerRef.apiVersion', r['apiVersion'], true);
    if (apiVersion !== undefined && apiVersion !== 'eventing.knative.dev/v1')
      invalid('spec.brokerRef.apiVersion', "must be 'eventing.knative.dev/v1'");
    broker = stringAt('spec.brokerRef.name', r['name'])!;
    if (!DNS1123_SUBDOMAIN.test(broker))
      invalid('spec.brokerRef.name', 'must be a Broker name (a-z, 0-9, -, .)');
    const ns = stringAt('spec.brokerRef.namespace', r['namespace'], true);
    if (ns !== undefined && ns !== namespace) {
      if (!DNS1123_LABEL.test(ns))
        invalid('spec.brokerRef.namespace', 'must be a DNS-1123 label (a-z, 0-9, -)');
      brokerNamespace = ns;
    }
    if (o['broker'] !== undefined && o['broker'] !== broker)
      invalid(
        'spec.broker',
        `names '${String(o['broker'])}' while spec.brokerRef names '${broker}'; set one`,
      );
  } else {
    broker = stringAt('spec.broker', o['broker'])!;
    if (!DNS1123_SUBDOMAIN.test(broker)) invalid('spec.broker', 'must be a Broker name (a-z, 0-9, -, .)');
  }
  // The subscriber is checked last, so that a field misplaced into filter (a subscriber under filter,
  // say) is named as an unknown field there rather than as a missing subscriber.
  const out = {
    broker,
    ...(brokerNamespace !== undefined ? { brokerNamespace } : {}),
  } as TriggerSpec;
  Object.assign(out, validateFilterFields(o));
  const delivery = validateDelivery('spec.delivery', o['delivery'], namespace);
  if (delivery !== undefined) out.delivery = delivery;
  out.subscriber = validateDestination('spec.subscriber', o['subscriber'], namespace);
  // Keys in the order earlier versions stored them, so re-applying an unchanged Trigger stays unchanged.
  const { filter: f, filters: fs, delivery: d, subscriber, ...head } = out;
  return {
    ...head,
    subscriber,
    ...(fs !== undefined ? { filters: fs } : {}),
    ...(f !== undefined ? { filter: f } : {}),
    ...(d !== undefined ? { delivery: d } : {}),
  } as unknown as Record<string, unknown>;
}

/** Warnings for a stored Trigger spec: empty filter dialects, which Knative accepts and which match everything. */
export function triggerWarnings(spec: Record<string, unknown>): string[] {
  return filterWarnings((spec as unknown as TriggerSpec).filters);
}

/** The Broker a Trigger names: `spec.broker` in its namespace, or `spec.brokerRef` (possibly elsewhere). */
export function triggerBroker(t: ResourceObject): { namespace: string; name: string } {
  const spec = t.spec as unknown as TriggerSpec;
  return { namespace: spec.brokerNamespace ?? t.metadata.namespace, name: spec.broker };
}

/** Status of a Trigger: its Broker Ready, its subscriber and dead-letter sink resolved, filter warnings. */
export function reconcileTrigger(t: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = t.spec as unknown as TriggerSpec;
  const conds: Cond[] = [];
  const status: Record<string, unknown> = { observedGeneration: t.metadata.generation };
  const b = triggerBroker(t);
  const bkey = `${b.namespace}/${b.name}`;
  const broker = ctx.get('Broker', b.namespace, b.name);
  if (broker !== undefined && isReady(broker)) conds.push(ok('BrokerReady'));
  else if (broker !== undefined)
    conds.push(notOk('BrokerReady', 'BrokerNotReady', `Broker ${bkey} is not Ready`));
  else
    conds.push(
      notOk(
        'BrokerReady',
        'BrokerDoesNotExist',
        `Broker ${bkey} does not exist; apply it and this Trigger turns Ready`,
      ),
    );
  const sub = ctx.resolve(spec.subscriber);
  if ('uri' in sub) {
    conds.push(ok('SubscriberResolved'));
    status['subscriberUri'] = sub.uri;
  } else conds.push(notOk('SubscriberResolved', sub.reason, `spec.subscriber: ${sub.message}`));
  resolveDeadLetter(ctx, spec.delivery, 'spec.delivery.deadLetterSink', conds, status);
  const warnings = triggerWarnings(t.spec);
  if (warnings.length > 0)
    conds.push({ type: 'FiltersValid', status: 'True', reason: 'EmptyFilter', message: warnings.join('; ') });
  status['conditions'] = ready(conds);
  return status;
}
