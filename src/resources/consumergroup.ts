import { filterWarnings, type SubscriptionsFilter } from '../filter/dialect.js';
import type { ResourceObject } from '../store/types.js';
import { resolveDeadLetter } from './broker.js';
import { type Cond, isReady, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type DeliverySpec, validateDelivery } from './delivery-spec.js';
import { parseDuration } from './duration.js';
import { validateFilterFields } from './trigger.js';
import { DNS1123_SUBDOMAIN, describe, invalid, objectAt, stringAt } from './validation.js';

/** Where a new group starts reading: the stream's oldest retained event, the next one, a time, a sequence. */
export type StartPosition =
  | { kind: 'earliest' }
  | { kind: 'latest' }
  | { kind: 'time'; ms: number }
  | { kind: 'sequence'; seq: number };

export interface ConsumerGroupSpec {
  /** A Broker of the namespace... */
  broker?: string;
  /** ...or a Channel (an InMemoryChannel when no Channel has that name). */
  channel?: string;
  filter?: { attributes?: Record<string, string> };
  filters?: SubscriptionsFilter[];
  /** Retries (an event not acknowledged in `timeout`, or nacked, goes again), backoff, dead-letter sink. */
  delivery?: DeliverySpec;
  /** Events with the same partition key go to the group one at a time, in order. */
  ordered?: boolean;
  /** Where the group starts when it is created: `latest` (default), `earliest`, an RFC 3339 time, a sequence. */
  from?: string;
  /** The group is deleted once it has had no member for this long (ISO-8601); kept forever when unset. */
  expireAfter?: string;
}

/** Set on groups a member made without a name (each such member gets every event): deleted when it goes. */
export const EPHEMERAL_LABEL = 'trellis.dev/ephemeral';

/** Parses a start position: `earliest`, `latest`, an RFC 3339 time, or a sequence number; undefined if none. */
export function parseStartPosition(v: string): StartPosition | undefined {
  const s = v.trim();
  if (s === 'earliest' || s === 'latest') return { kind: s };
  if (/^\d{1,15}$/.test(s)) return { kind: 'sequence', seq: Number(s) };
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/i.test(s)) {
    const ms = Date.parse(s);
    if (Number.isFinite(ms)) return { kind: 'time', ms };
  }
  return undefined;
}

const FROM_RULE =
  "must be 'earliest', 'latest', an RFC 3339 time (2026-12-01T10:00:00Z) or a sequence number";

/** Validates a ConsumerGroup spec. */
export function validateConsumerGroupSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, [
    'broker',
    'channel',
    'filter',
    'filters',
    'delivery',
    'ordered',
    'from',
    'expireAfter',
  ])!;
  const out: ConsumerGroupSpec = {};
  const broker = stringAt('spec.broker', o['broker'], true);
  const channel = stringAt('spec.channel', o['channel'], true);
  if ((broker === undefined) === (channel === undefined))
    invalid('spec', 'set one of broker or channel: the stream the group reads');
  if (broker !== undefined) {
    if (!DNS1123_SUBDOMAIN.test(broker)) invalid('spec.broker', 'must be a Broker name (a-z, 0-9, -, .)');
    out.broker = broker;
  }
  if (channel !== undefined) {
    if (!DNS1123_SUBDOMAIN.test(channel)) invalid('spec.channel', 'must be a Channel name (a-z, 0-9, -, .)');
    out.channel = channel;
  }
  Object.assign(out, validateFilterFields(o));
  const delivery = validateDelivery('spec.delivery', o['delivery'], namespace);
  if (delivery !== undefined) out.delivery = delivery;
  if (o['ordered'] !== undefined && o['ordered'] !== null) {
    if (typeof o['ordered'] !== 'boolean')
      invalid('spec.ordered', `must be true or false, got ${describe(o['ordered'])}`);
    if (o['ordered']) out.ordered = true;
  }
  const from = o['from'] === undefined || o['from'] === null ? undefined : String(o['from']);
  if (from !== undefined) {
    if (typeof o['from'] !== 'string' && typeof o['from'] !== 'number') invalid('spec.from', FROM_RULE);
    if (parseStartPosition(from) === undefined)
      invalid('spec.from', `${FROM_RULE}, got '${from.slice(0, 60)}'`);
    out.from = from.trim();
  }
  const expire = stringAt('spec.expireAfter', o['expireAfter'], true);
  if (expire !== undefined) {
    const ms = parseDuration(expire);
    if (ms === undefined || ms < 1000)
      invalid(
        'spec.expireAfter',
        `must be an ISO-8601 duration of at least PT1S, got '${expire.slice(0, 40)}'`,
      );
    out.expireAfter = expire;
  }
  return out as Record<string, unknown>;
}

/** Warnings for a stored spec: empty filter dialects (they match everything). */
export function consumerGroupWarnings(spec: Record<string, unknown>): string[] {
  return filterWarnings((spec as ConsumerGroupSpec).filters);
}

/** The resource a group reads: its kind, namespace and name. */
export function groupStream(
  g: ResourceObject,
  ctx?: Pick<ReconcileContext, 'get'>,
): { kind: string; name: string } {
  const spec = g.spec as ConsumerGroupSpec;
  if (spec.broker !== undefined) return { kind: 'Broker', name: spec.broker };
  const name = spec.channel!;
  if (
    ctx !== undefined &&
    ctx.get('Channel', g.metadata.namespace, name) === undefined &&
    ctx.get('InMemoryChannel', g.metadata.namespace, name) !== undefined
  )
    return { kind: 'InMemoryChannel', name };
  return { kind: 'Channel', name };
}

/** Status: the stream Ready, the dead-letter sink resolved; `stream` names what it reads. */
export function reconcileConsumerGroup(g: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = g.spec as ConsumerGroupSpec;
  const conds: Cond[] = [];
  const status: Record<string, unknown> = { observedGeneration: g.metadata.generation };
  const st = groupStream(g, ctx);
  const key = `${g.metadata.namespace}/${st.name}`;
  const target = ctx.get(st.kind, g.metadata.namespace, st.name);
  status['stream'] = { kind: st.kind, name: st.name };
  if (target !== undefined && isReady(target)) conds.push(ok('StreamReady'));
  else if (target !== undefined)
    conds.push(notOk('StreamReady', `${st.kind}NotReady`, `${st.kind} ${key} is not Ready`));
  else
    conds.push(
      notOk(
        'StreamReady',
        `${st.kind}DoesNotExist`,
        `${st.kind} ${key} does not exist; apply it and this ConsumerGroup turns Ready`,
      ),
    );
  resolveDeadLetter(ctx, spec.delivery, 'spec.delivery.deadLetterSink', conds, status);
  const warnings = consumerGroupWarnings(g.spec);
  if (warnings.length > 0)
    conds.push({ type: 'FiltersValid', status: 'True', reason: 'EmptyFilter', message: warnings.join('; ') });
  status['conditions'] = ready(conds);
  return status;
}
