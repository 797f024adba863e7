/**
 * EventPolicy (`eventing.knative.dev/v1alpha1`): which senders an addressable takes events from, when
 * senders authenticate (`--authentication oidc`). `spec.to` names addressables (refs, or selectors by
 * kind and labels; none: every addressable of the namespace), `spec.from` the senders (refs to Trellis
 * resources that deliver, or `sub` — a token subject, with Knative's `*` suffix wildcard), `spec.filters`
 * (the filters dialect) what an allowed sender may send. An addressable with policies takes events only
 * from what one of them allows; one without follows the server's default authorization mode.
 * @module
 */

import { FilterError, validateFilters } from '../filter/dialect.js';
import type { ResourceObject } from '../store/types.js';
import { ADDRESSABLE_API } from './addressing.js';
import { ok, ready } from './conditions.js';
import {
  DNS1123_LABEL,
  DNS1123_SUBDOMAIN,
  describe,
  invalid,
  isObject,
  objectAt,
  stringAt,
} from './validation.js';

export interface PolicyTarget {
  ref?: { apiVersion: string; kind: string; name: string };
  selector?: { apiVersion: string; kind: string; matchLabels: Record<string, string> };
}

export interface PolicySender {
  ref?: { apiVersion: string; kind: string; name: string; namespace: string };
  sub?: string;
}

export interface EventPolicySpec {
  to?: PolicyTarget[];
  from: PolicySender[];
  filters?: unknown[];
}

const MAX_ENTRIES = 256;

/** The subject of the tokens Trellis mints for one of its resources (a Trigger delivering, a flow's step). */
export function trellisSubject(kind: string, namespace: string, name: string): string {
  return `system:serviceaccount:${namespace}:trellis-${kind.toLowerCase()}-${name}`;
}

function list(path: string, v: unknown): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) invalid(path, `must be a list, got ${describe(v)}`);
  if (v.length > MAX_ENTRIES) invalid(path, `has more than ${MAX_ENTRIES} entries`);
  return v;
}

export function validateEventPolicySpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec ?? {}, ['to', 'from', 'filters'])!;
  const out: EventPolicySpec = { from: [] };
  const to = list('spec.to', o['to']).map((t, i): PolicyTarget => {
    const at = `spec.to[${i}]`;
    const x = objectAt(at, t, ['ref', 'selector'])!;
    if ((x['ref'] === undefined) === (x['selector'] === undefined))
      invalid(at, 'needs a ref or a selector (one of them)');
    if (x['ref'] !== undefined) {
      const r = objectAt(`${at}.ref`, x['ref'], ['apiVersion', 'kind', 'name'])!;
      const kind = stringAt(`${at}.ref.kind`, r['kind'])!;
      const apiVersion = stringAt(`${at}.ref.apiVersion`, r['apiVersion'])!;
      if (ADDRESSABLE_API[kind] === undefined)
        invalid(`${at}.ref.kind`, `'${kind}' takes no events: name a Broker, Channel, flow or sink`);
      if (ADDRESSABLE_API[kind] !== apiVersion)
        invalid(`${at}.ref.apiVersion`, `must be '${ADDRESSABLE_API[kind]}' for kind ${kind}`);
      const name = stringAt(`${at}.ref.name`, r['name'])!;
      if (!DNS1123_SUBDOMAIN.test(name)) invalid(`${at}.ref.name`, 'must be a DNS-1123 name');
      return { ref: { apiVersion, kind, name } };
    }
    const s = objectAt(`${at}.selector`, x['selector'], ['apiVersion', 'kind', 'matchLabels'])!;
    const kind = stringAt(`${at}.selector.kind`, s['kind'])!;
    const apiVersion = stringAt(`${at}.selector.apiVersion`, s['apiVersion'])!;
    if (ADDRESSABLE_API[kind] === undefined) invalid(`${at}.selector.kind`, `'${kind}' takes no events`);
    const labels = s['matchLabels'] ?? {};
    if (!isObject(labels) || !Object.values(labels).every((v) => typeof v === 'string'))
      invalid(`${at}.selector.matchLabels`, 'must map label names to values');
    return { selector: { apiVersion, kind, matchLabels: labels as Record<string, string> } };
  });
  if (to.length > 0) out.to = to;
  out.from = list('spec.from', o['from']).map((f, i): PolicySender => {
    const at = `spec.from[${i}]`;
    const x = objectAt(at, f, ['ref', 'sub'])!;
    if ((x['ref'] === undefined) === (x['sub'] === undefined))
      invalid(at, 'needs a ref or a sub (one of them)');
    if (x['sub'] !== undefined) {
      const sub = stringAt(`${at}.sub`, x['sub'])!;
      if (sub === '' || sub.length > 512) invalid(`${at}.sub`, 'must be 1 to 512 characters');
      if (sub.indexOf('*') >= 0 && sub.indexOf('*') !== sub.length - 1)
        invalid(`${at}.sub`, "may end with '*' (any suffix), and have no other '*'");
      return { sub };
    }
    const r = objectAt(`${at}.ref`, x['ref'], ['apiVersion', 'kind', 'name', 'namespace'])!;
    const ns = stringAt(`${at}.ref.namespace`, r['namespace'], true) ?? namespace;
    if (!DNS1123_LABEL.test(ns)) invalid(`${at}.ref.namespace`, 'must be a DNS-1123 label');
    const name = stringAt(`${at}.ref.name`, r['name'])!;
    if (!DNS1123_SUBDOMAIN.test(name)) invalid(`${at}.ref.name`, 'must be a DNS-1123 name');
    return {
      ref: {
        apiVersion: stringAt(`${at}.ref.apiVersion`, r['apiVersion'])!,
        kind: stringAt(`${at}.ref.kind`, r['kind'])!,
        name,
        namespace: ns,
      },
    };
  });
  if (o['filters'] !== undefined && o['filters'] !== null) {
    try {
      out.filters = validateFilters('spec.filters', o['filters']);
    } catch (err) {
      if (err instanceof FilterError) invalid(err.path, err.rule);
      throw err;
    }
  }
  return out as unknown as Record<string, unknown>;
}

/** The subjects a policy allows: exact ones, and prefixes (a `*` suffix). */
export function policySubjects(spec: EventPolicySpec): { exact: Set<string>; prefixes: string[] } {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const f of spec.from) {
    if (f.sub !== undefined) {
      if (f.sub.endsWith('*')) prefixes.push(f.sub.slice(0, -1));
      else exact.add(f.sub);
    } else if (f.ref !== undefined) exact.add(trellisSubject(f.ref.kind, f.ref.namespace, f.ref.name));
  }
  return { exact, prefixes };
}

/** True when a policy applies to the addressable `o` (same namespace; named by `to`, or no `to`). */
export function policyApplies(spec: EventPolicySpec, policyNs: string, o: ResourceObject): boolean {
  if (o.metadata.namespace !== policyNs) return false;
  if (spec.to === undefined) return true;
  return spec.to.some((t) =>
    t.ref !== undefined
      ? t.ref.kind === o.kind && t.ref.name === o.metadata.name
      : t.selector!.kind === o.kind &&
        Object.entries(t.selector!.matchLabels).every(([k, v]) => o.metadata.labels?.[k] === v),
  );
}

/** An EventPolicy is Ready once valid (its senders and targets may come and go). */
export function reconcileEventPolicy(o: ResourceObject): Record<string, unknown> {
  return { observedGeneration: o.metadata.generation, conditions: ready([ok('SubjectsResolved')]) };
}
