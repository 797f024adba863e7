/**
 * ApiServerSource (`sources.knative.dev/v1`): events for changes to resources, as Knative's, where the
 * API server is Trellis's own. `spec.resources` names Trellis kinds (with label selectors); `mode`
 * `Reference` (default) sends a reference to the changed object, `Resource` the whole object. Types are
 * Knative's: `dev.knative.apiserver.ref.add|update|delete`, `dev.knative.apiserver.resource.add|...`.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import type { Predicate } from '../filter/attributes.js';
import { compileFilters, type SubscriptionsFilter } from '../filter/dialect.js';
import type { ResourceObject } from '../store/types.js';
import { validateCeOverrides } from './ce-overrides.js';
import { type Cond, notOk, ok, ready, sinkProvided } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { validateFilterFields } from './trigger.js';
import { describe, invalid, isObject, objectAt, stringAt } from './validation.js';

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: {
    key: string;
    operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
    values?: string[];
  }[];
}

export interface ApiServerSourceSpec {
  mode: 'Reference' | 'Resource';
  resources: { apiVersion: string; kind: string; selector?: LabelSelector }[];
  owner?: { apiVersion?: string; kind?: string };
  namespaceSelector?: LabelSelector;
  serviceAccountName?: string;
  sink: Destination;
  ceOverrides?: { extensions: Record<string, string> };
  /** Knative's `new-apiserversource-filters`: the filters dialect, applied to each event before it is sent. */
  filters?: SubscriptionsFilter[];
}

const OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist'];
/** Resources an ApiServerSource may name at most. */
const MAX_RESOURCES = 100;

function labelSelectorAt(path: string, v: unknown): LabelSelector | undefined {
  const o = objectAt(path, v, ['matchLabels', 'matchExpressions'], true);
  if (o === undefined) return undefined;
  const out: LabelSelector = {};
  if (o['matchLabels'] !== undefined && o['matchLabels'] !== null) {
    if (!isObject(o['matchLabels']))
      invalid(`${path}.matchLabels`, `must be a map, got ${describe(o['matchLabels'])}`);
    const m: Record<string, string> = {};
    for (const [k, val] of Object.entries(o['matchLabels'])) {
      if (typeof val !== 'string')
        invalid(`${path}.matchLabels.${k}`, `must be a string, got ${describe(val)}`);
      m[k] = val;
    }
    out.matchLabels = m;
  }
  if (o['matchExpressions'] !== undefined && o['matchExpressions'] !== null) {
    const list = o['matchExpressions'];
    if (!Array.isArray(list)) invalid(`${path}.matchExpressions`, `must be a list, got ${describe(list)}`);
    if (list.length > 50) invalid(`${path}.matchExpressions`, 'has more than 50 entries');
    out.matchExpressions = list.map((e, i) => {
      const p = `${path}.matchExpressions[${i}]`;
      const x = objectAt(p, e, ['key', 'operator', 'values'])!;
      const key = stringAt(`${p}.key`, x['key'])!;
      const operator = stringAt(`${p}.operator`, x['operator'])!;
      if (!OPERATORS.includes(operator))
        invalid(`${p}.operator`, `must be one of ${OPERATORS.join(', ')}, got '${operator}'`);
      const values = x['values'];
      if (values !== undefined && (!Array.isArray(values) || values.some((v) => typeof v !== 'string')))
        invalid(`${p}.values`, 'must be a list of strings');
      if (
        (operator === 'In' || operator === 'NotIn') &&
        (values === undefined || (values as string[]).length === 0)
      )
        invalid(`${p}.values`, `must not be empty with ${operator}`);
      return {
        key,
        operator: operator as 'In',
        ...(values !== undefined ? { values: values as string[] } : {}),
      };
    });
  }
  return out;
}

/** True when the labels satisfy the selector (Kubernetes' rules; an empty selector matches everything). */
export function selects(sel: LabelSelector | undefined, labels: Record<string, string> | undefined): boolean {
  if (sel === undefined) return true;
  const l = labels ?? {};
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (l[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(l, e.key);
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
    if (e.operator === 'In' && !(has && e.values!.includes(l[e.key]!))) return false;
    if (e.operator === 'NotIn' && has && e.values!.includes(l[e.key]!)) return false;
  }
  return true;
}

/** Validates an ApiServerSource spec. */
export function validateApiServerSourceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, [
    'mode',
    'resources',
    'owner',
    'namespaceSelector',
    'serviceAccountName',
    'sink',
    'ceOverrides',
    'filters',
  ])!;
  const mode = stringAt('spec.mode', o['mode'], true) ?? 'Reference';
  if (mode !== 'Reference' && mode !== 'Resource')
    invalid('spec.mode', `must be Reference or Resource, got '${mode}'`);
  const list = o['resources'];
  if (!Array.isArray(list) || list.length === 0)
    invalid('spec.resources', 'must list at least one resource kind');
  if (list.length > MAX_RESOURCES) invalid('spec.resources', `lists more than ${MAX_RESOURCES} entries`);
  const resources = list.map((r, i) => {
    const p = `spec.resources[${i}]`;
    const x = objectAt(p, r, ['apiVersion', 'kind', 'selector', 'controller', 'labelSelector'])!;
    const sel = labelSelectorAt(`${p}.selector`, x['selector'] ?? x['labelSelector']);
    return {
      apiVersion: stringAt(`${p}.apiVersion`, x['apiVersion'])!,
      kind: stringAt(`${p}.kind`, x['kind'])!,
      ...(sel !== undefined ? { selector: sel } : {}),
    };
  });
  const out: ApiServerSourceSpec = {
    mode,
    resources,
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  const owner = objectAt('spec.owner', o['owner'], ['apiVersion', 'kind'], true);
  if (owner !== undefined)
    out.owner = {
      ...(owner['apiVersion'] !== undefined
        ? { apiVersion: stringAt('spec.owner.apiVersion', owner['apiVersion'])! }
        : {}),
      ...(owner['kind'] !== undefined ? { kind: stringAt('spec.owner.kind', owner['kind'])! } : {}),
    };
  const ns = labelSelectorAt('spec.namespaceSelector', o['namespaceSelector']);
  if (ns !== undefined) out.namespaceSelector = ns;
  const sa = stringAt('spec.serviceAccountName', o['serviceAccountName'], true);
  if (sa !== undefined) out.serviceAccountName = sa;
  const ce = validateCeOverrides(o['ceOverrides']);
  if (ce !== undefined) out.ceOverrides = ce;
  const { filters } = validateFilterFields({ filters: o['filters'] });
  if (filters !== undefined) out.filters = filters;
  return out as unknown as Record<string, unknown>;
}

