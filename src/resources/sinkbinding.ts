/**
 * SinkBinding (`sources.knative.dev/v1`): binds a sink to a subject. Knative injects `K_SINK` and
 * `K_CE_OVERRIDES` into the subject's pods; Trellis has no pods, so the binding resolves the sink and
 * `trellis run --sink sinkbinding/NAME -- COMMAND` starts a local command with them in its environment.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { validateCeOverrides } from './ce-overrides.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { describe, invalid, isObject, objectAt, stringAt } from './validation.js';

export interface SinkBindingSpec {
  subject: {
    apiVersion: string;
    kind: string;
    name?: string;
    namespace?: string;
    selector?: Record<string, unknown>;
  };
  sink: Destination;
  ceOverrides?: { extensions: Record<string, string> };
}

export function validateSinkBindingSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, ['subject', 'sink', 'ceOverrides'])!;
  const s = objectAt('spec.subject', o['subject'], ['apiVersion', 'kind', 'name', 'namespace', 'selector'])!;
  const subject: SinkBindingSpec['subject'] = {
    apiVersion: stringAt('spec.subject.apiVersion', s['apiVersion'])!,
    kind: stringAt('spec.subject.kind', s['kind'])!,
  };
  const name = stringAt('spec.subject.name', s['name'], true);
  if (name !== undefined) subject.name = name;
  const ns = stringAt('spec.subject.namespace', s['namespace'], true);
  if (ns !== undefined) subject.namespace = ns;
  if (s['selector'] !== undefined && s['selector'] !== null) {
    if (!isObject(s['selector']))
      invalid('spec.subject.selector', `must be a label selector, got ${describe(s['selector'])}`);
    subject.selector = s['selector'];
  }
  if (subject.name !== undefined && subject.selector !== undefined)
    invalid('spec.subject', 'set name or selector, not both');
  if (subject.name === undefined && subject.selector === undefined)
    invalid('spec.subject', 'needs a name or a selector');
  const out: SinkBindingSpec = { subject, sink: validateDestination('spec.sink', o['sink'], namespace) };
  const ce = validateCeOverrides(o['ceOverrides']);
  if (ce !== undefined) out.ceOverrides = ce;
  return out as unknown as Record<string, unknown>;
}

/** Status: the sink resolved (what `trellis run` gives its command as K_SINK). */
export function reconcileSinkBinding(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as SinkBindingSpec;
  const status: Record<string, unknown> = { observedGeneration: o.metadata.generation };
  const r = ctx.resolve(spec.sink);
  const conds: Cond[] = [];
  if ('uri' in r) {
    conds.push(ok('SinkProvided'), ok('BindingAvailable'));
    status['sinkUri'] = r.uri;
  } else conds.push(notOk('SinkProvided', r.reason, `spec.sink: ${r.message}`));
  status['conditions'] = ready(conds);
  return status;
}
