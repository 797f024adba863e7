/**
 * Trigger (`eventing.knative.dev/v1`): spec validation for broker, filter.attributes, subscriber and delivery.
 * @module
 */
import { FILTER_KEY } from '../filter/attributes.js';
import { FilterError, filterWarnings, type SubscriptionsFilter, validateFilters } from '../filter/dialect.js';
import {
  type DeliverySpec,
  type Destination,
  validateDelivery,
  validateDestination,
} from './delivery-spec.js';
import { DNS1123_SUBDOMAIN, describe, invalid, isObject, objectAt, stringAt } from './validation.js';

export interface TriggerSpec {
  broker: string;
  filter?: { attributes?: Record<string, string> };
  /** Knative's filters dialect; when non-empty it overrides filter.attributes. */
  filters?: SubscriptionsFilter[];
  subscriber: Destination;
  delivery?: DeliverySpec;
}

/** Validates a Trigger spec. */
export function validateTriggerSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, ['broker', 'filter', 'filters', 'subscriber', 'delivery', 'brokerRef'])!;
  if (o['brokerRef'] !== undefined)
    invalid('spec.brokerRef', 'is not supported; name the Broker in spec.broker');
  const broker = stringAt('spec.broker', o['broker'])!;
  if (!DNS1123_SUBDOMAIN.test(broker)) invalid('spec.broker', 'must be a Broker name (a-z, 0-9, -, .)');
  const out: TriggerSpec = {
    broker,
    subscriber: validateDestination('spec.subscriber', o['subscriber'], namespace),
  };
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
  const delivery = validateDelivery('spec.delivery', o['delivery'], namespace);
  if (delivery !== undefined) out.delivery = delivery;
  return out as unknown as Record<string, unknown>;
}

/** Warnings for a stored Trigger spec: empty filter dialects, which Knative accepts and which match everything. */
export function triggerWarnings(spec: Record<string, unknown>): string[] {
  return filterWarnings((spec as unknown as TriggerSpec).filters);
}
