/**
 * EventPolicy enforcement: per addressable, the policies that apply to it, compiled (allowed subjects,
 * the filters an allowed sender's events must pass); an addressable without policies follows the
 * default authorization mode (Knative's `default-authorization-mode`). Rebuilt from each reconciled
 * snapshot; checked at ingress after the sender's token. A refusal names nothing of the policies.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import { TrellisError } from '../errors.js';
import type { Predicate } from '../filter/attributes.js';
import { compileFilters, type SubscriptionsFilter } from '../filter/dialect.js';
import { ADDRESSABLE_API, streamKey } from '../resources/addressing.js';
import { isReady } from '../resources/conditions.js';
import { type EventPolicySpec, policyApplies, policySubjects } from '../resources/eventpolicy.js';
import type { ResourceObject } from '../store/types.js';

export type AuthorizationMode = 'allow-all' | 'allow-same-namespace' | 'deny-all';

interface Compiled {
  exact: Set<string>;
  prefixes: string[];
  filter: Predicate;
}

/** The namespace of a stream key (`ns/broker`, `channels/ns/name`). */
function namespaceOf(stream: string): string {
  const p = stream.split('/');
  return p.length === 2 ? p[0]! : (p[1] ?? '');
}

function forbidden(): TrellisError {
  return new TrellisError('TRELLIS_ERR_FORBIDDEN', 'this sender may not send these events here');
}

export class PolicyIndex {
  private byStream = new Map<string, Compiled[]>();

  constructor(private readonly mode: AuthorizationMode) {}

  /** The policies of every addressable, from a reconciled snapshot (Ready EventPolicies only). */
  rebuild(resources: ReadonlyMap<string, ReadonlyMap<string, ResourceObject>>): void {
    const policies = [...(resources.get('EventPolicy')?.values() ?? [])].filter((p) => isReady(p));
    const next = new Map<string, Compiled[]>();
    if (policies.length > 0) {
      const compiled = new Map(
        policies.map((p) => {
          const spec = p.spec as unknown as EventPolicySpec;
          const { exact, prefixes } = policySubjects(spec);
          return [
            p,
            { exact, prefixes, filter: compileFilters((spec.filters ?? []) as SubscriptionsFilter[]) },
          ];
        }),
      );
      for (const kind of Object.keys(ADDRESSABLE_API)) {
        for (const o of resources.get(kind)?.values() ?? []) {
          const apply = policies.filter((p) =>
            policyApplies(p.spec as unknown as EventPolicySpec, p.metadata.namespace, o),
          );
          if (apply.length > 0)
            next.set(
              streamKey(kind, o.metadata.namespace, o.metadata.name),
              apply.map((p) => compiled.get(p)!),
            );
        }
      }
    }
    this.byStream = next;
  }

  /** Throws the 403 unless `sub` may send these events to `stream`. */
  authorize(stream: string, sub: string, events: readonly CloudEvent[]): void {
    const ps = this.byStream.get(stream);
    if (ps === undefined) {
      if (this.mode === 'allow-all') return;
      if (
        this.mode === 'allow-same-namespace' &&
        sub.startsWith(`system:serviceaccount:${namespaceOf(stream)}:`)
      )
        return;
      throw forbidden();
    }
    const allowed = ps.filter((p) => p.exact.has(sub) || p.prefixes.some((x) => sub.startsWith(x)));
    if (allowed.length === 0) throw forbidden();
    for (const e of events) if (!allowed.some((p) => p.filter(e))) throw forbidden();
  }
}
