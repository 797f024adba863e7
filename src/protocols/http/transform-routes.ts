/**
 * `POST /eventtransforms/{namespace}/{name}`: an event in (binary, structured or a batch of one), the
 * transformed event out in binary mode (`200`), or `202` when it went to the sink and nothing came back.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import { decodeHttp, encodeBinary } from '../../cloudevents/http.js';
import type { Transformer } from '../../dataplane/transform.js';
import { TrellisError } from '../../errors.js';
import { TRANSFORM_PREFIX } from '../../resources/addressing.js';
import { postOnly, sendError } from './errors.js';

export function registerTransformRoutes(app: FastifyInstance, transformer: Transformer): void {
  app.all<{ Params: { namespace: string; name: string } }>(
    `/${TRANSFORM_PREFIX}/:namespace/:name`,
    async (req, reply) => {
      const handled = postOnly(req.method, reply, 'an EventTransform');
      if (handled !== undefined) return handled;
      try {
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const { events } = decodeHttp(req.raw.rawHeaders, body);
        if (events.length !== 1)
          throw new TrellisError(
            'TRELLIS_ERR_MALFORMED_EVENT',
            `an EventTransform takes one event at a time, got ${events.length}`,
          );
        const r = await transformer.handle(
          `${TRANSFORM_PREFIX}/${req.params.namespace}/${req.params.name}`,
          events[0]!,
        );
        if (r.event === undefined) return reply.code(r.status).send();
        const msg = encodeBinary(r.event);
        return reply
          .code(r.status)
          .headers(msg.headers)
          .send(msg.body ?? '');
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );
}
