/**
 * HTTP routes of the Broker ingress. `POST /{namespace}/{broker}` is served by a plain `node:http` handler
 * ahead of Fastify (the hot path, measured in `npm run bench`); `OPTIONS` (webhook handshake) and the 405s
 * for other methods go through Fastify.
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { decodeHttp } from '../../cloudevents/http.js';
import type { Ingress } from '../../dataplane/ingress.js';
import { TrellisError } from '../../errors.js';
import { ADDRESS_PREFIXES } from '../../resources/addressing.js';
import { sendError, toTrellisError } from './errors.js';

const ALLOW = 'POST, OPTIONS';
// Two non-empty path segments (a Broker), or three whose first names a kind (`/channels/ns/name`), an
// optional trailing slash, an optional query string.
const INGRESS_PATH = /^\/([^/?]+)\/([^/?]+)(?:\/([^/?]+))?\/?(?:\?.*)?$/;

/**
 * Returns a request handler that serves `POST /{namespace}/{broker}` and returns false for any other
 * request, which the caller then hands to Fastify.
 */
export function ingressHandler(
  ingress: Ingress,
  maxBodyBytes: number,
): (req: IncomingMessage, res: ServerResponse) => boolean {
  const fail = (res: ServerResponse, err: unknown) => {
    const te = toTrellisError(err);
    const body = JSON.stringify(te.toJSON());
    const headers: Record<string, string> = {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(body)),
    };
    if (te.status === 503 || te.status === 429)
      headers['retry-after'] = String(te.details['retryAfter'] ?? 1);
    res.writeHead(te.status, headers).end(body);
  };
  return (req, res) => {
    if (req.method !== 'POST') return false;
    if (!ingress.accepting) res.shouldKeepAlive = false;
    const m = INGRESS_PATH.exec(req.url ?? '');
    if (m === null || m[1] === 'apis') return false;
    if (m[3] !== undefined && !ADDRESS_PREFIXES.has(m[1]!)) return false;
    // Namespaces and names are DNS labels: nothing in them is percent-encoded, so the path is used as it
    // is (a '%' in it simply names nothing).
    const key = m[3] === undefined ? `${m[1]!}/${m[2]!}` : `${m[1]!}/${m[2]!}/${m[3]}`;
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBodyBytes) {
      fail(res, tooLarge(maxBodyBytes));
      req.resume();
      return true;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let aborted = false;
    req.on('data', (c: Buffer) => {
      if (aborted) return;
      size += c.length;
      if (size > maxBodyBytes) {
        aborted = true;
        res.setHeader('connection', 'close');
        fail(res, tooLarge(maxBodyBytes));
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => {
      aborted = true;
    });
    req.on('end', () => {
      if (aborted) return;
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      let events: ReturnType<typeof decodeHttp>['events'];
      try {
        events = decodeHttp(req.rawHeaders, body).events;
      } catch (err) {
        fail(res, err);
        return;
      }
      ingress.accept(key, events).then(
        () => {
          res.writeHead(202).end();
        },
        (err: unknown) => fail(res, err),
      );
    });
    return true;
  };
}

function tooLarge(limit: number): TrellisError {
  return new TrellisError(
    'TRELLIS_ERR_PAYLOAD_TOO_LARGE',
    `the request body is over the limit of ${limit} bytes`,
    { limit },
  );
}

/** OPTIONS (the CloudEvents webhook handshake, http-webhook.md §4) and 405 for methods other than POST. */
export function registerIngressRoutes(app: FastifyInstance): void {
  const handler = async (
    req: { method: string; url: string; headers: Record<string, unknown>; params: unknown },
    reply: import('fastify').FastifyReply,
    what: string,
  ) => {
    if (req.method === 'OPTIONS') {
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
        `${req.method} is not allowed on a ${what}; send events with POST`,
      ),
    );
  };
  app.all<{ Params: { namespace: string; broker: string } }>('/:namespace/:broker', async (req, reply) => {
    if (req.params.namespace === 'apis') {
      return sendError(
        reply,
        new TrellisError('TRELLIS_ERR_ROUTE_NOT_FOUND', `no route for ${req.method} ${req.url}`),
      );
    }
    return handler(req, reply, 'Broker');
  });
  app.all<{ Params: { prefix: string; namespace: string; name: string } }>(
    '/:prefix/:namespace/:name',
    async (req, reply) => {
      if (!ADDRESS_PREFIXES.has(req.params.prefix)) {
        return sendError(
          reply,
          new TrellisError('TRELLIS_ERR_ROUTE_NOT_FOUND', `no route for ${req.method} ${req.url}`),
        );
      }
      return handler(req, reply, req.params.prefix.replace(/s$/, ''));
    },
  );
}
