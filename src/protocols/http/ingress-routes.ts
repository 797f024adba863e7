/**
 * HTTP routes of the Broker ingress. `POST /{namespace}/{broker}` is served by a plain `node:http` handler
 * ahead of Fastify (the hot path, measured in `npm run bench`); `OPTIONS` (webhook handshake) and the 405s
 * for other methods go through Fastify.
 * @module
 */

import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { CloudEvent } from '../../cloudevents/event.js';
import { decodeHttp } from '../../cloudevents/http.js';
import type { Ingress, SenderIdentity, Senders } from '../../dataplane/ingress.js';
import { TokenBuckets } from '../../dataplane/rate-limit.js';
import type { Logger } from '../../dataplane/routes.js';
import {
  eventTraceContext,
  type IngressTrace,
  type TraceContext,
  type Tracer,
} from '../../dataplane/tracing.js';
import { TrellisError } from '../../errors.js';
import { ADDRESS_PREFIXES, pathAudience } from '../../resources/addressing.js';
import { sendError, toTrellisError } from './errors.js';
import { wantsEventStream } from './sse-routes.js';

const ALLOW = 'POST, OPTIONS';
// Two non-empty path segments (a Broker), or three whose first names a kind (`/channels/ns/name`), an
// optional trailing slash, an optional query string.
const INGRESS_PATH = /^\/([^/?]+)\/([^/?]+)(?:\/([^/?]+))?\/?(?:\?.*)?$/;

/**
 * Returns a request handler that serves `POST /{namespace}/{broker}` and returns false for any other
 * request, which the caller then hands to Fastify.
 */
/**
 * The rate limits of streams (their owner's annotations, else the server's flags): the 429 to answer when
 * `n` more events from `sender` (its subject, else its address) would go over, else undefined. One is
 * shared by every protocol, so that a limit holds whichever way events come.
 */
export type RateLimiter = (key: string, sender: string, n: number) => TrellisError | undefined;

export function rateLimiter(ingress: Ingress): RateLimiter {
  // Token buckets per stream, and per stream and sender address (bounded: the least recently used go).
  const streamBuckets = new TokenBuckets();
  const senderBuckets = new TokenBuckets(10_000);
  return (key, sender, n) => {
    const route = ingress.streams.get(key);
    if (route === undefined || (route.rateLimit === undefined && route.rateLimitPerSender === undefined))
      return undefined;
    const events = Math.max(1, n);
    for (const [limit, bucket, bucketKey, who, which] of [
      [route.rateLimitPerSender, senderBuckets, `${key}\u0000${sender}`, 'from one sender', 'sender'],
      [route.rateLimit, streamBuckets, key, '', 'stream'],
    ] as const) {
      if (limit === undefined) continue;
      const wait = bucket.take(bucketKey, limit, events);
      if (wait === 0) continue;
      ingress.observer.rateLimited?.(key, route.kind, which, events);
      const rate = `${Number(limit.perSecond.toFixed(3))} events/s${who ? ` ${who}` : ''}, bursts of ${limit.burst}`;
      return new TrellisError(
        'TRELLIS_ERR_RATE_LIMITED',
        events > limit.burst
          ? `/${key} takes at most ${rate}: a batch of ${events} never fits; send smaller batches`
          : `/${key} takes at most ${rate}; nothing was stored, retry after ${wait} s`,
        { retryAfter: wait },
      );
    }
    return undefined;
  };
}

