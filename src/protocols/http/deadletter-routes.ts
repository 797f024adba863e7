/**
 * Dead letters kept in Trellis (subscriptions annotated `trellis.dev/dead-letters: keep`), per Broker,
 * Channel or flow, and the retries pending:
 *
 * - `GET  .../namespaces/{ns}/{brokers|channels|inmemorychannels|sequences|parallels}/{name}/deadletters?filter=CESQL&after=SEQ&limit=N`
 * - `GET  .../deadletters/{seq}`
 * - `POST .../deadletters/redrive` `{"seqs": [..]} | {"filter": "CESQL"} | {"all": true}`, optional `"to": URL`:
 *   back to the subscription each failed on (or to the URL), removed from the store once taken.
 * - `POST .../deadletters/purge` with the same selection: removed.
 * - `GET  /apis/retries`: deliveries waiting for their next attempt, with the last answer.
 *
 * Redrives and purges are written to the log (`audit`). Behind the admin guard.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import type { CloudEvent } from '../../cloudevents/event.js';
import { eventToJson } from '../../cloudevents/json-format.js';
import { DL_ATTEMPTS, DL_FAILED_AT, DL_SUBSCRIPTION, deadLetterStream } from '../../dataplane/dispatcher.js';
import type { Logger, SubscriptionRoute } from '../../dataplane/routes.js';
import { TrellisError } from '../../errors.js';
import type { CesqlExpression } from '../../filter/cesql/compile.js';
import { streamKey } from '../../resources/addressing.js';
import { isObject } from '../../resources/validation.js';
import type { EventLog, PendingDelivery, ResourceStore } from '../../store/types.js';
import { sendError } from './errors.js';
import { pageQuery } from './history-routes.js';
import { tailFilter } from './tail-routes.js';

const KEPT = [
  { group: 'eventing.knative.dev', plural: 'brokers', kind: 'Broker' },
  { group: 'messaging.knative.dev', plural: 'channels', kind: 'Channel' },
  { group: 'messaging.knative.dev', plural: 'inmemorychannels', kind: 'InMemoryChannel' },
  { group: 'flows.knative.dev', plural: 'sequences', kind: 'Sequence' },
  { group: 'flows.knative.dev', plural: 'parallels', kind: 'Parallel' },
] as const;

const MAX_PAGE = 1000;
/** Dead letters one redrive or purge looks at, at most (a filter is evaluated on each). */
const MAX_SCAN = 100_000;
const MAX_SEQS = 10_000;
/** Pending deliveries looked at per subscription for retries, and retries listed per subscription. */
const RETRY_SCAN = 5000;
const RETRY_LIST = 100;

/** The extensions a dead letter gets in the store, taken off when it is redriven. */
const ADDED = [
  'knativeerrordest',
  'knativeerrorcode',
  'knativeerrordata',
  DL_SUBSCRIPTION,
  DL_FAILED_AT,
  DL_ATTEMPTS,
];

export interface DeadLetterDeps {
  log: EventLog;
  resources: ResourceStore;
  logger: Logger;
  routes(): Iterable<SubscriptionRoute>;
  /** Stores the event as a new delivery for one subscription of its stream, and wakes its worker. */
  redeliver(route: SubscriptionRoute, event: CloudEvent): Promise<void>;
  /** One attempt to a URL; resolves with the status code, rejects with why it failed. */
  send(url: string, event: CloudEvent): Promise<number>;
  /** Pending deliveries of a subscription (without leasing them). */
  peek(subscription: string, afterSeq: number, limit: number): Promise<PendingDelivery[]>;
  /** The last failed answer of a delivery waiting for a retry in this process. */
  lastAnswer(
    subscription: string,
    seq: number,
  ): { code?: number | undefined; answer: string; at: string } | undefined;
}

/** What the store keeps, as the API shows it. */
function view(seq: number, e: CloudEvent, routes: Map<string, SubscriptionRoute>) {
  const a = e.attrs;
  const sub = String(a[DL_SUBSCRIPTION] ?? '');
  const r = routes.get(sub);
  const data = a['knativeerrordata'];
  const clean: CloudEvent = { ...e, attrs: { ...a } };
  for (const k of ADDED) delete clean.attrs[k];
  return {
    seq,
    subscription:
      r === undefined ? { id: sub } : { id: sub, kind: r.kind, namespace: r.namespace, name: r.name },
    failedAt: a[DL_FAILED_AT],
    attempts: a[DL_ATTEMPTS],
    errorDest: a['knativeerrordest'],
    errorCode: a['knativeerrorcode'] === undefined ? undefined : Number(a['knativeerrorcode']),
    errorData: typeof data === 'string' ? Buffer.from(data, 'base64').toString('utf8') : undefined,
    event: eventToJson(clean),
  };
}

