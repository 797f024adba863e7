/**
 * `POST /{prefix}/{namespace}/{name}` for connector sinks (`/natssinks/...`): the events in the request
 * are published to the external system, and the answer is `202` once it confirmed them.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import type { CloudEvent } from '../../cloudevents/event.js';
import { decodeHttp } from '../../cloudevents/http.js';
import { postOnly, sendError } from './errors.js';

export function registerConnectorSinkRoutes(
  app: FastifyInstance,
  prefix: string,
  kind: string,
  publish: (key: string, events: CloudEvent[]) => Promise<void>,
): void {
  app.all<{ Params: { namespace: string; name: string } }>(
    `/${prefix}/:namespace/:name`,
    async (req, reply) => {
      const handled = postOnly(req.method, reply, `a ${kind}`);
      if (handled !== undefined) return handled;
      try {
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const { events } = decodeHttp(req.raw.rawHeaders, body);
        await publish(`${prefix}/${req.params.namespace}/${req.params.name}`, events);
        return reply.code(202).send();
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );
}
