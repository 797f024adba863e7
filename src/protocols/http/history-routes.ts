/**
 * A Broker's or Channel's stored events (its history), read and written by the admin API, for
 * `trellis export --events` and `trellis import --events` (moving a mesh, retained events included,
 * from one store to another):
 *
 * - `GET  .../namespaces/{ns}/brokers/{name}/history?after=SEQ&limit=N`: `{ items: [{ seq, event }], next }`,
 *   oldest first; `next` is the `after` of the next page, or null at the end.
 * - `POST .../namespaces/{ns}/brokers/{name}/history` with a batch (`application/cloudevents-batch+json`):
 *   the events are stored as history (no deliveries: they are not sent to any Trigger again).
 *
 * The same under `messaging.knative.dev/v1` for `channels` and `inmemorychannels`.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import type { CloudEvent } from '../../cloudevents/event.js';
import { decodeHttp } from '../../cloudevents/http.js';
import { eventToJson } from '../../cloudevents/json-format.js';
import { TrellisError } from '../../errors.js';
import { streamKey } from '../../resources/addressing.js';
import type { EventLog, ResourceStore } from '../../store/types.js';
import { sendError } from './errors.js';

/** The kinds that keep a history, by the path they are served at. */
const HISTORIES = [
  { group: 'eventing.knative.dev', plural: 'brokers', kind: 'Broker' },
  { group: 'messaging.knative.dev', plural: 'channels', kind: 'Channel' },
  { group: 'messaging.knative.dev', plural: 'inmemorychannels', kind: 'InMemoryChannel' },
] as const;

/** Events per page at most (`limit`). */
const MAX_PAGE = 5000;

/** A page's `after` (a sequence number) and `limit` from a query, or the 400 naming the parameter. */
export function pageQuery(
  q: { after?: string | undefined; limit?: string | undefined },
  defaultLimit: number,
  maxLimit: number,
): { after: number; limit: number } {
  const after = Number(q.after ?? 0);
  const limit = Number(q.limit ?? defaultLimit);
  if (!Number.isSafeInteger(after) || after < 0)
    throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', `after: a sequence number >= 0, got '${q.after}'`);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > maxLimit)
    throw new TrellisError(
      'TRELLIS_ERR_BAD_REQUEST',
      `limit: a whole number from 1 to ${maxLimit}, got '${q.limit}'`,
    );
  return { after, limit };
}

export function registerHistoryRoutes(app: FastifyInstance, log: EventLog, resources: ResourceStore): void {
  for (const h of HISTORIES) {
    const path = `/apis/${h.group}/v1/namespaces/:ns/${h.plural}/:name/history`;
    const stream = async (ns: string, name: string): Promise<string> => {
      if ((await resources.get(h.kind, ns, name)) === undefined)
        throw new TrellisError('TRELLIS_ERR_RESOURCE_NOT_FOUND', `${h.kind} ${ns}/${name} does not exist`);
      return streamKey(h.kind, ns, name);
    };

    app.get<{ Params: { ns: string; name: string }; Querystring: { after?: string; limit?: string } }>(
      path,
      async (req, reply) => {
        try {
          const { after, limit } = pageQuery(req.query, 1000, MAX_PAGE);
          const rows = await log.read(await stream(req.params.ns, req.params.name), after, limit);
          return {
            items: rows.map((r) => ({ seq: r.seq, event: eventToJson(r.event) })),
            next: rows.length === limit ? rows.at(-1)!.seq : null,
          };
        } catch (err) {
          return sendError(reply, err);
        }
      },
    );

    app.post<{ Params: { ns: string; name: string } }>(path, async (req, reply) => {
      try {
        const key = await stream(req.params.ns, req.params.name);
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.from(JSON.stringify(req.body ?? null));
        const ct = req.headers['content-type'] ?? '';
        if (!ct.toLowerCase().startsWith('application/cloudevents-batch+json'))
          throw new TrellisError(
            'TRELLIS_ERR_UNSUPPORTED_MEDIA_TYPE',
            `history takes a batch: content-type application/cloudevents-batch+json, got '${ct}'`,
          );
        const events: CloudEvent[] = decodeHttp(req.raw.rawHeaders, body).events;
        if (events.length > 0)
          await log.append(events.map((event) => ({ stream: key, event, deliveries: [] })));
        return reply.code(201).send({ imported: events.length });
      } catch (err) {
        return sendError(reply, err);
      }
    });
  }
}
