/**
 * The resource registry: apply (create or update), get, list and delete over the resource store port, with
 * Knative's metadata rules (generation, resourceVersion, uid) and status writes that never loop.
 * @module
 */
import { randomUUID } from 'node:crypto';
import { parseAllDocuments } from 'yaml';
import { TrellisError } from '../errors.js';
import { ConflictError, type ResourceObject, type ResourceStore } from '../store/types.js';
import { checkValueDepth, checkYamlTextDepth } from './depth.js';
import {
  acceptedVersions,
  apiVersionOf,
  documentKindOf,
  findKind,
  KINDS,
  type KindDef,
  kindOfDocument,
  kindsNamed,
  present,
} from './kinds.js';
import {
  DNS1123_LABEL,
  DNS1123_SUBDOMAIN,
  invalid,
  isObject,
  metadataMap,
  objectAt,
  stringAt,
} from './validation.js';

/** Namespaces whose ingress path would be another route of the server (`/apis/...`). */
export const RESERVED_NAMESPACES: ReadonlySet<string> = new Set(['apis']);

export type ApplyAction = 'created' | 'configured' | 'unchanged';

/** What apply did, with the warnings the user should see. */
export interface ApplyResult {
  object: ResourceObject;
  action: ApplyAction;
  warnings: string[];
}

