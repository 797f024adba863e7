/**
 * Subscription (`messaging.knative.dev/v1`): delivers every event of a Channel to a subscriber, at least
 * once; the subscriber's reply goes to `reply`, or is dropped when there is none.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { resolveDeadLetter } from './broker.js';
import { type Cond, isReady, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import {
  type DeliverySpec,
  type Destination,
  type KReference,
  validateDelivery,
  validateDestination,
} from './delivery-spec.js';
import { DNS1123_LABEL, DNS1123_SUBDOMAIN, invalid, objectAt, stringAt } from './validation.js';

/** The channel kinds a Subscription may name. */
export const CHANNEL_KINDS: Readonly<Record<string, string>> = {
  Channel: 'messaging.knative.dev/v1',
  InMemoryChannel: 'messaging.knative.dev/v1',
};

export interface SubscriptionSpec {
  channel: KReference;
  subscriber?: Destination;
  reply?: Destination;
  delivery?: DeliverySpec;
}

/** Validates a Subscription spec. */
export function validateSubscriptionSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, ['channel', 'subscriber', 'reply', 'delivery'])!;
  const c = objectAt('spec.channel', o['channel'], ['apiVersion', 'kind', 'name', 'namespace'])!;
  const kind = stringAt('spec.channel.kind', c['kind'])!;
  const apiVersion = stringAt('spec.channel.apiVersion', c['apiVersion'])!;
  const name = stringAt('spec.channel.name', c['name'])!;
  if (!DNS1123_SUBDOMAIN.test(name)) invalid('spec.channel.name', 'must be a DNS-1123 name (a-z, 0-9, -, .)');
  const ns = stringAt('spec.channel.namespace', c['namespace'], true) ?? namespace;
  if (!DNS1123_LABEL.test(ns)) invalid('spec.channel.namespace', 'must be a DNS-1123 label (a-z, 0-9, -)');
  const want = CHANNEL_KINDS[kind];
  if (want !== undefined && apiVersion !== want)
    invalid('spec.channel.apiVersion', `must be '${want}' for kind ${kind}`);
  const out: SubscriptionSpec = { channel: { apiVersion, kind, name, namespace: ns } };
  if (o['subscriber'] !== undefined && o['subscriber'] !== null)
    out.subscriber = validateDestination('spec.subscriber', o['subscriber'], namespace);
  if (o['reply'] !== undefined && o['reply'] !== null)
    out.reply = validateDestination('spec.reply', o['reply'], namespace);
  if (out.subscriber === undefined && out.reply === undefined)
    invalid('spec', 'needs a subscriber, a reply, or both');
  const delivery = validateDelivery('spec.delivery', o['delivery'], namespace);
  if (delivery !== undefined) out.delivery = delivery;
  return out as unknown as Record<string, unknown>;
}

/** Status of a Subscription: its Channel Ready, its subscriber, reply and dead-letter sink resolved. */
export function reconcileSubscription(s: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = s.spec as unknown as SubscriptionSpec;
  const conds: Cond[] = [];
  const status: Record<string, unknown> = { observedGeneration: s.metadata.generation };
  const ch = spec.channel;
  const chKey = `${ch.namespace}/${ch.name}`;
  if (CHANNEL_KINDS[ch.kind] === undefined) {
    conds.push(
      notOk(
        'ChannelReady',
        'ChannelKindNotSupported',
        `spec.channel: kind ${ch.kind} (${ch.apiVersion}) is not a channel Trellis serves; use Channel or InMemoryChannel (messaging.knative.dev/v1)`,
      ),
    );
  } else {
    const channel = ctx.get(ch.kind, ch.namespace, ch.name);
    if (channel === undefined)
      conds.push(
        notOk(
          'ChannelReady',
          'ChannelNotFound',
          `${ch.kind} ${chKey} does not exist; apply it and this Subscription turns Ready`,
        ),
      );
    else if (!isReady(channel))
      conds.push(notOk('ChannelReady', 'ChannelNotReady', `${ch.kind} ${chKey} is not Ready`));
    else conds.push(ok('ChannelReady'));
  }
  const physical: Record<string, string> = {};
  const refs: string[] = [];
  for (const [field, d] of [
    ['subscriber', spec.subscriber],
    ['reply', spec.reply],
  ] as const) {
    if (d === undefined) continue;
    const r = ctx.resolve(d);
    if ('uri' in r) physical[`${field}Uri`] = r.uri;
    else refs.push(`spec.${field}: ${r.message}`);
  }
  conds.push(
    refs.length === 0
      ? ok('ReferencesResolved')
      : notOk('ReferencesResolved', 'Unresolvable', refs.join('; ')),
  );
  const dlsStatus: Record<string, unknown> = {};
  resolveDeadLetter(ctx, spec.delivery, 'spec.delivery.deadLetterSink', conds, dlsStatus);
  if (typeof dlsStatus['deadLetterSinkUri'] === 'string')
    physical['deadLetterSinkUri'] = dlsStatus['deadLetterSinkUri'];
  conds.push(ok('AddedToChannel'));
  status['physicalSubscription'] = physical;
  status['conditions'] = ready(conds);
  return status;
}
