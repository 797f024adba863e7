/**
 * Knative's `spec.filter.attributes` compiled once into a predicate: every key must match (AND), equality is
 * case-sensitive on the canonical string, `""` means "present and non-empty", a missing attribute never matches.
 * @module
 */
import { type CloudEvent, canonicalString } from '../cloudevents/event.js';

/** A compiled filter: true when the event should be delivered. */
export type Predicate = (e: CloudEvent) => boolean;

/** Attribute names a filter may use (Knative: `^[a-z][a-z0-9]*$`). */
export const FILTER_KEY = /^[a-z][a-z0-9]*$/;

const always: Predicate = () => true;

/**
 * Names Knative's filters know beside the event's own attributes: `schemaurl` (CloudEvents 0.3's name of
 * `dataschema`) and `datamediatype` (`datacontenttype` without its parameters, lower-cased).
 */
export const DERIVED_ATTRIBUTES: ReadonlySet<string> = new Set(['schemaurl', 'datamediatype']);

/** An attribute as Knative's filters look it up, as its canonical string; undefined when absent. */
export function filterAttribute(e: CloudEvent, name: string): string | undefined {
  if (name === 'schemaurl') name = 'dataschema';
  else if (name === 'datamediatype') {
    const ct = e.attrs['datacontenttype'];
    if (ct === undefined) return undefined;
    const s = canonicalString(ct);
    const semi = s.indexOf(';');
    return (semi < 0 ? s : s.slice(0, semi)).trim().toLowerCase();
  }
  const v = e.attrs[name];
  return v === undefined ? undefined : canonicalString(v);
}

/**
 * Compiles `filter.attributes` into a predicate.
 *
 * @example
 * const p = compileAttributesFilter({ type: 'order.created', source: '' });
 * p(event); // true when type is order.created and source is present
 */
export function compileAttributesFilter(attributes: Record<string, string> | undefined): Predicate {
  if (attributes === undefined) return always;
  const checks: Predicate[] = [];
  for (const [key, want] of Object.entries(attributes)) {
    if (DERIVED_ATTRIBUTES.has(key)) {
      checks.push((e) => {
        const v = filterAttribute(e, key);
        return v !== undefined && (want === '' ? v !== '' : v === want);
      });
    } else if (want === '') {
      checks.push((e) => {
        const v = e.attrs[key];
        return v !== undefined && canonicalString(v) !== '';
      });
    } else {
      checks.push((e) => {
        const v = e.attrs[key];
        return v !== undefined && (v === want || canonicalString(v) === want);
      });
    }
  }
  if (checks.length === 0) return always;
  if (checks.length === 1) return checks[0]!;
  return (e) => {
    for (const c of checks) if (!c(e)) return false;
    return true;
  };
}

/**
 * Explains which key of `filter.attributes` rejects an event, or returns undefined when all match.
 */
export function explainAttributesFilter(
  attributes: Record<string, string> | undefined,
  e: CloudEvent,
): string | undefined {
  for (const [key, want] of Object.entries(attributes ?? {})) {
    const s = filterAttribute(e, key);
    if (s === undefined) return `attribute '${key}' is missing`;
    if (want === '' && s === '') return `attribute '${key}' is empty`;
    if (want !== '' && s !== want) return `attribute '${key}' is '${s}', the filter wants '${want}'`;
  }
  return undefined;
}