export function ingressHandler(
  ingress: Ingress,
  maxBodyBytes: number,
  logger?: Logger,
  rateLimited: RateLimiter = rateLimiter(ingress),
): (req: IncomingMessage, res: ServerResponse) => boolean {
  const ids = requestIds();
  /** Reports an answered request to the observer; a stream that does not exist is not named (no label per path). */
  const seen = (key: string, started: number, events: number, code: number, bytes: number) => {
    const route = ingress.streams.get(key);
    ingress.observer.ingress?.({
      stream: route === undefined ? undefined : key,
      kind: route?.kind,
      events,
      code,
      bytes,
      seconds: (performance.now() - started) / 1000,
    });
  };
  const fail = (res: ServerResponse, err: unknown, key: string, requestId: string): number => {
    const te = toTrellisError(err);
    const body = JSON.stringify({ ...te.toJSON(), requestId });
    const headers: Record<string, string> = {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(body)),
      'x-request-id': requestId,
    };
    // A refusal is the sender's business (debug); the server failing to store is the operator's (warn).
    // Never the event's data.
    if (logger !== undefined) {
      const line = { requestId, path: `/${key}`, status: te.status, code: te.code };
      if (te.status >= 500) logger.warn({ ...line, err: te.message }, 'ingress refused a request');
      else logger.debug({ ...line, reason: te.message }, 'ingress refused a request');
    }
    if (te.status === 503 || te.status === 429)
      headers['retry-after'] = String(te.details['retryAfter'] ?? 1);
    res.writeHead(te.status, headers).end(body);
    return te.status;
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
    const started = performance.now();
    const rid = ids(req.headers['x-request-id']);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBodyBytes) {
      seen(key, started, 1, fail(res, tooLarge(maxBodyBytes), key, rid), declared);
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
        seen(key, started, 1, fail(res, tooLarge(maxBodyBytes), key, rid), size);
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => {
      aborted = true;
    });
    const received = (sender?: SenderIdentity) => {
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      let events: ReturnType<typeof decodeHttp>['events'];
      try {
        events = decodeHttp(req.rawHeaders, body).events;
      } catch (err) {
        seen(key, started, 1, fail(res, err, key, rid), size);
        return;
      }
      if (sender !== undefined) {
        try {
          ingress.senders!.authorize(key, sender, events);
        } catch (err) {
          seen(key, started, events.length, fail(res, err, key, rid), size);
          return;
        }
      }
      // Per sender: its authenticated subject, else its network address.
      const limited = rateLimited(
        key,
        sender !== undefined ? `sub:${sender.iss}:${sender.sub}` : `ip:${req.socket.remoteAddress ?? ''}`,
        events.length,
      );
      if (limited !== undefined) {
        seen(key, started, events.length, fail(res, limited, key, rid), size);
        return;
      }
      const trace =
        ingress.tracer === undefined ? undefined : startTrace(ingress.tracer, req, key, rid, events);
      ingress.accept(key, events, trace).then(
        () => {
          res.writeHead(202, { 'x-request-id': rid }).end();
          seen(key, started, events.length, 202, size);
          trace?.span.set('http.response.status_code', 202);
          trace?.span.end();
        },
        (err: unknown) => {
          const code = fail(res, err, key, rid);
          seen(key, started, events.length, code, size);
          trace?.span.set('http.response.status_code', code);
          trace?.span.end(code >= 500 ? (err as Error).message : undefined);
        },
      );
    };
    req.on('end', () => {
      if (aborted) return;
      const senders = ingress.senders;
      if (senders === undefined) return received();
      // Authentication on: the sender's token for this addressable's audience (verified ones are
      // cached, so most requests pass without cryptography).
      let who: ReturnType<Senders['check']>;
      try {
        who = senders.check(req.headers.authorization, pathAudience(`/${key}`) ?? key, req.socket);
      } catch (err) {
        seen(key, started, 1, fail(res, err, key, rid), size);
        return;
      }
      if (!(who instanceof Promise)) return received(who);
      who.then(received, (err: unknown) => seen(key, started, 1, fail(res, err, key, rid), size));
    });
    return true;
  };
}

/** A W3C `traceparent` (version 00): checked before it is copied into an event. */
const TRACEPARENT = /^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$/;

/**
 * The span of an ingress request, under the sender's HTTP `traceparent` (else the first event's
 * distributed-tracing extension); events without the extension get the sender's context (else this
 * span's) as where their transmission started.
 */
function startTrace(
  tracer: Tracer,
  req: IncomingMessage,
  key: string,
  requestId: string,
  events: readonly CloudEvent[],
): IngressTrace {
  const tp = req.headers['traceparent'];
  const ts = req.headers['tracestate'];
  const http: TraceContext | undefined =
    typeof tp === 'string' && TRACEPARENT.test(tp)
      ? { traceparent: tp, tracestate: typeof ts === 'string' && ts.length <= 512 ? ts : undefined }
      : undefined;
  const one = events.length === 1 ? events[0]!.attrs : undefined;
  const span = tracer.start(`ingress ${key}`, http ?? eventTraceContext(events[0]?.attrs ?? {}), 'server', {
    'messaging.system': 'trellis',
    'messaging.destination.name': key,
    'messaging.batch.message_count': events.length,
    'cloudevents.event_id': one === undefined ? undefined : String(one['id']),
    'cloudevents.event_type': one === undefined ? undefined : String(one['type']),
    'cloudevents.event_source': one === undefined ? undefined : String(one['source']),
    'http.request.id': requestId,
  });
  return { span, start: http ?? span.context };
}

/** A request id the sender may give (`X-Request-Id`) when it is short and plain. */
const SENDER_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Request ids for ingress: the sender's `X-Request-Id` when it gives a plain one, else this process's
 * own (a random prefix and a counter: unique, and cheap on the hot path). Sent back in `X-Request-Id`,
 * in error bodies, and in log lines about the request.
 */
export function requestIds(): (given: string | string[] | undefined) => string {
  const prefix = randomBytes(6).toString('base64url');
  let n = 0;
  return (given) =>
    typeof given === 'string' && SENDER_ID.test(given) ? given : `${prefix}-${(n++).toString(36)}`;
}

function tooLarge(limit: number): TrellisError {
  return new TrellisError(
    'TRELLIS_ERR_PAYLOAD_TOO_LARGE',
    `the request body is over the limit of ${limit} bytes`,
    { limit },
  );
}

/** OPTIONS (the CloudEvents webhook handshake, http-webhook.md §4) and 405 for methods other than POST. */
export function registerIngressRoutes(
  app: FastifyInstance,
  /** Serves `GET` with `Accept: text/event-stream` on an address (a read-only subscriber). */
  eventStream?: (req: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply>,
): void {
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
    if (eventStream !== undefined && wantsEventStream(req)) return eventStream(req, reply);
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
      if (eventStream !== undefined && wantsEventStream(req)) return eventStream(req, reply);
      return handler(req, reply, req.params.prefix.replace(/s$/, ''));
    },
  );
}