/** The kinds Trellis serves, as `apiVersion kind` strings accepted by `spec.resources`. */
export type KnownKinds = (apiVersion: string, kind: string) => boolean;

/** Status: the resources it watches exist as Trellis kinds; the sink resolves. */
export function reconcileApiServerSource(
  o: ResourceObject,
  ctx: ReconcileContext,
  known: KnownKinds,
  served: string,
): Record<string, unknown> {
  const spec = o.spec as unknown as ApiServerSourceSpec;
  const conds: Cond[] = [];
  const unknown = spec.resources.filter((r) => !known(r.apiVersion, r.kind));
  const status: Record<string, unknown> = {
    observedGeneration: o.metadata.generation,
    ceAttributes: ['add', 'update', 'delete'].map((verb) => ({
      type: eventType(spec.mode, verb),
      source: ctx.publicUrl,
    })),
  };
  if (unknown.length > 0)
    conds.push(
      notOk(
        'Deployed',
        'UnknownResource',
        `spec.resources: Trellis's API server has no ${unknown.map((r) => `${r.apiVersion} ${r.kind}`).join(', ')}; it serves ${served}`,
      ),
    );
  else if (
    Object.keys(spec.namespaceSelector?.matchLabels ?? {}).length > 0 ||
    (spec.namespaceSelector?.matchExpressions?.length ?? 0) > 0
  )
    conds.push(
      notOk(
        'Deployed',
        'NamespaceLabels',
        'spec.namespaceSelector: Trellis namespaces have no labels; use {} for every namespace, or leave it out for this one',
      ),
    );
  else conds.push(ok('Deployed'));
  conds.push(sinkProvided(ctx, spec.sink, status));
  status['conditions'] = ready(conds);
  return status;
}

/** Knative's event type for a change in a mode: `dev.knative.apiserver.ref.add`, `...resource.update`. */
export function eventType(mode: ApiServerSourceSpec['mode'], verb: string): string {
  return `dev.knative.apiserver.${mode === 'Resource' ? 'resource' : 'ref'}.${verb}`;
}

/** True when a change to `obj` is one this source watches. */
export function watches(src: ResourceObject, obj: ResourceObject): boolean {
  const spec = src.spec as unknown as ApiServerSourceSpec;
  // Without a namespace selector, its own namespace; with an empty one, every namespace.
  if (spec.namespaceSelector === undefined && obj.metadata.namespace !== src.metadata.namespace) return false;
  // Trellis resources have no owner references: a source that asks for an owner sees nothing.
  if (spec.owner !== undefined) return false;
  return spec.resources.some(
    (r) => r.kind === obj.kind && r.apiVersion === obj.apiVersion && selects(r.selector, obj.metadata.labels),
  );
}

/** The event for a change, as Knative's adapter makes it. */
export function changeEvent(
  src: ResourceObject,
  obj: ResourceObject,
  verb: 'add' | 'update' | 'delete',
  apiPath: string,
  publicUrl: string,
  id: string,
): CloudEvent {
  const spec = src.spec as unknown as ApiServerSourceSpec;
  const data =
    spec.mode === 'Resource'
      ? obj
      : {
          apiVersion: obj.apiVersion,
          kind: obj.kind,
          name: obj.metadata.name,
          namespace: obj.metadata.namespace,
        };
  return {
    attrs: {
      specversion: '1.0',
      id,
      type: eventType(spec.mode, verb),
      source: publicUrl,
      subject: apiPath,
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      ...(spec.ceOverrides?.extensions ?? {}),
    },
    data: Buffer.from(JSON.stringify(data)),
  };
}

/** Compiled `spec.filters`, once per stored spec object. */
const compiled = new WeakMap<object, Predicate>();

/** True when the event passes the source's `spec.filters` (every event passes without them). */
export function passesFilters(src: ResourceObject, event: CloudEvent): boolean {
  const spec = src.spec as unknown as ApiServerSourceSpec;
  if (spec.filters === undefined) return true;
  let p = compiled.get(spec);
  if (p === undefined) {
    p = compileFilters(spec.filters);
    compiled.set(spec, p);
  }
  return p(event);
}
