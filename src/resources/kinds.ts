/**
 * The resource kinds Trellis serves, with the names kubectl users type for them and each kind's spec check.
 * @module
 */
import { validateBrokerSpec } from './broker.js';
import { triggerWarnings, validateTriggerSpec } from './trigger.js';

export interface KindDef {
  kind: string;
  group: string;
  version: string;
  plural: string;
  singular: string;
  shortNames: readonly string[];
  /** Validates and normalises a spec; throws TRELLIS_ERR_RESOURCE_INVALID with the field path. */
  validateSpec(spec: unknown, namespace: string): Record<string, unknown>;
  /** What in a valid spec is accepted but probably not what the user meant (shown by apply and in status). */
  warnings?(spec: Record<string, unknown>): string[];
}

export const KINDS: readonly KindDef[] = [
  {
    kind: 'Broker',
    group: 'eventing.knative.dev',
    version: 'v1',
    plural: 'brokers',
    singular: 'broker',
    shortNames: [],
    validateSpec: validateBrokerSpec,
  },
  {
    kind: 'Trigger',
    group: 'eventing.knative.dev',
    version: 'v1',
    plural: 'triggers',
    singular: 'trigger',
    shortNames: [],
    validateSpec: validateTriggerSpec,
    warnings: triggerWarnings,
  },
];

/** apiVersion as written in YAML: `group/version`. */
export function apiVersionOf(k: KindDef): string {
  return `${k.group}/${k.version}`;
}

/**
 * Finds a kind as kubectl accepts it: `Broker`, `broker`, `brokers`, `brokers.eventing.knative.dev`.
 */
export function findKind(name: string): KindDef | undefined {
  const n = name.toLowerCase();
  for (const k of KINDS) {
    const names = [k.kind.toLowerCase(), k.singular, k.plural, ...k.shortNames];
    if (names.includes(n)) return k;
    for (const x of names) if (n === `${x}.${k.group}`) return k;
  }
  return undefined;
}

/** Finds a kind by its API path parts. */
export function kindByPath(group: string, version: string, plural: string): KindDef | undefined {
  return KINDS.find((k) => k.group === group && k.version === version && k.plural === plural);
}
