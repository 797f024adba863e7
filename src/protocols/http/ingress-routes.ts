/**
 * HTTP routes of the Broker ingress: `POST /{namespace}/{broker}` in binary, structured or batched mode,
 * `OPTIONS` for the webhook handshake, and 405 for everything else.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import { decodeHttp } from '../../cloudevents/http.js';
import type { Ingress } from '../../dataplane/ingress.js';
import { TrellisError } from '../../errors.js';
import { sendError } from './errors.js';

const ALLOW = 'POST, OPTIONS';
const EMPTY = Buffer.alloc(0);

export function registerIngressRoutes(app: FastifyInstance, ingress: Ingress): void {
  app.all<{ Params: { namespace: string; broker: string } }>('/:namespace/:broker', async (req, reply) => {
    const key = `${req.params.namespace}/${req.params.broker}`;
    if (req.method === 'POST') {
      try {
        const body = Buffer.isBuffer(req.body) ? req.body : EMPTY;
        const { events } = decodeHttp(req.raw.rawHeaders, body);
        await ingress.accept(key, events);
        return reply.code(202).send();
      } catch (err) {
        return sendError(reply, err);
      }
    }
    if (req.method === 'OPTIONS') {
      // CloudEvents webhook validation handshake (http-webhook.md §4).
      const origin = req.headers['webhook-request-origin'];
      reply.header('allow', ALLOW);
      if (typeof origin === 'string') {
        reply.header('webhook-allowed-origin', origin);
        reply.header('webhook-allowed-rate', '*');
      }
      return reply.code(200).send();
    }
    reply.header('allow', ALLOW);
    return sendError(
      reply,
      new TrellisError(
        'TRELLIS_ERR_METHOD_NOT_ALLOWED',
        `${req.method} is not allowed on a Broker; send events with POST`,
      ),
    );
  });
}