interface Selection {
  seqs?: number[];
  filter?: CesqlExpression;
  all?: boolean;
  to?: string;
}

function selection(body: unknown, withTo: boolean): Selection {
  const b = isObject(body) ? body : {};
  for (const k of Object.keys(b))
    if (!['seqs', 'filter', 'all', ...(withTo ? ['to'] : [])].includes(k))
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        `${k}: not a field here (seqs, filter, all${withTo ? ', to' : ''})`,
        {
          field: k,
        },
      );
  const given = ['seqs', 'filter', 'all'].filter((k) => b[k] !== undefined);
  if (given.length !== 1)
    throw new TrellisError(
      'TRELLIS_ERR_BAD_REQUEST',
      'give exactly one of seqs (a list of sequence numbers), filter (a CESQL expression) or all: true',
    );
  const out: Selection = {};
  if (b['seqs'] !== undefined) {
    const s = b['seqs'];
    if (
      !Array.isArray(s) ||
      s.length === 0 ||
      s.length > MAX_SEQS ||
      !s.every((x) => Number.isSafeInteger(x) && x > 0)
    )
      throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', `seqs: a list of 1 to ${MAX_SEQS} sequence numbers`, {
        field: 'seqs',
      });
    out.seqs = s as number[];
  }
  if (b['filter'] !== undefined) {
    if (typeof b['filter'] !== 'string' || b['filter'].trim() === '')
      throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', 'filter: a CESQL expression', { field: 'filter' });
    out.filter = tailFilter(b['filter']);
  }
  if (b['all'] !== undefined) {
    if (b['all'] !== true)
      throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', 'all: must be true', { field: 'all' });
    out.all = true;
  }
  if (withTo && b['to'] !== undefined) {
    let u: URL | undefined;
    try {
      u = typeof b['to'] === 'string' ? new URL(b['to']) : undefined;
    } catch {}
    if (u === undefined || (u.protocol !== 'http:' && u.protocol !== 'https:'))
      throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', 'to: an absolute http(s) URL', { field: 'to' });
    out.to = u.toString();
  }
  return out;
}

/** The dead letters a selection names, oldest first, bounded. */
async function selected(
  log: EventLog,
  stream: string,
  sel: Selection,
): Promise<{ seq: number; event: CloudEvent }[]> {
  const out: { seq: number; event: CloudEvent }[] = [];
  if (sel.seqs !== undefined) {
    const want = new Set(sel.seqs);
    for (let after = 0, scanned = 0; scanned < MAX_SCAN && want.size > 0; ) {
      const page = await log.read(stream, after, MAX_PAGE);
      if (page.length === 0) break;
      for (const r of page) if (want.delete(r.seq)) out.push(r);
      scanned += page.length;
      after = page[page.length - 1]!.seq;
    }
    return out;
  }
  for (let after = 0, scanned = 0; scanned < MAX_SCAN; ) {
    const page = await log.read(stream, after, MAX_PAGE);
    if (page.length === 0) break;
    for (const r of page) if (sel.all === true || sel.filter!.matches(r.event.attrs)) out.push(r);
    scanned += page.length;
    after = page[page.length - 1]!.seq;
  }
  return out;
}

