/**
 * `POST /integrationsinks/{namespace}/{name}`: an IntegrationSink with the `log` Kamelet writes each event
 * it gets into the server's log (at its level, under its logger name) and answers `202`. Nothing is
 * stored: the log line is the delivery.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import type { CloudEvent } from '../../cloudevents/event.js';
import { decodeHttp } from '../../cloudevents/http.js';
import { TrellisError } from '../../errors.js';
import { INTEGRATION_SINK_PREFIX } from '../../resources/addressing.js';
import type { LogSinkSpec } from '../../resources/integration.js';
import { postOnly, sendError } from './errors.js';

/** The most of an event's data a log line shows. */
const MAX_LOGGED_DATA = 4096;

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
export interface LogTarget {
  child(bindings: Record<string, unknown>): Record<Level, (obj: object, msg?: string) => void>;
}

/** The Ready log sinks by `integrationsinks/NS/NAME`, kept current by the server. */
export type LogSinks = Map<string, LogSinkSpec>;

function dataForLog(e: CloudEvent): string | undefined {
  if (e.data === undefined) return undefined;
  const ct = String(e.attrs['datacontenttype'] ?? '');
  const text = ct === '' || ct.startsWith('text/') || ct.includes('json') || ct.includes('xml');
  if (!text) return `(${e.data.length} bytes of ${ct})`;
  const s = e.data.toString('utf8');
  return s.length > MAX_LOGGED_DATA ? `${s.slice(0, MAX_LOGGED_DATA)}… (${e.data.length} bytes)` : s;
}

export function registerLogSinkRoutes(app: FastifyInstance, sinks: LogSinks, logger: LogTarget): void {
  app.all<{ Params: { namespace: string; name: string } }>(
    `/${INTEGRATION_SINK_PREFIX}/:namespace/:name`,
    async (req, reply) => {
      const handled = postOnly(req.method, reply, 'an IntegrationSink');
      if (handled !== undefined) return handled;
      try {
        const { namespace, name } = req.params;
        const spec = sinks.get(`${INTEGRATION_SINK_PREFIX}/${namespace}/${name}`);
        if (spec === undefined)
          throw new TrellisError(
            'TRELLIS_ERR_DESTINATION_NOT_FOUND',
            `no Ready IntegrationSink ${namespace}/${name} with a log sink takes events here`,
          );
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const { events } = decodeHttp(req.raw.rawHeaders, body);
        if (spec.level !== 'OFF') {
          const level = spec.level.toLowerCase() as Level;
          const log = logger.child({ logger: spec.loggerName, integrationsink: `${namespace}/${name}` });
          for (const e of events) {
            const line: Record<string, unknown> = spec.showHeaders
              ? { event: { ...e.attrs } }
              : { event: { id: e.attrs['id'], type: e.attrs['type'], source: e.attrs['source'] } };
            if (spec.showBody) {
              const d = dataForLog(e);
              if (d !== undefined) line['body'] = spec.multiline ? d : d.replace(/\r?\n/g, '\\n');
            }
            log[level](line, 'event received');
          }
        }
        return reply.code(202).send();
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );
}
