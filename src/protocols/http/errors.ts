/**
 * Turns errors into HTTP responses at the edge: TrellisError as is, decoding errors and Fastify's own
 * errors mapped to Trellis codes. Every body is JSON with `code` and `message`.
 * @module
 */
import type { FastifyError, FastifyReply } from 'fastify';
import { EventValidationError } from '../../cloudevents/event.js';
import { MalformedEventError, UnsupportedMediaTypeError } from '../../cloudevents/http.js';
import { TrellisError } from '../../errors.js';

/** Maps any thrown value to a TrellisError. */
export function toTrellisError(err: unknown): TrellisError {
  if (err instanceof TrellisError) return err;
  if (err instanceof EventValidationError) {
    return new TrellisError('TRELLIS_ERR_INVALID_EVENT', err.message, {
      attribute: err.attribute,
      rule: err.rule,
    });
  }
  if (err instanceof MalformedEventError) return new TrellisError('TRELLIS_ERR_MALFORMED_EVENT', err.message);
  if (err instanceof UnsupportedMediaTypeError)
    return new TrellisError('TRELLIS_ERR_UNSUPPORTED_MEDIA_TYPE', err.message);
  const fe = err as FastifyError;
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new TrellisError(
        'TRELLIS_ERR_PAYLOAD_TOO_LARGE',
        `the request body is over the limit: ${fe.message}`,
      );
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_TYPE':
      return new TrellisError('TRELLIS_ERR_MALFORMED_EVENT', fe.message);
    default:
      if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
        return new TrellisError(
          fe.statusCode === 413 ? 'TRELLIS_ERR_PAYLOAD_TOO_LARGE' : 'TRELLIS_ERR_MALFORMED_EVENT',
          fe.message,
        );
      }
      return new TrellisError(
        'TRELLIS_ERR_INTERNAL',
        `internal error: ${(err as Error)?.message ?? String(err)}`,
        {},
        { cause: err },
      );
  }
}

/** Sends an error as JSON, with Retry-After for 503s. */
export function sendError(reply: FastifyReply, err: unknown): FastifyReply {
  const te = toTrellisError(err);
  if (te.status === 503 || te.status === 429)
    reply.header('retry-after', String(te.details['retryAfter'] ?? 1));
  return reply.code(te.status).type('application/json').send(te.toJSON());
}

/**
 * For routes that take events only by POST: answers OPTIONS (the webhook handshake) and other methods
 * (405, naming what the path is), and returns the reply sent; undefined for a POST, which the route handles.
 */
export function postOnly(method: string, reply: FastifyReply, what: string): FastifyReply | undefined {
  reply.header('allow', 'POST, OPTIONS');
  if (method === 'OPTIONS') return reply.code(200).send();
  if (method !== 'POST')
    return sendError(
      reply,
      new TrellisError(
        'TRELLIS_ERR_METHOD_NOT_ALLOWED',
        `${method} is not allowed on ${what}; send events with POST`,
      ),
    );
  return undefined;
}
