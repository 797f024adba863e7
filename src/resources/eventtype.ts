/**
 * EventType (`eventing.knative.dev/v1beta3`; `v1beta2` and `v1beta1` documents are accepted and stored
 * as v1beta3): a registry of the events that flow, so a consumer can find what to subscribe to. Declared
 * by users, or registered automatically from what Broker and Channel ingress sees. A declared EventType
 * may also be checked at ingress: its required attributes, and a JSON Schema for `data`.
 * @module
 */
import { createHash } from 'node:crypto';
import { Ajv, type ValidateFunction } from 'ajv';
import type { CloudEvent } from '../cloudevents/event.js';
import { isJsonContentType } from '../cloudevents/event.js';
import { TrellisError } from '../errors.js';
import type { ResourceObject } from '../store/types.js';
import { ADDRESSABLE_API, streamKey } from './addressing.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import type { KReference } from './delivery-spec.js';
import {
  DNS1123_LABEL,
  DNS1123_SUBDOMAIN,
  describe,
  invalid,
  isObject,
  objectAt,
  stringAt,
} from './validation.js';

/** One attribute an event of this type has (Knative's EventAttributeDefinition). */
export interface EventAttribute {
  name: string;
  /** The value it always has, when fixed. */
  value?: string;
  required: boolean;
}

export interface EventTypeSpec {
  /** The Broker or Channel the events flow through. */
  reference?: KReference;
  description?: string;
  attributes: EventAttribute[];
  /** A JSON Schema for `data` (v1beta2's `schemaData`; a Trellis extension in v1beta3). */
  schemaData?: string;
}

/** Label on EventTypes Trellis registered by itself from the events it saw. */
export const AUTO_CREATED_LABEL = 'trellis.dev/auto-created';
/** Annotation on a Broker or Channel: check events at ingress against its declared EventTypes. */
export const VALIDATE_ANNOTATION = 'trellis.dev/validate-events';

const ATTR_NAME = /^[a-z0-9]{1,20}$/;

function reference(path: string, v: unknown, namespace: string): KReference {
  const r = objectAt(path, v, ['apiVersion', 'kind', 'name', 'namespace'])!;
  const kind = stringAt(`${path}.kind`, r['kind'])!;
  const apiVersion = stringAt(`${path}.apiVersion`, r['apiVersion'])!;
  const name = stringAt(`${path}.name`, r['name'])!;
  if (!DNS1123_SUBDOMAIN.test(name)) invalid(`${path}.name`, 'must be a DNS-1123 name (a-z, 0-9, -, .)');
  const ns = stringAt(`${path}.namespace`, r['namespace'], true) ?? namespace;
  if (!DNS1123_LABEL.test(ns)) invalid(`${path}.namespace`, 'must be a DNS-1123 label (a-z, 0-9, -)');
  return { apiVersion, kind, name, namespace: ns };
}

const ajv = new Ajv({ allErrors: false, strict: false });

function schemaAt(path: string, v: unknown): string | undefined {
  const s = stringAt(path, v, true);
  if (s === undefined || s.trim() === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(s);
  } catch (err) {
    invalid(path, `is not JSON: ${(err as Error).message}`);
  }
  if (!isObject(parsed) && typeof parsed !== 'boolean') invalid(path, 'must be a JSON Schema (an object)');
  try {
    ajv.compile(parsed as object);
  } catch (err) {
    invalid(path, `is not a valid JSON Schema: ${(err as Error).message}`);
  }
  return s;
}

/** Validates an EventType spec of any accepted version and returns it as v1beta3. */
export function validateEventTypeSpec(
  spec: unknown,
  namespace: string,
  apiVersion: string,
): Record<string, unknown> {
  const out: EventTypeSpec = { attributes: [] };
  if (apiVersion.endsWith('/v1beta3')) {
    const o = objectAt('spec', spec, ['reference', 'description', 'attributes', 'schemaData'])!;
    if (o['reference'] !== undefined && o['reference'] !== null)
      out.reference = reference('spec.reference', o['reference'], namespace);
    const d = stringAt('spec.description', o['description'], true);
    if (d !== undefined) out.description = d;
    const attrs = o['attributes'];
    if (!Array.isArray(attrs) || attrs.length === 0)
      invalid(
        'spec.attributes',
        `must be a non-empty list of {name, value, required}, got ${describe(attrs)}`,
      );
    if (attrs.length > 100) invalid('spec.attributes', 'has more than 100 entries');
    const seen = new Set<string>();
    for (const [i, a] of attrs.entries()) {
      const at = `spec.attributes[${i}]`;
      const ao = objectAt(at, a, ['name', 'value', 'required'])!;
      const name = stringAt(`${at}.name`, ao['name'])!;
      if (!ATTR_NAME.test(name))
        invalid(`${at}.name`, 'must be a CloudEvents attribute name (a-z, 0-9, at most 20)');
      if (seen.has(name)) invalid(`${at}.name`, `'${name}' is listed twice`);
      seen.add(name);
      const value = stringAt(`${at}.value`, ao['value'], true);
      const required = ao['required'];
      if (required !== undefined && typeof required !== 'boolean')
        invalid(`${at}.required`, 'must be true or false');
      out.attributes.push({ name, ...(value !== undefined ? { value } : {}), required: required === true });
    }
    if (!seen.has('type')) invalid('spec.attributes', "must list the 'type' attribute");
    const schema = schemaAt('spec.schemaData', o['schemaData']);
    if (schema !== undefined) out.schemaData = schema;
  } else {
    // v1beta2 and v1beta1: type, source, schema, schemaData, reference (v1beta1: also broker).
    const o = objectAt('spec', spec, [
      'type',
      'source',
      'schema',
      'schemaData',
      'reference',
      'description',
      'broker',
    ])!;
    const type = stringAt('spec.type', o['type'])!;
    out.attributes.push({ name: 'type', value: type, required: true });
    const source = stringAt('spec.source', o['source'], true);
    out.attributes.push({ name: 'source', ...(source ? { value: source } : {}), required: true });
    const schema = stringAt('spec.schema', o['schema'], true);
    if (schema) out.attributes.push({ name: 'dataschema', value: schema, required: false });
    if (o['reference'] !== undefined && o['reference'] !== null)
      out.reference = reference('spec.reference', o['reference'], namespace);
    else if (typeof o['broker'] === 'string' && o['broker'] !== '')
      out.reference = { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: o['broker'], namespace };
    const d = stringAt('spec.description', o['description'], true);
    if (d !== undefined) out.description = d;
    const sd = schemaAt('spec.schemaData', o['schemaData']);
    if (sd !== undefined) out.schemaData = sd;
  }
  return out as unknown as Record<string, unknown>;
}

