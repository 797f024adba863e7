/**
 * Sequence and Parallel (`flows.knative.dev/v1`). A Sequence passes each event through its steps in
 * order, each step's reply being the next step's input, and the last reply to `spec.reply`. A Parallel
 * gives each event to every branch: a branch's `filter` (a subscriber that answers with the event to let
 * it through) decides whether its `subscriber` gets it; replies go to the branch's `reply`, else to
 * `spec.reply`. Knative builds both from Channels and Subscriptions; Trellis builds them from its own
 * streams and subscriptions, stored and retried like everything else, and lists them in status.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import {
  type DeliverySpec,
  type Destination,
  validateDelivery,
  validateDestination,
} from './delivery-spec.js';
import { describe, invalid, isObject, objectAt, stringAt } from './validation.js';

/** A step: a destination, and the delivery of events to it. */
export interface SequenceStep extends Destination {
  delivery?: DeliverySpec;
}

export interface SequenceSpec {
  steps: SequenceStep[];
  reply?: Destination;
  channelTemplate?: Record<string, unknown>;
}

export interface ParallelBranch {
  filter?: Destination;
  subscriber: Destination;
  reply?: Destination;
  delivery?: DeliverySpec;
}

export interface ParallelSpec {
  branches: ParallelBranch[];
  reply?: Destination;
  channelTemplate?: Record<string, unknown>;
}

/** At most this many steps or branches (each is a subscription with its own worker). */
export const MAX_FLOW_PARTS = 100;

function channelTemplate(v: unknown): Record<string, unknown> | undefined {
  if (v === undefined || v === null) return undefined;
  const t = objectAt('spec.channelTemplate', v, ['apiVersion', 'kind', 'spec'])!;
  stringAt('spec.channelTemplate.apiVersion', t['apiVersion']);
  stringAt('spec.channelTemplate.kind', t['kind']);
  return t;
}

function list(path: string, v: unknown): unknown[] {
  if (!Array.isArray(v) || v.length === 0) invalid(path, `must be a non-empty list, got ${describe(v)}`);
  if (v.length > MAX_FLOW_PARTS) invalid(path, `has ${v.length} entries; at most ${MAX_FLOW_PARTS}`);
  return v;
}

/** Validates a Sequence spec. */
export function validateSequenceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, ['steps', 'reply', 'channelTemplate'])!;
  const steps = list('spec.steps', o['steps']).map((s, i) => {
    const at = `spec.steps[${i}]`;
    if (!isObject(s)) invalid(at, `must be an object, got ${describe(s)}`);
    const { delivery, ...dest } = s;
    const step: SequenceStep = validateDestination(at, dest, namespace);
    const d = validateDelivery(`${at}.delivery`, delivery, namespace);
    if (d !== undefined) step.delivery = d;
    return step;
  });
  const out: SequenceSpec = { steps };
  if (o['reply'] !== undefined && o['reply'] !== null)
    out.reply = validateDestination('spec.reply', o['reply'], namespace);
  const t = channelTemplate(o['channelTemplate']);
  if (t !== undefined) out.channelTemplate = t;
  return out as unknown as Record<string, unknown>;
}

/** Validates a Parallel spec. */
export function validateParallelSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, ['branches', 'reply', 'channelTemplate'])!;
  const branches = list('spec.branches', o['branches']).map((b, i) => {
    const at = `spec.branches[${i}]`;
    const bo = objectAt(at, b, ['filter', 'subscriber', 'reply', 'delivery'])!;
    const branch: ParallelBranch = {
      subscriber: validateDestination(`${at}.subscriber`, bo['subscriber'], namespace),
    };
    if (bo['filter'] !== undefined && bo['filter'] !== null)
      branch.filter = validateDestination(`${at}.filter`, bo['filter'], namespace);
    if (bo['reply'] !== undefined && bo['reply'] !== null)
      branch.reply = validateDestination(`${at}.reply`, bo['reply'], namespace);
    const d = validateDelivery(`${at}.delivery`, bo['delivery'], namespace);
    if (d !== undefined) branch.delivery = d;
    return branch;
  });
  const out: ParallelSpec = { branches };
  if (o['reply'] !== undefined && o['reply'] !== null)
    out.reply = validateDestination('spec.reply', o['reply'], namespace);
  const t = channelTemplate(o['channelTemplate']);
  if (t !== undefined) out.channelTemplate = t;
  return out as unknown as Record<string, unknown>;
}

/** The subscription ids a Sequence's steps use in the store. */
export function sequenceSubscriptionIds(o: ResourceObject): string[] {
  return (o.spec as unknown as SequenceSpec).steps.map((_, i) => `${o.metadata.uid}#${i}`);
}

/** The subscription ids a Parallel's filters and branches use in the store. */
export function parallelSubscriptionIds(o: ResourceObject): string[] {
  const ids: string[] = [];
  for (const [i, b] of (o.spec as unknown as ParallelSpec).branches.entries()) {
    if (b.filter !== undefined) ids.push(`${o.metadata.uid}#f${i}`);
    ids.push(`${o.metadata.uid}#b${i}`);
  }
  return ids;
}

