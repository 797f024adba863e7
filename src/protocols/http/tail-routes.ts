/**
 * `GET .../namespaces/{ns}/brokers/{name}/tail?filter=CESQL` (and `channels`, `inmemorychannels`): the
 * events the Broker or Channel stores from now on, as Server-Sent Events, filtered on the server. Each
 * is `event: cloudevent`, `id: <seq>`, `data: <the event in the JSON format, one line>`; a follower that
 * falls more than 1 MiB behind loses events and is told (`event: dropped`, `data: {"dropped": N}`); a
 * comment every 15 s keeps proxies from closing the connection. Behind the admin guard: events are data.
 * @module
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { eventToJson } from '../../cloudevents/json-format.js';
import { TrellisError } from '../../errors.js';
import { CesqlError } from '../../filter/cesql/ast.js';
import { type CesqlExpression, compileCesql } from '../../filter/cesql/compile.js';
import type { TailHub } from '../../observability/tail.js';
import { streamKey } from '../../resources/addressing.js';
import type { ResourceStore } from '../../store/types.js';
import { sendError } from './errors.js';

const FOLLOWED = [
  { group: 'eventing.knative.dev', plural: 'brokers', kind: 'Broker' },
  { group: 'messaging.knative.dev', plural: 'channels', kind: 'Channel' },
  { group: 'messaging.knative.dev', plural: 'inmemorychannels', kind: 'InMemoryChannel' },
] as const;

/** Bytes a follower may have unsent before events are dropped for it. */
const MAX_BEHIND = 1024 * 1024;
const HEARTBEAT_MS = 15_000;

/** Compiles a tail's filter, or throws the 400 naming the query parameter. */
export function tailFilter(source: string | undefined): CesqlExpression | undefined {
  if (source === undefined || source.trim() === '') return undefined;
  try {
    return compileCesql(source);
  } catch (err) {
    if (err instanceof CesqlError)
      throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', `filter: CESQL does not parse: ${err.message}`, {
        field: 'filter',
      });
    throw err;
  }
}

export function registerTailRoutes(app: FastifyInstance, hub: TailHub, resources: ResourceStore): void {
  for (const h of FOLLOWED) {
    app.get<{ Params: { ns: string; name: string }; Querystring: { filter?: string } }>(
      `/apis/${h.group}/v1/namespaces/:ns/${h.plural}/:name/tail`,
      async (req, reply) => {
        let filter: CesqlExpression | undefined;
        try {
          filter = tailFilter(req.query.filter);
          if ((await resources.get(h.kind, req.params.ns, req.params.name)) === undefined)
            throw new TrellisError(
              'TRELLIS_ERR_RESOURCE_NOT_FOUND',
              `${h.kind} ${req.params.ns}/${req.params.name} does not exist`,
            );
        } catch (err) {
          return sendError(reply, err);
        }
        const res: ServerResponse = reply.raw;
        let dropped = 0;
        const write = (chunk: string) => res.write(chunk);
        const stop = hub.follow(streamKey(h.kind, req.params.ns, req.params.name), {
          filter,
          send: (seq, event) => {
            if (res.writableLength > MAX_BEHIND) {
              dropped++;
              return false;
            }
            write(`id: ${seq}\nevent: cloudevent\ndata: ${JSON.stringify(eventToJson(event))}\n\n`);
            return true;
          },
          close: () => res.end(),
        });
        if (stop === undefined)
          return sendError(
            reply,
            new TrellisError(
              'TRELLIS_ERR_TOO_MANY_TAILS',
              `${hub.maxFollowers} tails are open on this server; close one, or retry later`,
              { retryAfter: 5 },
            ),
          );
        reply.hijack();
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache',
          'x-accel-buffering': 'no',
        });
        write(`retry: 2000\n: following ${h.kind} ${req.params.ns}/${req.params.name}\n\n`);
        res.on('drain', () => {
          if (dropped === 0) return;
          write(`event: dropped\ndata: ${JSON.stringify({ dropped })}\n\n`);
          dropped = 0;
        });
        const beat = setInterval(() => write(': keep-alive\n\n'), HEARTBEAT_MS);
        beat.unref();
        const end = () => {
          clearInterval(beat);
          stop();
        };
        req.raw.on('close', end);
        res.on('close', end);
      },
    );
  }
}
