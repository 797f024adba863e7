/**
 * Knative's `spec.filters` dialect: a list of filters ANDed, each one of `exact`, `prefix`, `suffix`
 * (maps, ANDed, case-sensitive, on the canonical string; a missing attribute does not match), `all`,
 * `any`, `not`, `cesql` (and `sql`, as the CloudEvents Subscriptions API spells it). Validated with the
 * path of the bad entry, compiled once per Trigger.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import { FILTER_KEY, filterAttribute, type Predicate } from './attributes.js';
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
  | { sql: string }
  /** No dialect set, or only empty ones (`{}`, `all: []`, `cesql: ""`): Knative's "no filter", kept as written. */
  | Record<string, never>;

const DIALECTS = ['exact', 'prefix', 'suffix', 'all', 'any', 'not', 'cesql', 'sql'] as const;

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

/** True when a dialect's value is empty: Knative then treats the dialect as not set. */
function isEmptyDialect(v: unknown): boolean {
  if (v === null || v === undefined) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === 'string') return v.trim() === '';
  return isObj(v) && Object.keys(v).length === 0;
}

function validateFilter(path: string, f: unknown): SubscriptionsFilter {
  if (!isObj(f)) throw new FilterError(path, `must be an object with one of ${DIALECTS.join(', ')}`);
  const keys = Object.keys(f);
  const unknown = keys.filter((k) => !(DIALECTS as readonly string[]).includes(k));
  if (unknown.length > 0)
    throw new FilterError(
      `${path}.${unknown[0]}`,
      `unknown filter dialect; use one of ${DIALECTS.join(', ')}`,
    );
  // As Knative does, an empty dialect (`all: []`, `cesql: ""`, `exact: {}`) counts as not set, except
  // `not`, whose inner filter is checked (and is "no filter" when empty).
  const used = keys.filter((k) =>
    k === 'not' ? f[k] !== null && f[k] !== undefined : !isEmptyDialect(f[k]),
  );
  if (used.length > 1) {
    throw new FilterError(
      path,
      `has ${used.join(' and ')}: use exactly one dialect per filter (wrap several in all)`,
    );
  }
  if (used.length === 0) return { ...f } as unknown as SubscriptionsFilter;
  const d = used[0]!;
  const body = f[d];
  const at = `${path}.${d}`;
  switch (d) {
    case 'exact':
    case 'prefix':
    case 'suffix': {
      if (!isObj(body)) throw new FilterError(at, 'must be a map of attribute name to value');
      for (const [k, val] of Object.entries(body)) {
        if (!FILTER_KEY.test(k))
          throw new FilterError(
            `${at}.${k}`,
            'attribute names must match ^[a-z][a-z0-9]*$ (a lower-case letter, then letters and digits)',
          );
        if (typeof val !== 'string' || val === '')
          throw new FilterError(`${at}.${k}`, 'must be a non-empty string (quote numbers and booleans)');
      }
      return { [d]: body as Record<string, string> } as SubscriptionsFilter;
    }
    case 'all':
    case 'any': {
      if (!Array.isArray(body)) throw new FilterError(at, 'must be a list of filters');
      return { [d]: validateFilters(at, body) } as SubscriptionsFilter;
    }
    case 'not':
      return { not: validateFilter(at, body) };
    default: {
      if (typeof body !== 'string') throw new FilterError(at, 'must be a CESQL expression');
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

/**
 * Warnings for filters that Knative accepts but that do nothing: an empty dialect matches every event.
 * Returned by apply and shown in the Trigger's status.
 */
export function filterWarnings(filters: unknown, path = 'spec.filters'): string[] {
  const out: string[] = [];
  const walkList = (list: unknown, at: string) => {
    if (!Array.isArray(list)) return;
    for (const [i, f] of list.entries()) walk(f, `${at}[${i}]`);
  };
  const walk = (f: unknown, at: string) => {
    if (!isObj(f)) return;
    const keys = Object.keys(f);
    const set = keys.filter((k) => !isEmptyDialect(f[k]));
    for (const k of keys) {
      if (isEmptyDialect(f[k]) && !(k === 'not' && f[k] !== null && f[k] !== undefined))
        out.push(`${at}.${k}: is empty, so it is no filter and matches every event (as in Knative)`);
    }
    if (keys.length === 0) out.push(`${at}: sets no dialect, so it matches every event (as in Knative)`);
    for (const k of set) {
      if (k === 'all' || k === 'any') walkList(f[k], `${at}.${k}`);
    }
    if (isObj(f['not'])) {
      if (Object.keys(f['not']).length === 0)
        out.push(`${at}.not: is empty, so it is no filter and matches every event (as in Knative)`);
      else walk(f['not'], `${at}.not`);
    }
  };
  walkList(filters, path);
  return out;
}

const attr = filterAttribute;

function compileOne(f: SubscriptionsFilter): Predicate {
  if (isNoFilter(f)) return always;
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
    if (f.any.length === 0) return always;
    const ps = f.any.map(compileOne);
    return (e) => ps.some((p) => p(e));
  }
  if ('not' in f) {
    // Knative: `not` of no filter is no filter.
    if (isNoFilter(f.not)) return always;
    const p = compileOne(f.not);
    return (e) => !p(e);
  }
  if (!('cesql' in f) && !('sql' in f)) return always;
  const expr: CesqlExpression = compileCesql('cesql' in f ? f.cesql : f.sql);
  return (e) => expr.matches(e.attrs);
}

const always: Predicate = () => true;

/** True for a filter whose every dialect is empty (Knative's "no filter"). */
function isNoFilter(f: SubscriptionsFilter): boolean {
  for (const v of Object.values(f)) if (!isEmptyDialect(v)) return false;
  return true;
}

function and(ps: Predicate[]): Predicate {
  if (ps.length === 0) return always;
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
