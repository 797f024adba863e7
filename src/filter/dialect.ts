/**
 * Knative's `spec.filters` dialect: a list of filters ANDed, each one of `exact`, `prefix`, `suffix`
 * (maps, ANDed, case-sensitive, on the canonical string; a missing attribute does not match), `all`,
 * `any`, `not`, `cesql` (and `sql`, as the CloudEvents Subscriptions API spells it). Validated with the
 * path of the bad entry, compiled once per Trigger.
 * @module
 */
import { type CloudEvent, canonicalString } from '../cloudevents/event.js';
import type { Predicate } from './attributes.js';
import { CesqlError } from './cesql/ast.js';
import { type CesqlExpression, compileCesql } from './cesql/compile.js';

/** One filter of the dialect, as written in YAML. */
export type SubscriptionsFilter =
  | { exact: Record<string, string> }
  | { prefix: Record<string, string> }
  | { suffix: Record<string, string> }
  | { all: SubscriptionsFilter[] }
  | { any: SubscriptionsFilter[] }
  | { not: SubscriptionsFilter }
  | { cesql: string }
  | { sql: string };

const DIALECTS = ['exact', 'prefix', 'suffix', 'all', 'any', 'not', 'cesql', 'sql'] as const;
const NAME = /^[a-z0-9]+$/;

/** A filter the dialect refuses: the path of the bad entry and the rule. */
export class FilterError extends Error {
  constructor(
    readonly path: string,
    readonly rule: string,
  ) {
    super(`${path}: ${rule}`);
    this.name = 'FilterError';
  }
}

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Validates `spec.filters` (or one nested filter list) and returns it typed. Throws {@link FilterError}. */
export function validateFilters(path: string, v: unknown): SubscriptionsFilter[] {
  if (!Array.isArray(v)) throw new FilterError(path, 'must be a list of filters');
  return v.map((f, i) => validateFilter(`${path}[${i}]`, f));
}

function validateFilter(path: string, f: unknown): SubscriptionsFilter {
  if (!isObj(f)) throw new FilterError(path, `must be an object with one of ${DIALECTS.join(', ')}`);
  const keys = Object.keys(f);
  const used = keys.filter((k) => (DIALECTS as readonly string[]).includes(k));
  const unknown = keys.filter((k) => !(DIALECTS as readonly string[]).includes(k));
  if (unknown.length > 0)
    throw new FilterError(
      `${path}.${unknown[0]}`,
      `unknown filter dialect; use one of ${DIALECTS.join(', ')}`,
    );
  if (used.length !== 1) {
    throw new FilterError(
      path,
      used.length === 0
        ? `needs one of ${DIALECTS.join(', ')}`
        : `has ${used.join(' and ')}: use exactly one dialect per filter (wrap several in all)`,
    );
  }
  const d = used[0]!;
  const body = f[d];
  const at = `${path}.${d}`;
  switch (d) {
    case 'exact':
    case 'prefix':
    case 'suffix': {
      if (!isObj(body) || Object.keys(body).length === 0)
        throw new FilterError(at, 'must be a non-empty map of attribute name to value');
      for (const [k, val] of Object.entries(body)) {
        if (!NAME.test(k))
          throw new FilterError(`${at}.${k}`, 'attribute names are lower-case letters and digits');
        if (typeof val !== 'string' || val === '')
          throw new FilterError(`${at}.${k}`, 'must be a non-empty string (quote numbers and booleans)');
      }
      return { [d]: body as Record<string, string> } as SubscriptionsFilter;
    }
    case 'all':
    case 'any': {
      if (!Array.isArray(body) || body.length === 0)
        throw new FilterError(at, 'must be a non-empty list of filters');
      return { [d]: validateFilters(at, body) } as SubscriptionsFilter;
    }
    case 'not':
      return { not: validateFilter(at, body) };
    default: {
      if (typeof body !== 'string' || body.trim() === '')
        throw new FilterError(at, 'must be a CESQL expression');
      try {
        compileCesql(body);
      } catch (err) {
        if (err instanceof CesqlError) throw new FilterError(at, `CESQL does not parse: ${err.message}`);
        throw err;
      }
      return { [d]: body } as SubscriptionsFilter;
    }
  }
}

