/**
 * Small helpers for validating resource documents with the field path in every message.
 * @module
 */
import { TrellisError } from '../errors.js';

/** Throws TRELLIS_ERR_RESOURCE_INVALID naming the field path and the rule. */
export function invalid(path: string, rule: string): never {
  throw new TrellisError('TRELLIS_ERR_RESOURCE_INVALID', `${path}: ${rule}`, { field: path });
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Checks that `v` is an object (or absent when `optional`) with no keys outside `allowed`. */
export function objectAt(
  path: string,
  v: unknown,
  allowed: readonly string[],
  optional = false,
): Record<string, unknown> | undefined {
  if (v === undefined || v === null) {
    if (optional) return undefined;
    invalid(path, 'is required');
  }
  if (!isObject(v)) invalid(path, `must be an object, got ${describe(v)}`);
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) invalid(`${path}.${k}`, `unknown field; allowed here: ${allowed.join(', ')}`);
  }
  return v;
}

export function stringAt(path: string, v: unknown, optional = false): string | undefined {
  if (v === undefined || v === null) {
    if (optional) return undefined;
    invalid(path, 'is required');
  }
  if (typeof v !== 'string') invalid(path, `must be a string, got ${describe(v)}`);
  return v;
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Kubernetes object names: DNS-1123 subdomain. */
export const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** Kubernetes namespace names: DNS-1123 label. */
export const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
/** Labels and annotations, each map in all (keys and values), at most this many bytes (Kubernetes' rule). */
export const MAX_METADATA_MAP_BYTES = 256 * 1024;

/** A label or annotation key as Kubernetes checks it: `[prefix/]name`, the prefix a DNS-1123 subdomain. */
function checkKey(path: string, key: string): void {
  const slash = key.indexOf('/');
  const prefix = slash < 0 ? undefined : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  const rule =
    'keys are [prefix/]name: name is at most 63 characters (a-z, A-Z, 0-9, -, _ and ., starting and ending alphanumeric), ' +
    'prefix a DNS subdomain of at most 253 characters';
  if (prefix !== undefined && (prefix.length === 0 || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix)))
    invalid(path, rule);
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME.test(name)) invalid(path, rule);
}

/** Validates `metadata.labels` or `metadata.annotations` as Kubernetes does. */
export function metadataMap(
  path: string,
  v: unknown,
  kind: 'labels' | 'annotations',
): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) invalid(path, `must be a map of strings, got ${describe(v)}`);
  let bytes = 0;
  for (const [k, x] of Object.entries(v)) {
    const at = `${path}.${k.length > 80 ? `${k.slice(0, 80)}...` : k}`;
    if (typeof x !== 'string') invalid(at, 'must be a string');
    bytes += Buffer.byteLength(k) + Buffer.byteLength(x);
    if (bytes > MAX_METADATA_MAP_BYTES)
      invalid(path, `is over ${MAX_METADATA_MAP_BYTES / 1024} KiB in all (keys and values)`);
    checkKey(at, k);
    if (kind === 'labels' && x !== '' && (x.length > 63 || !QUALIFIED_NAME.test(x)))
      invalid(
        at,
        'a label value is at most 63 characters: a-z, A-Z, 0-9, -, _ and ., starting and ending alphanumeric',
      );
  }
  return v as Record<string, string>;
}