type Resolved = { uri?: string; error?: string };

function resolveAt(
  ctx: ReconcileContext,
  path: string,
  d: Destination | undefined,
  errors: string[],
): Resolved {
  if (d === undefined) return {};
  const r = ctx.resolve(d);
  if ('uri' in r) return { uri: r.uri };
  errors.push(`${path}: ${r.message}`);
  return { error: r.message };
}

/** A flow's conditions: addressable at once, its subscriptions ready when every destination resolved. */
function flowConditions(errors: string[]): Cond[] {
  return [
    ok('Addressable'),
    ok('ChannelsReady'),
    errors.length === 0
      ? ok('SubscriptionsReady')
      : notOk('SubscriptionsReady', 'Unresolvable', errors.join('; ')),
  ];
}

function readyOf(r: Resolved[]): { type: 'Ready'; status: 'True' | 'False' } {
  return { type: 'Ready', status: r.some((x) => x.error !== undefined) ? 'False' : 'True' };
}

/**
 * Status of a Sequence: its address (the first step's input), and one entry per step in
 * `subscriptionStatuses` and `channelStatuses`, named as Knative names the objects it would create.
 */
export function reconcileSequence(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as SequenceSpec;
  const { namespace, name } = o.metadata;
  const errors: string[] = [];
  const steps = spec.steps.map((s, i) => resolveAt(ctx, `spec.steps[${i}]`, s, errors));
  const dls = spec.steps.map((s, i) =>
    resolveAt(ctx, `spec.steps[${i}].delivery.deadLetterSink`, s.delivery?.deadLetterSink, errors),
  );
  const reply = resolveAt(ctx, 'spec.reply', spec.reply, errors);
  const conds = flowConditions(errors);
  return {
    observedGeneration: o.metadata.generation,
    address: { url: ctx.address('Sequence', namespace, name) },
    channelStatuses: spec.steps.map((_, i) => ({
      channel: {
        apiVersion: 'messaging.knative.dev/v1',
        kind: 'InMemoryChannel',
        name: `${name}-kn-sequence-${i}`,
        namespace,
      },
      ready: { type: 'Ready', status: 'True' },
    })),
    subscriptionStatuses: steps.map((r, i) => ({
      subscription: {
        apiVersion: 'messaging.knative.dev/v1',
        kind: 'Subscription',
        name: `${name}-kn-sequence-${i}`,
        namespace,
      },
      subscriberUri: r.uri,
      ...(i === steps.length - 1 && reply.uri !== undefined ? { replyUri: reply.uri } : {}),
      ...(dls[i]!.uri !== undefined ? { deadLetterSinkUri: dls[i]!.uri } : {}),
      ready: readyOf(i === steps.length - 1 ? [r, reply, dls[i]!] : [r, dls[i]!]),
    })),
    conditions: ready(conds),
  };
}

/** Status of a Parallel: its address, and per branch its filter and subscriber subscriptions. */
export function reconcileParallel(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as ParallelSpec;
  const { namespace, name } = o.metadata;
  const errors: string[] = [];
  const reply = resolveAt(ctx, 'spec.reply', spec.reply, errors);
  const branches = spec.branches.map((b, i) => {
    const filter = resolveAt(ctx, `spec.branches[${i}].filter`, b.filter, errors);
    const subscriber = resolveAt(ctx, `spec.branches[${i}].subscriber`, b.subscriber, errors);
    const own = resolveAt(ctx, `spec.branches[${i}].reply`, b.reply, errors);
    const dls = resolveAt(
      ctx,
      `spec.branches[${i}].delivery.deadLetterSink`,
      b.delivery?.deadLetterSink,
      errors,
    );
    const dlsUri = dls.uri !== undefined ? { deadLetterSinkUri: dls.uri } : {};
    const replyUri = b.reply !== undefined ? own.uri : reply.uri;
    const sub = (suffix: string) => ({
      apiVersion: 'messaging.knative.dev/v1',
      kind: 'Subscription',
      name: `${name}-kn-parallel-${suffix}${i}`,
      namespace,
    });
    return {
      ...(b.filter !== undefined
        ? {
            filterSubscriptionStatus: {
              subscription: sub('filter-'),
              subscriberUri: filter.uri,
              ready: readyOf([filter]),
            },
          }
        : {}),
      subscriptionStatus: {
        subscription: sub(''),
        subscriberUri: subscriber.uri,
        ...(replyUri !== undefined ? { replyUri } : {}),
        ...dlsUri,
        ready: readyOf([subscriber, own, dls]),
      },
    };
  });
  const conds = flowConditions(errors);
  return {
    observedGeneration: o.metadata.generation,
    address: { url: ctx.address('Parallel', namespace, name) },
    ingressChannelStatus: {
      channel: {
        apiVersion: 'messaging.knative.dev/v1',
        kind: 'InMemoryChannel',
        name: `${name}-kn-parallel`,
        namespace,
      },
      ready: { type: 'Ready', status: 'True' },
    },
    branchStatuses: branches,
    conditions: ready(conds),
  };
}