function attr(e: CloudEvent, k: string): string | undefined {
  const v = e.attrs[k];
  return v === undefined ? undefined : canonicalString(v);
}

function compileOne(f: SubscriptionsFilter): Predicate {
  if ('exact' in f) {
    const kv = Object.entries(f.exact);
    return (e) => kv.every(([k, want]) => attr(e, k) === want);
  }
  if ('prefix' in f) {
    const kv = Object.entries(f.prefix);
    return (e) => kv.every(([k, want]) => attr(e, k)?.startsWith(want) === true);
  }
  if ('suffix' in f) {
    const kv = Object.entries(f.suffix);
    return (e) => kv.every(([k, want]) => attr(e, k)?.endsWith(want) === true);
  }
  if ('all' in f) return and(f.all.map(compileOne));
  if ('any' in f) {
    const ps = f.any.map(compileOne);
    return (e) => ps.some((p) => p(e));
  }
  if ('not' in f) {
    const p = compileOne(f.not);
    return (e) => !p(e);
  }
  const expr: CesqlExpression = compileCesql('cesql' in f ? f.cesql : f.sql);
  return (e) => expr.matches(e.attrs);
}

function and(ps: Predicate[]): Predicate {
  if (ps.length === 1) return ps[0]!;
  return (e) => {
    for (const p of ps) if (!p(e)) return false;
    return true;
  };
}

/** Compiles a validated filter list (ANDed) into one predicate; an empty list matches everything. */
export function compileFilters(filters: readonly SubscriptionsFilter[]): Predicate {
  if (filters.length === 0) return () => true;
  return and(filters.map(compileOne));
}

/**
 * Says why an event does not pass a filter list: the path of the first filter that rejects it and
 * what it saw; undefined when the event passes.
 */
export function explainFilters(
  filters: readonly SubscriptionsFilter[],
  e: CloudEvent,
  path = 'spec.filters',
): string | undefined {
  for (const [i, f] of filters.entries()) {
    const why = explainOne(f, e, `${path}[${i}]`);
    if (why !== undefined) return why;
  }
  return undefined;
}

function explainOne(f: SubscriptionsFilter, e: CloudEvent, path: string): string | undefined {
  if (compileOne(f)(e)) return undefined;
  for (const d of ['exact', 'prefix', 'suffix'] as const) {
    if (d in f) {
      for (const [k, want] of Object.entries((f as Record<string, Record<string, string>>)[d]!)) {
        const have = attr(e, k);
        const ok =
          have !== undefined &&
          (d === 'exact' ? have === want : d === 'prefix' ? have.startsWith(want) : have.endsWith(want));
        if (!ok) {
          return have === undefined
            ? `${path}.${d}.${k}: the event has no attribute '${k}'`
            : `${path}.${d}.${k}: '${have}' ${d === 'exact' ? 'is not' : d === 'prefix' ? 'does not start with' : 'does not end with'} '${want}'`;
        }
      }
    }
  }
  if ('all' in f) return explainFilters(f.all, e, `${path}.all`);
  if ('any' in f) return `${path}.any: none of the ${f.any.length} filters matches`;
  if ('not' in f) return `${path}.not: the inner filter matches, so not rejects the event`;
  if (!('cesql' in f) && !('sql' in f)) return `${path}: does not match`;
  const src = 'cesql' in f ? f.cesql : f.sql;
  const r = compileCesql(src).evaluate(e.attrs);
  const errs = r.errors.map((x) => `${x.kind}: ${x.message}`).join('; ');
  return `${path}.${'cesql' in f ? 'cesql' : 'sql'}: '${src}' evaluates to ${JSON.stringify(r.value)}${errs ? ` with errors (${errs})` : ''}`;
}