/** Parses one or more YAML (or JSON) documents; empty documents are skipped. */
export function parseDocuments(text: string): unknown[] {
  checkYamlTextDepth(text);
  const docs = parseAllDocuments(text);
  const out: unknown[] = [];
  for (const [i, d] of (Array.isArray(docs) ? docs : [docs]).entries()) {
    if (d.errors.length > 0) {
      const e = d.errors[0]!;
      const pos = e.linePos?.[0];
      throw new TrellisError(
        'TRELLIS_ERR_RESOURCE_PARSE',
        `document ${i + 1}${pos ? ` line ${pos.line} column ${pos.col}` : ''}: ${e.message.split('\n')[0]}`,
      );
    }
    let v: unknown;
    try {
      v = d.toJS({ maxAliasCount: 100 });
    } catch (err) {
      // e.g. an alias bomb ("billion laughs"), refused by the alias limit
      throw new TrellisError('TRELLIS_ERR_RESOURCE_PARSE', `document ${i + 1}: ${(err as Error).message}`);
    }
    if (v !== null && v !== undefined) {
      checkValueDepth(v);
      out.push(v);
    }
  }
  return out;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** One document's outcome in {@link ResourceRegistry.applyMany}: what was applied, or the error as JSON. */
export type BulkItem =
  | {
      index: number;
      apiVersion: string;
      kind: string;
      namespace: string;
      name: string;
      action: ApplyAction;
      warnings: string[];
    }
  | { index: number; error: Record<string, unknown> };

/** Apply, get, list, delete and status updates for every kind in {@link KINDS}. */
export class ResourceRegistry {
  constructor(private readonly store: ResourceStore) {}

  /** Validates a document and creates or updates the resource it describes. */
  async apply(doc: unknown, defaultNamespace = 'default'): Promise<ApplyResult> {
    const o = objectAt('(document)', doc, ['apiVersion', 'kind', 'metadata', 'spec', 'status'])!;
    const kindName = stringAt('kind', o['kind'])!;
    const named = kindsNamed(kindName);
    if (named.length === 0) {
      const near = findKind(kindName);
      throw new TrellisError(
        'TRELLIS_ERR_KIND_UNKNOWN',
        near !== undefined
          ? `kind: '${kindName}' is not a kind; kinds are written as Knative writes them: did you mean '${documentKindOf(near)}'?`
          : `kind: '${kindName}' is not a kind Trellis serves (${[...new Set(KINDS.map(documentKindOf))].join(', ')})`,
        { field: 'kind' },
      );
    }
    const apiVersion = stringAt('apiVersion', o['apiVersion'])!;
    const def = kindOfDocument(kindName, apiVersion);
    if (def === undefined)
      invalid(
        'apiVersion',
        `must be '${named.flatMap((k) => acceptedVersions(k)).join("' or '")}' for kind ${kindName}`,
      );
    const meta = objectAt('metadata', o['metadata'], [
      'name',
      'namespace',
      'labels',
      'annotations',
      'uid',
      'resourceVersion',
      'generation',
      'creationTimestamp',
    ])!;
    const name = stringAt('metadata.name', meta['name'])!;
    if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) {
      invalid(
        'metadata.name',
        'must be a DNS-1123 name: lower-case a-z, 0-9, - and ., at most 253 characters',
      );
    }
    const namespace = stringAt('metadata.namespace', meta['namespace'], true) ?? defaultNamespace;
    if (namespace.length > 63 || !DNS1123_LABEL.test(namespace)) {
      invalid(
        'metadata.namespace',
        'must be a DNS-1123 label: lower-case a-z, 0-9 and -, at most 63 characters',
      );
    }
    if (RESERVED_NAMESPACES.has(namespace)) {
      invalid(
        'metadata.namespace',
        `'${namespace}' is reserved: /${namespace}/... is the admin API's path, so nothing in it could be addressed`,
      );
    }
    const labels = metadataMap('metadata.labels', meta['labels'], 'labels');
    const annotations = metadataMap('metadata.annotations', meta['annotations'], 'annotations');
    const expected = meta['resourceVersion'] !== undefined ? String(meta['resourceVersion']) : undefined;
    def.validateAnnotations?.(annotations);
    const spec = def.validateSpec(o['spec'], namespace, apiVersion);
    const warnings = def.warnings?.(spec) ?? [];

    const current = await this.store.get(def.kind, namespace, name);
    const specChanged = current === undefined || !sameJson(current.spec, spec);
    const metaChanged =
      current === undefined ||
      !sameJson(current.metadata.labels, labels) ||
      !sameJson(current.metadata.annotations, annotations);
    if (current !== undefined && !specChanged && !metaChanged)
      return { object: present(current), action: 'unchanged', warnings };
    const next: ResourceObject = {
      apiVersion: apiVersionOf(def),
      kind: def.kind,
      metadata: {
        name,
        namespace,
        uid: current?.metadata.uid ?? randomUUID(),
        generation: (current?.metadata.generation ?? 0) + (specChanged ? 1 : 0),
        resourceVersion: current?.metadata.resourceVersion ?? '',
        creationTimestamp: current?.metadata.creationTimestamp ?? new Date().toISOString(),
        ...(labels ? { labels } : {}),
        ...(annotations ? { annotations } : {}),
      },
      spec,
      ...(current?.status ? { status: current.status } : {}),
    };
    const stored = await this.put(next, expected ?? current?.metadata.resourceVersion ?? '');
    return { object: present(stored), action: current === undefined ? 'created' : 'configured', warnings };
  }

  /**
   * Applies many documents, each on its own (an error is reported, the others still apply, as kubectl
   * does). They go a window at a time, so their store writes share commits; documents naming the same
   * resource are applied in their order.
   */
  async applyMany(docs: readonly unknown[], defaultNamespace = 'default'): Promise<BulkItem[]> {
    const out: BulkItem[] = new Array(docs.length);
    const chains = new Map<string, Promise<void>>();
    const keyOf = (d: unknown) => {
      const m = isObject(d) && isObject(d['metadata']) ? d['metadata'] : {};
      return `${isObject(d) ? String(d['kind']) : ''}/${String(m['namespace'] ?? defaultNamespace)}/${String(m['name'])}`;
    };
    const one = async (i: number) => {
      try {
        const r = await this.apply(docs[i], defaultNamespace);
        const m = r.object.metadata;
        out[i] = {
          index: i,
          apiVersion: r.object.apiVersion,
          kind: r.object.kind,
          namespace: m.namespace,
          name: m.name,
          action: r.action,
          warnings: r.warnings,
        };
      } catch (err) {
        out[i] = {
          index: i,
          error:
            err instanceof TrellisError
              ? err.toJSON()
              : { code: 'TRELLIS_ERR_INTERNAL', message: `internal error: ${(err as Error).message}` },
        };
      }
    };
    const WINDOW = 512;
    for (let start = 0; start < docs.length; start += WINDOW) {
      const batch: Promise<void>[] = [];
      for (let i = start; i < Math.min(docs.length, start + WINDOW); i++) {
        const key = keyOf(docs[i]);
        const p = (chains.get(key) ?? Promise.resolve()).then(() => one(i));
        chains.set(key, p);
        batch.push(p);
      }
      await Promise.all(batch);
    }
    return out;
  }

  private async put(obj: ResourceObject, expected: string): Promise<ResourceObject> {
    try {
      return await this.store.put(obj, expected);
    } catch (err) {
      if (err instanceof ConflictError) throw new TrellisError('TRELLIS_ERR_CONFLICT', err.message);
      throw err;
    }
  }

  async get(def: KindDef, namespace: string, name: string): Promise<ResourceObject> {
    const r = await this.store.get(def.kind, namespace, name);
    if (r === undefined) {
      throw new TrellisError(
        'TRELLIS_ERR_RESOURCE_NOT_FOUND',
        `${def.singular} '${name}' not found in namespace '${namespace}'`,
      );
    }
    return present(r);
  }

  async list(def: KindDef, namespace?: string): Promise<ResourceObject[]> {
    return (await this.store.list(def.kind, namespace)).map(present);
  }

  /** Calls `listener` for each change to a resource of a kind (in a namespace); returns what stops it. */
  watch(
    def: KindDef,
    namespace: string | undefined,
    listener: (e: { type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: ResourceObject }) => void,
  ): () => void {
    return this.store.watch((e) => {
      if (e.object.kind !== def.kind) return;
      if (namespace !== undefined && e.object.metadata.namespace !== namespace) return;
      listener({ type: e.type, object: present(e.object) });
    });
  }

  async delete(def: KindDef, namespace: string, name: string): Promise<ResourceObject> {
    const r = await this.store.delete(def.kind, namespace, name);
    if (r === undefined) {
      throw new TrellisError(
        'TRELLIS_ERR_RESOURCE_NOT_FOUND',
        `${def.singular} '${name}' not found in namespace '${namespace}'`,
      );
    }
    return present(r);
  }

  /**
   * Writes a new status if it differs from the stored one. Re-reads and retries when the resource changed
   * meanwhile; does nothing if it was deleted.
   */
  async setStatus(
    kind: string,
    namespace: string,
    name: string,
    status: Record<string, unknown>,
    /** The object as the caller read it: when its status is already this one, the store is not read. */
    seen?: ResourceObject,
    /** Status fields someone else writes (an EventType's `seen`): kept from the stored status. */
    preserve: readonly string[] = [],
  ): Promise<void> {
    const withKept = (cur: Record<string, unknown> | undefined) => {
      if (preserve.length === 0 || cur === undefined) return status;
      const out = { ...status };
      for (const k of preserve) if (cur[k] !== undefined) out[k] = cur[k];
      return out;
    };
    if (seen !== undefined && sameStatus(seen.status, withKept(seen.status))) return;
    for (let i = 0; i < 5; i++) {
      const cur = await this.store.get(kind, namespace, name);
      if (cur === undefined) return;
      const next = withKept(cur.status);
      if (sameStatus(cur.status, next)) return;
      try {
        await this.store.put(
          { ...cur, status: keepTransitionTimes(cur.status, next) },
          cur.metadata.resourceVersion,
        );
        return;
      } catch (err) {
        if (!(err instanceof ConflictError)) throw err;
      }
    }
  }
}

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}

function stripTimes(s: Record<string, unknown> | undefined): unknown {
  if (!s) return s;
  const conds = (s['conditions'] as Condition[] | undefined)?.map(({ lastTransitionTime: _t, ...c }) => c);
  return { ...s, conditions: conds };
}

function sameStatus(a: Record<string, unknown> | undefined, b: Record<string, unknown>): boolean {
  return sameJson(stripTimes(a), stripTimes(b));
}

/** A condition keeps its lastTransitionTime while its status does not change. */
function keepTransitionTimes(
  prev: Record<string, unknown> | undefined,
  next: Record<string, unknown>,
): Record<string, unknown> {
  const old = new Map(((prev?.['conditions'] as Condition[] | undefined) ?? []).map((c) => [c.type, c]));
  const now = new Date().toISOString();
  const conds = ((next['conditions'] as Condition[] | undefined) ?? []).map((c) => {
    const o = old.get(c.type);
    return {
      ...c,
      lastTransitionTime: o && o.status === c.status && o.lastTransitionTime ? o.lastTransitionTime : now,
    };
  });
  return { ...next, conditions: conds };
}
