/**
 * The admin API, with Kubernetes-like paths:
 * `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]` (list, get, apply with POST or PUT, delete)
 * and `/apis/{group}/{version}/{plural}` (list in every namespace). Apply takes JSON or YAML.
 * @module
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { CloudEvent } from '../../cloudevents/event.js';
import { eventToJson } from '../../cloudevents/json-format.js';
import { TrellisError } from '../../errors.js';
import { checkJsonTextDepth } from '../../resources/depth.js';
import { apiVersionOf, documentKindOf, KINDS, type KindDef, kindByPath } from '../../resources/kinds.js';
import { type ApplyResult, parseDocuments, type ResourceRegistry } from '../../resources/registry.js';
import { isObject } from '../../resources/validation.js';
import type { ResourceObject } from '../../store/types.js';
import { sendError } from './errors.js';

interface KindParams {
  group: string;
  version: string;
  plural: string;
}
interface NsParams extends KindParams {
  ns: string;
}
interface NameParams extends NsParams {
  name: string;
}

function kindOf(p: KindParams): KindDef {
  // /api/v1/... (Kubernetes' core group) arrives here as group 'core'.
  const k = kindByPath(p.group === 'core' ? '' : p.group, p.version, p.plural);
  if (!k) {
    throw new TrellisError(
      'TRELLIS_ERR_KIND_UNKNOWN',
      `no resource '${p.plural}' in ${p.group}/${p.version}; served: ${KINDS.map((x) => `${apiVersionOf(x)} ${x.plural}`).join(', ')}`,
    );
  }
  return k;
}

/** List filters: `type-prefix` and `reference` (`Kind/name` or `Kind/namespace/name`), for EventTypes. */
interface ListQuery {
  'type-prefix'?: string;
  reference?: string;
  /** `true`: the resources, then each change, as JSON lines `{type, object}` (Kubernetes' watch). */
  watch?: string;
}

/** Watches open at once, across the server. */
const MAX_WATCHES = 256;
/** A watcher further behind than this many bytes is cut off (it watches again, and lists again). */
const WATCH_MAX_BEHIND = 4 * 1024 * 1024;

function filterList(items: ResourceObject[], q: ListQuery): ResourceObject[] {
  const prefix = q['type-prefix'];
  const ref = q.reference?.split('/');
  if (prefix === undefined && ref === undefined) return items;
  return items.filter((o) => {
    const spec = o.spec as {
      attributes?: { name: string; value?: string }[];
      reference?: { kind: string; namespace: string; name: string };
    };
    if (prefix !== undefined) {
      const t = spec.attributes?.find((a) => a.name === 'type')?.value;
      if (t === undefined || !t.startsWith(prefix)) return false;
    }
    if (ref !== undefined) {
      const r = spec.reference;
      if (r === undefined || r.kind.toLowerCase() !== ref[0]?.toLowerCase()) return false;
      const [ns, name] = ref.length >= 3 ? [ref[1], ref[2]] : [undefined, ref[1]];
      if (r.name !== name || (ns !== undefined && r.namespace !== ns)) return false;
    }
    return true;
  });
}

/** The most documents one bulk apply request may carry. */
export const MAX_BULK_DOCUMENTS = 10_000;

function bulkDocuments(body: unknown, contentType: string | undefined): unknown[] {
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : '';
  let docs: unknown[];
  if (contentType?.includes('json')) {
    checkJsonTextDepth(text);
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (err) {
      throw new TrellisError(
        'TRELLIS_ERR_RESOURCE_PARSE',
        `the body is not valid JSON: ${(err as Error).message}`,
      );
    }
    docs = Array.isArray(v) ? v : isObject(v) && Array.isArray(v['items']) ? v['items'] : [v];
  } else docs = parseDocuments(text);
  if (docs.length > MAX_BULK_DOCUMENTS)
    throw new TrellisError(
      'TRELLIS_ERR_RESOURCE_PARSE',
      `${docs.length} documents in one request; send at most ${MAX_BULK_DOCUMENTS} (trellis apply splits files itself)`,
    );
  return docs;
}