export function registerDeadLetterRoutes(app: FastifyInstance, deps: DeadLetterDeps): void {
  const routesById = () => new Map([...deps.routes()].map((r) => [r.id, r]));
  for (const k of KEPT) {
    const base = `/apis/${k.group}/v1/namespaces/:ns/${k.plural}/:name/deadletters`;
    type P = { ns: string; name: string };
    const store = async (p: P) => {
      if ((await deps.resources.get(k.kind, p.ns, p.name)) === undefined)
        throw new TrellisError(
          'TRELLIS_ERR_RESOURCE_NOT_FOUND',
          `${k.kind} ${p.ns}/${p.name} does not exist`,
        );
      return deadLetterStream(streamKey(k.kind, p.ns, p.name));
    };

    app.get<{ Params: P; Querystring: { filter?: string; after?: string; limit?: string } }>(
      base,
      async (req, reply) => {
        try {
          const filter = tailFilter(req.query.filter);
          const { after, limit } = pageQuery(req.query, 100, MAX_PAGE);
          const stream = await store(req.params);
          const routes = routesById();
          const items: ReturnType<typeof view>[] = [];
          let cursor = after;
          let scanned = 0;
          let more = false;
          // A filter may skip many: read pages until the page is full, the stream ends, or MAX_SCAN.
          for (;;) {
            const page = await deps.log.read(stream, cursor, MAX_PAGE);
            for (const r of page) {
              cursor = r.seq;
              if (filter === undefined || filter.matches(r.event.attrs))
                items.push(view(r.seq, r.event, routes));
              if (items.length >= limit) break;
            }
            scanned += page.length;
            if (items.length >= limit) {
              more = true;
              break;
            }
            if (page.length < MAX_PAGE) break;
            if (scanned >= MAX_SCAN) {
              more = true;
              break;
            }
          }
          return { kind: 'DeadLetterList', items, next: more ? cursor : null };
        } catch (err) {
          return sendError(reply, err);
        }
      },
    );

    app.get<{ Params: P & { seq: string } }>(`${base}/:seq`, async (req, reply) => {
      try {
        const seq = Number(req.params.seq);
        if (!Number.isSafeInteger(seq) || seq < 1)
          throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', `a sequence number, got '${req.params.seq}'`);
        const stream = await store(req.params);
        const e = await deps.log.getEvent(stream, seq);
        if (e === undefined)
          throw new TrellisError(
            'TRELLIS_ERR_EVENT_NOT_FOUND',
            `${k.kind} ${req.params.ns}/${req.params.name} keeps no dead letter ${seq}`,
          );
        return view(seq, e, routesById());
      } catch (err) {
        return sendError(reply, err);
      }
    });

    app.post<{ Params: P }>(`${base}/redrive`, async (req, reply) => {
      try {
        const sel = selection(parseJson(req.body), true);
        const stream = await store(req.params);
        const routes = routesById();
        const done: number[] = [];
        const failed: { seq: number; reason: string }[] = [];
        for (const { seq, event } of await selected(deps.log, stream, sel)) {
          const clean: CloudEvent = { ...event, attrs: { ...event.attrs } };
          for (const a of ADDED) delete clean.attrs[a];
          try {
            if (sel.to !== undefined) {
              const code = await deps.send(sel.to, clean);
              if (code < 200 || code >= 300) throw new Error(`${sel.to} answered ${code}`);
            } else {
              const r = routes.get(String(event.attrs[DL_SUBSCRIPTION] ?? ''));
              if (r === undefined)
                throw new Error(
                  'its subscription no longer exists (or is not Ready): redrive it with "to": URL',
                );
              await deps.redeliver(r, clean);
            }
            await deps.log.remove(stream, [seq]);
            done.push(seq);
          } catch (err) {
            failed.push({ seq, reason: (err as Error).message });
          }
        }
        deps.logger.info(
          {
            audit: 'deadletters.redrive',
            target: `${k.kind} ${req.params.ns}/${req.params.name}`,
            to: sel.to ?? 'their subscriptions',
            redriven: done.length,
            failed: failed.length,
            seqs: done.slice(0, 100),
          },
          'dead letters redriven',
        );
        return { kind: 'RedriveResult', redriven: done.length, seqs: done, failed };
      } catch (err) {
        return sendError(reply, err);
      }
    });

    app.post<{ Params: P }>(`${base}/purge`, async (req, reply) => {
      try {
        const sel = selection(parseJson(req.body), false);
        const stream = await store(req.params);
        const seqs = (await selected(deps.log, stream, sel)).map((r) => r.seq);
        const purged = seqs.length === 0 ? 0 : await deps.log.remove(stream, seqs);
        deps.logger.info(
          {
            audit: 'deadletters.purge',
            target: `${k.kind} ${req.params.ns}/${req.params.name}`,
            purged,
            seqs: seqs.slice(0, 100),
          },
          'dead letters purged',
        );
        return { kind: 'PurgeResult', purged, seqs };
      } catch (err) {
        return sendError(reply, err);
      }
    });
  }

  app.get('/apis/retries', async (_req, reply) => {
    try {
      const items: Record<string, unknown>[] = [];
      for (const r of deps.routes()) {
        let n = 0;
        for (let after = 0, scanned = 0; scanned < RETRY_SCAN && n < RETRY_LIST; ) {
          const page = await deps.peek(r.id, after, 500);
          if (page.length === 0) break;
          for (const p of page) {
            if (p.attempt === 0 || n >= RETRY_LIST) continue;
            n++;
            const last = deps.lastAnswer(r.id, p.seq);
            items.push({
              subscription: { kind: r.kind, namespace: r.namespace, name: r.name },
              seq: p.seq,
              eventId: p.event.attrs['id'],
              type: p.event.attrs['type'],
              failedAttempts: p.attempt,
              nextAttemptAt: new Date(p.dueAt).toISOString(),
              lastAnswer: last,
            });
          }
          scanned += page.length;
          after = page[page.length - 1]!.seq;
        }
      }
      return { kind: 'RetryList', items };
    } catch (err) {
      return sendError(reply, err);
    }
  });
}

/** The body as JSON (the server keeps bodies as bytes). */
function parseJson(body: unknown): unknown {
  if (!Buffer.isBuffer(body) || body.length === 0) return {};
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', `the body is not JSON: ${(err as Error).message}`);
  }
}
