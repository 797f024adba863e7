/**
 * `spec.ceOverrides` of Knative's sources: extension attributes set on every event the source sends.
 * @module
 */
import { checkAttribute, EventValidationError, isCoreAttribute } from '../cloudevents/event.js';
import { describe, invalid, isObject, objectAt } from './validation.js';

/** Validates `ceOverrides` as Knative's sources write it (extensions only). */
export function validateCeOverrides(v: unknown): { extensions: Record<string, string> } | undefined {
  const ce = objectAt('spec.ceOverrides', v, ['extensions'], true);
  if (ce === undefined) return undefined;
  const ext = ce['extensions'];
  const extensions: Record<string, string> = {};
  if (ext !== undefined && ext !== null) {
    if (!isObject(ext)) invalid('spec.ceOverrides.extensions', `must be a map, got ${describe(ext)}`);
    for (const [k, val] of Object.entries(ext)) {
      const path = `spec.ceOverrides.extensions.${k}`;
      if (typeof val !== 'string') invalid(path, `must be a string, got ${describe(val)}`);
      if (isCoreAttribute(k) || k === 'data')
        invalid(path, 'is a core attribute; only extensions can be overridden');
      try {
        checkAttribute(k, val);
      } catch (err) {
        invalid(path, err instanceof EventValidationError ? err.rule : String(err));
      }
      extensions[k] = val;
    }
  }
  return { extensions };
}