function bodyDocument(body: unknown, contentType: string | undefined): unknown {
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : '';
  if (text.trim() === '')
    throw new TrellisError(
      'TRELLIS_ERR_RESOURCE_PARSE',
      'the request body is empty; send one resource as JSON or YAML',
    );
  let docs: unknown[];
  if (contentType?.includes('json')) {
    checkJsonTextDepth(text);
    try {
      docs = [JSON.parse(text)];
    } catch (err) {
      throw new TrellisError(
        'TRELLIS_ERR_RESOURCE_PARSE',
        `the body is not valid JSON: ${(err as Error).message}`,
      );
    }
  } else docs = parseDocuments(text);
  if (docs.length !== 1)
    throw new TrellisError('TRELLIS_ERR_RESOURCE_PARSE', `send one resource per request, got ${docs.length}`);
  return docs[0];
}

/** Kubernetes-style warning headers (`299 - "text"`), which kubectl and `trellis apply` print. */
export function warningHeaders(warnings: readonly string[]): string[] {
  return warnings.map((w) => `299 - "${w.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, "'")}"`);
}

function sendApplied(reply: FastifyReply, r: ApplyResult): FastifyReply {
  if (r.warnings.length > 0) reply.header('warning', warningHeaders(r.warnings));
  return reply
    .code(r.action === 'created' ? 201 : 200)
    .header('trellis-apply-action', r.action)
    .send(r.object);
}

