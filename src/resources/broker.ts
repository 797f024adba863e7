/**
 * Broker (`eventing.knative.dev/v1`): spec validation. A Broker's address is `{publicUrl}/{namespace}/{name}`.
 * @module
 */
import { type DeliverySpec, validateDelivery } from './delivery-spec.js';
import { objectAt } from './validation.js';

export interface BrokerSpec {
  /** Knative's reference to a ConfigMap; accepted so Knative YAML applies, and not used. */
  config?: Record<string, unknown>;
  delivery?: DeliverySpec;
}

/** Validates a Broker spec (an absent spec is an empty one). */
export function validateBrokerSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec ?? {}, ['config', 'delivery'])!;
  const out: BrokerSpec = {};
  if (o['config'] !== undefined)
    out.config = objectAt('spec.config', o['config'], ['apiVersion', 'kind', 'name', 'namespace'])!;
  const delivery = validateDelivery('spec.delivery', o['delivery'], namespace);
  if (delivery !== undefined) out.delivery = delivery;
  return out as Record<string, unknown>;
}