/** The `type` an EventType describes, when it fixes one. */
export function eventTypeType(spec: EventTypeSpec): string | undefined {
  return spec.attributes.find((a) => a.name === 'type')?.value;
}

/** The stream an EventType's reference names, when it is one of ours. */
export function eventTypeStream(spec: EventTypeSpec): string | undefined {
  const r = spec.reference;
  if (r === undefined || ADDRESSABLE_API[r.kind] !== r.apiVersion) return undefined;
  return streamKey(r.kind, r.namespace, r.name);
}

/** Status: Ready when the reference exists (or there is none); what ingress saw is kept. */
export function reconcileEventType(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as EventTypeSpec;
  const conds: Cond[] = [];
  const r = spec.reference;
  if (r !== undefined) {
    const exists =
      ADDRESSABLE_API[r.kind] === r.apiVersion ? ctx.get(r.kind, r.namespace, r.name) !== undefined : false;
    conds.push(
      exists
        ? ok('ReferenceExists')
        : notOk(
            'ReferenceExists',
            'ResourceDoesNotExist',
            `spec.reference: ${r.kind} ${r.namespace}/${r.name} does not exist`,
          ),
    );
  }
  // status.seen (what ingress saw) is written by the EventType recorder and kept by the reconciler.
  return { observedGeneration: o.metadata.generation, conditions: ready(conds) };
}

/** The name of the EventType auto-registered for a type seen on a stream. */
export function autoEventTypeName(stream: string, type: string): string {
  return `et-${createHash('sha256').update(`${stream}\u0000${type}`).digest('hex').slice(0, 20)}`;
}

/** A check compiled from the declared EventTypes of one type on one stream. */
export type EventCheck = (e: CloudEvent) => void;

const compiled = new Map<string, ValidateFunction>();

/** Compiles an EventType into an ingress check; throws TRELLIS_ERR_EVENT_TYPE_INVALID with what failed. */
export function eventTypeCheck(o: ResourceObject): EventCheck {
  const spec = o.spec as unknown as EventTypeSpec;
  const name = `${o.metadata.namespace}/${o.metadata.name}`;
  const required = spec.attributes.filter((a) => a.required);
  const fixed = spec.attributes.filter((a) => a.value !== undefined && a.name !== 'type' && a.required);
  let validate: ValidateFunction | undefined;
  if (spec.schemaData !== undefined) {
    const key = `${o.metadata.uid}/${o.metadata.generation}`;
    validate = compiled.get(key);
    if (validate === undefined) {
      validate = ajv.compile(JSON.parse(spec.schemaData) as object);
      if (compiled.size > 10_000) compiled.clear();
      compiled.set(key, validate);
    }
  }
  const fail = (attribute: string, message: string): never => {
    throw new TrellisError(
      'TRELLIS_ERR_EVENT_TYPE_INVALID',
      `the event does not match EventType ${name}: ${message}`,
      {
        eventType: name,
        attribute,
      },
    );
  };
  return (e) => {
    for (const a of required)
      if (e.attrs[a.name] === undefined) fail(a.name, `attribute '${a.name}' is required`);
    for (const a of fixed)
      if (String(e.attrs[a.name]) !== a.value) fail(a.name, `attribute '${a.name}' must be '${a.value}'`);
    if (validate === undefined) return;
    const ct = e.attrs['datacontenttype'] as string | undefined;
    if (e.data === undefined) return fail('data', 'data is required by its schema');
    if (ct !== undefined && !isJsonContentType(ct))
      return fail('datacontenttype', `data must be JSON for its schema, got '${ct}'`);
    let data: unknown;
    try {
      data = JSON.parse(e.data.toString('utf8'));
    } catch {
      return fail('data', 'data is not JSON');
    }
    let valid: boolean;
    try {
      valid = validate(data) as boolean;
    } catch {
      return fail('data', 'data nests too deeply for its schema');
    }
    if (!valid) {
      const err = validate.errors?.[0];
      fail('data', `data${err?.instancePath ?? ''} ${err?.message ?? 'does not match its schema'}`);
    }
  };
}

/** Checks the event-validation annotation of a Broker or Channel: `off`, `declared` or `strict`. */
export function validateValidationAnnotation(annotations: Record<string, string> | undefined): void {
  const v = annotations?.[VALIDATE_ANNOTATION];
  if (v !== undefined && v !== 'off' && v !== 'declared' && v !== 'strict')
    invalid(
      `metadata.annotations.${VALIDATE_ANNOTATION}`,
      `must be 'off', 'declared' or 'strict', got '${v}'`,
    );
}