export function registerAdminRoutes(
  app: FastifyInstance,
  registry: ResourceRegistry,
  settled: () => Promise<void>,
  findEvent: (stream: string, id: string, source?: string) => Promise<CloudEvent | undefined>,
): void {
  // One stored event of a Broker, by id (and source), for `trellis explain --event-id`.
  app.get<{ Params: { ns: string; name: string; id: string }; Querystring: { source?: string } }>(
    '/apis/eventing.knative.dev/v1/namespaces/:ns/brokers/:name/events/:id',
    async (req, reply) => {
      try {
        const { ns, name, id } = req.params;
        const e = await findEvent(`${ns}/${name}`, id, req.query.source);
        if (e === undefined) {
          const src = req.query.source ? ` and source '${req.query.source}'` : '';
          throw new TrellisError(
            'TRELLIS_ERR_EVENT_NOT_FOUND',
            `Broker ${ns}/${name} holds no event with id '${id}'${src}; delivered events are kept only with --retention`,
          );
        }
        return eventToJson(e);
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );

  const list = (def: KindDef, items: unknown[]) => ({
    apiVersion: apiVersionOf(def),
    kind: `${documentKindOf(def)}List`,
    items,
  });

  // Many resources in one request (`trellis apply -f` sends whole files this way): each document is
  // applied on its own, as kubectl does, and their writes share the store's group commits.
  app.post<{ Querystring: { namespace?: string } }>('/apis/apply', async (req, reply) => {
    try {
      const ns = req.query.namespace ?? 'default';
      const docs = bulkDocuments(req.body, req.headers['content-type']);
      const items = await registry.applyMany(docs, ns);
      await settled();
      const failed = items.filter((i) => 'error' in i).length;
      return reply.code(200).send({ kind: 'ApplyResult', applied: items.length - failed, failed, items });
    } catch (err) {
      return sendError(reply, err);
    }
  });

  let watching = 0;
  const isWatch = (q: ListQuery) => q.watch === 'true' || q.watch === '1';
  /**
   * A watch: every resource of the kind (in the namespace) as ADDED, then each change as it happens, one
   * JSON object per line, until the client goes. A change may be seen twice around the start.
   */
  const watch = async (def: KindDef, ns: string | undefined, q: ListQuery, reply: FastifyReply) => {
    if (watching >= MAX_WATCHES)
      throw new TrellisError(
        'TRELLIS_ERR_TOO_MANY_TAILS',
        `${MAX_WATCHES} watches are open on this server; close one, or retry later`,
        { retryAfter: 5 },
      );
    const res = reply.raw;
    const pending: string[] = [];
    let started = false;
    const write = (type: string, o: ResourceObject) => {
      const line = `${JSON.stringify({ type, object: o })}\n`;
      if (!started) {
        pending.push(line);
        return;
      }
      if (res.writableLength > WATCH_MAX_BEHIND) {
        res.end();
        return;
      }
      res.write(line);
    };
    const stop = registry.watch(def, ns, (e) => {
      if (filterList([e.object], q).length > 0) write(e.type, e.object);
    });
    watching++;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      watching--;
      stop();
    };
    let items: ResourceObject[];
    try {
      items = filterList(await registry.list(def, ns), q);
    } catch (err) {
      end();
      throw err;
    }
    reply.hijack();
    res.writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
    });
    for (const o of items) res.write(`${JSON.stringify({ type: 'ADDED', object: o })}\n`);
    started = true;
    for (const line of pending.splice(0)) res.write(line);
    res.on('close', end);
    return reply;
  };

  app.get('/apis', async () => ({
    kind: 'APIResourceList',
    resources: KINDS.map((k) => ({
      apiVersion: apiVersionOf(k),
      kind: documentKindOf(k),
      plural: k.plural,
      singular: k.singular,
      namespaced: true,
    })),
  }));

  app.get<{ Params: KindParams; Querystring: ListQuery }>(
    '/apis/:group/:version/:plural',
    async (req, reply) => {
      try {
        const def = kindOf(req.params);
        if (isWatch(req.query)) return await watch(def, undefined, req.query, reply);
        return list(def, filterList(await registry.list(def), req.query));
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );

  app.get<{ Params: NsParams; Querystring: ListQuery }>(
    '/apis/:group/:version/namespaces/:ns/:plural',
    async (req, reply) => {
      try {
        const def = kindOf(req.params);
        if (isWatch(req.query)) return await watch(def, req.params.ns, req.query, reply);
        return list(def, filterList(await registry.list(def, req.params.ns), req.query));
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );

  app.get<{ Params: NameParams }>(
    '/apis/:group/:version/namespaces/:ns/:plural/:name',
    async (req, reply) => {
      try {
        return await registry.get(kindOf(req.params), req.params.ns, req.params.name);
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );

  const apply = async (p: NsParams & { name?: string }, body: unknown, contentType: string | undefined) => {
    const def = kindOf(p);
    const doc = bodyDocument(body, contentType);
    if (isObject(doc)) {
      const kind = documentKindOf(def);
      if (doc['kind'] !== undefined && doc['kind'] !== kind) {
        const k = String(doc['kind']);
        throw new TrellisError(
          k.toLowerCase() === kind.toLowerCase()
            ? 'TRELLIS_ERR_KIND_UNKNOWN'
            : 'TRELLIS_ERR_RESOURCE_INVALID',
          k.toLowerCase() === kind.toLowerCase()
            ? `kind: '${k}' is not a kind; kinds are written as Knative writes them: did you mean '${kind}'?`
            : `kind: '${k}' sent to the ${def.plural} path; send it to its own kind's path, or use trellis apply`,
          { field: 'kind' },
        );
      }
      const meta = isObject(doc['metadata']) ? doc['metadata'] : undefined;
      if (meta?.['namespace'] !== undefined && meta['namespace'] !== p.ns) {
        throw new TrellisError(
          'TRELLIS_ERR_RESOURCE_INVALID',
          `metadata.namespace: '${String(meta['namespace'])}' does not match the namespace in the path, '${p.ns}'`,
          { field: 'metadata.namespace' },
        );
      }
      if (p.name !== undefined && meta?.['name'] !== undefined && meta['name'] !== p.name) {
        throw new TrellisError(
          'TRELLIS_ERR_RESOURCE_INVALID',
          `metadata.name: '${String(meta['name'])}' does not match the name in the path`,
          {
            field: 'metadata.name',
          },
        );
      }
    }
    const res = await registry.apply(doc, p.ns);
    await settled();
    const fresh = await registry
      .get(def, res.object.metadata.namespace, res.object.metadata.name)
      .catch(() => res.object);
    return { ...res, object: fresh };
  };

  app.post<{ Params: NsParams }>('/apis/:group/:version/namespaces/:ns/:plural', async (req, reply) => {
    try {
      const r = await apply(req.params, req.body, req.headers['content-type']);
      return sendApplied(reply, r);
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.put<{ Params: NameParams }>(
    '/apis/:group/:version/namespaces/:ns/:plural/:name',
    async (req, reply) => {
      try {
        const r = await apply(req.params, req.body, req.headers['content-type']);
        return sendApplied(reply, r);
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );

  app.delete<{ Params: NameParams }>(
    '/apis/:group/:version/namespaces/:ns/:plural/:name',
    async (req, reply) => {
      try {
        const r = await registry.delete(kindOf(req.params), req.params.ns, req.params.name);
        await settled();
        return r;
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );
}
