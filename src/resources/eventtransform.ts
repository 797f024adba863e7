/**
 * EventTransform (`eventing.knative.dev/v1alpha1`): Knative's JSONata transform. Addressable; an event
 * sent to it is transformed by `spec.jsonata.expression` (the input is the event in structured JSON, the
 * output must be one) and, with `spec.sink`, forwarded there (the sink's reply, optionally transformed
 * by `spec.reply`, is the answer); without a sink, the transformed event is the answer (a reply).
 * @module
 */
import jsonata from 'jsonata';
import type { ResourceObject } from '../store/types.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { invalid, objectAt, stringAt } from './validation.js';

export interface EventTransformSpec {
  sink?: Destination;
  jsonata: { expression: string };
  reply?: { jsonata?: { expression: string }; discard?: boolean };
}

/** The longest JSONata expression accepted, in characters. */
export const MAX_EXPRESSION = 64 * 1024;

function expressionAt(path: string, v: unknown): { expression: string } {
  const o = objectAt(path, v, ['expression'])!;
  const expression = stringAt(`${path}.expression`, o['expression'])!;
  if (expression.trim() === '') invalid(`${path}.expression`, 'must be a JSONata expression');
  if (expression.length > MAX_EXPRESSION)
    invalid(`${path}.expression`, `is over ${MAX_EXPRESSION} characters`);
  try {
    jsonata(expression);
  } catch (err) {
    const e = err as { message?: string; position?: number };
    invalid(
      `${path}.expression`,
      `JSONata does not parse: ${e.message}${e.position !== undefined ? ` (position ${e.position})` : ''}`,
    );
  }
  return { expression };
}

/** Validates an EventTransform spec. */
export function validateEventTransformSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, ['sink', 'jsonata', 'reply'])!;
  const out: EventTransformSpec = { jsonata: expressionAt('spec.jsonata', o['jsonata']) };
  if (o['sink'] !== undefined && o['sink'] !== null)
    out.sink = validateDestination('spec.sink', o['sink'], namespace);
  const r = objectAt('spec.reply', o['reply'], ['jsonata', 'discard'], true);
  if (r !== undefined) {
    if (out.sink === undefined)
      invalid(
        'spec.reply',
        'is only used with spec.sink (without a sink, the transformed event is the reply)',
      );
    const reply: NonNullable<EventTransformSpec['reply']> = {};
    if (r['jsonata'] !== undefined && r['jsonata'] !== null)
      reply.jsonata = expressionAt('spec.reply.jsonata', r['jsonata']);
    if (r['discard'] !== undefined) {
      if (typeof r['discard'] !== 'boolean') invalid('spec.reply.discard', 'must be true or false');
      reply.discard = r['discard'];
    }
    if (reply.discard === true && reply.jsonata !== undefined)
      invalid('spec.reply', 'set jsonata or discard, not both');
    out.reply = reply;
  }
  return out as unknown as Record<string, unknown>;
}

/** Status: its address, and its sink resolved when it has one. */
export function reconcileEventTransform(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as EventTransformSpec;
  const conds: Cond[] = [ok('Addressable'), ok('TransformationReady')];
  const status: Record<string, unknown> = {
    observedGeneration: o.metadata.generation,
    address: { url: ctx.address('EventTransform', o.metadata.namespace, o.metadata.name) },
  };
  if (spec.sink !== undefined) {
    const r = ctx.resolve(spec.sink);
    if ('uri' in r) {
      conds.push(ok('SinkResolved'));
      status['sinkUri'] = r.uri;
    } else conds.push(notOk('SinkResolved', r.reason, `spec.sink: ${r.message}`));
  }
  status['conditions'] = ready(conds);
  return status;
}
