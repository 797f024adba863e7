/**
 * Channel and InMemoryChannel (`messaging.knative.dev/v1`): addressable streams whose every Subscription
 * gets every event. Both are durable in Trellis: an event is stored before the 202, whatever
 * `spec.channelTemplate` names (Knative's InMemoryChannel is not durable; here it is).
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { resolveDeadLetter } from './broker.js';
import { type Cond, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type DeliverySpec, validateDelivery } from './delivery-spec.js';
import { describe, invalid, isObject, objectAt, stringAt } from './validation.js';

export interface ChannelSpec {
  /** Knative's template for the backing channel; accepted, and Trellis's own store backs every Channel. */
  channelTemplate?: { apiVersion: string; kind: string; spec?: Record<string, unknown> };
  delivery?: DeliverySpec;
}

function validateCommon(o: Record<string, unknown>, namespace: string, out: ChannelSpec): void {
  const delivery = validateDelivery('spec.delivery', o['delivery'], namespace);
  if (delivery !== undefined) out.delivery = delivery;
  // spec.subscribers is written by Knative's Subscription controller; Trellis keeps that in Subscriptions.
  if (o['subscribers'] !== undefined && o['subscribers'] !== null && !Array.isArray(o['subscribers']))
    invalid('spec.subscribers', `must be a list, got ${describe(o['subscribers'])}`);
}

/** Validates a Channel spec. */
export function validateChannelSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec ?? {}, ['channelTemplate', 'delivery', 'subscribers'])!;
  const out: ChannelSpec = {};
  const t = objectAt('spec.channelTemplate', o['channelTemplate'], ['apiVersion', 'kind', 'spec'], true);
  if (t !== undefined) {
    const apiVersion = stringAt('spec.channelTemplate.apiVersion', t['apiVersion'])!;
    const kind = stringAt('spec.channelTemplate.kind', t['kind'])!;
    if (t['spec'] !== undefined && t['spec'] !== null && !isObject(t['spec']))
      invalid('spec.channelTemplate.spec', `must be an object, got ${describe(t['spec'])}`);
    out.channelTemplate = { apiVersion, kind, ...(isObject(t['spec']) ? { spec: t['spec'] } : {}) };
  }
  validateCommon(o, namespace, out);
  return out as Record<string, unknown>;
}

/** Validates an InMemoryChannel spec. */
export function validateInMemoryChannelSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec ?? {}, ['delivery', 'subscribers'])!;
  const out: ChannelSpec = {};
  validateCommon(o, namespace, out);
  return out as Record<string, unknown>;
}

/** Status of a Channel or InMemoryChannel: addressable and durable at once. */
export function reconcileChannel(c: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = c.spec as ChannelSpec;
  const conds: Cond[] = [
    ok('Addressable'),
    {
      type: 'Durable',
      status: 'True',
      reason: 'StoredBeforeAccepted',
      message:
        'events are stored durably before the 202' +
        (spec.channelTemplate
          ? `; Trellis's store backs it whatever the template names (${spec.channelTemplate.kind})`
          : ''),
    },
  ];
  const status: Record<string, unknown> = {
    observedGeneration: c.metadata.generation,
    address: { url: ctx.address(c.kind, c.metadata.namespace, c.metadata.name) },
  };
  resolveDeadLetter(ctx, spec.delivery, 'spec.delivery.deadLetterSink', conds, status);
  // The Subscriptions of this channel, as Knative's channel status lists them.
  const subscribers = ctx
    .list('Subscription')
    .filter((sub) => {
      const ch = (sub.spec as { channel?: { kind: string; namespace: string; name: string } }).channel;
      return ch?.kind === c.kind && ch.namespace === c.metadata.namespace && ch.name === c.metadata.name;
    })
    .map((sub) => ({
      uid: sub.metadata.uid,
      observedGeneration: sub.metadata.generation,
      name: sub.metadata.name,
      namespace: sub.metadata.namespace,
    }));
  if (subscribers.length > 0) status['subscribers'] = subscribers;
  status['conditions'] = ready(conds);
  return status;
}
