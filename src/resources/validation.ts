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
