/**
 * The one registry of Trellis errors: each has a stable code, an HTTP status and a message. Every code is
 * documented in docs/errors.md (a test checks it).
 * @module
 */

/** What each code means, with its HTTP status. */
export const ERRORS = {
  TRELLIS_ERR_INVALID_EVENT: { status: 400, title: 'The event breaks a CloudEvents rule' },
  TRELLIS_ERR_MALFORMED_EVENT: {
    status: 400,
    title: 'The request body or headers are not a readable CloudEvent',
  },
  TRELLIS_ERR_EVENT_TYPE_INVALID: {
    status: 400,
    title: 'The event does not match the EventType declared for its type',
  },
  TRELLIS_ERR_EVENT_TYPE_UNKNOWN: { status: 400, title: 'No EventType is declared for the event type' },
  TRELLIS_ERR_TTL_EXHAUSTED: { status: 400, title: 'The event has looped through brokers too often' },
  TRELLIS_ERR_BROKER_NOT_FOUND: { status: 404, title: 'No such Broker' },
  TRELLIS_ERR_BROKER_NOT_READY: { status: 404, title: 'The Broker exists but is not Ready' },
  TRELLIS_ERR_DESTINATION_NOT_FOUND: { status: 404, title: 'Nothing takes events at that path' },
  TRELLIS_ERR_DESTINATION_NOT_READY: {
    status: 404,
    title: 'The Channel, Sequence or Parallel exists but is not Ready',
  },
  TRELLIS_ERR_TRANSFORM_FAILED: { status: 400, title: 'The EventTransform could not transform the event' },
  TRELLIS_ERR_SINK_FAILED: { status: 502, title: "The EventTransform's sink did not take the event" },
  TRELLIS_ERR_CONNECTOR_FAILED: { status: 502, title: 'The external system did not take the event' },
  TRELLIS_ERR_ROUTE_NOT_FOUND: { status: 404, title: 'No such path' },
  TRELLIS_ERR_BAD_REQUEST: { status: 400, title: 'The request is not valid HTTP' },
  TRELLIS_ERR_HEADERS_TOO_LARGE: { status: 431, title: 'The request headers are too large' },
  TRELLIS_ERR_REQUEST_TIMEOUT: { status: 408, title: 'The request did not arrive in time' },
  TRELLIS_ERR_METHOD_NOT_ALLOWED: { status: 405, title: 'The method is not allowed on this path' },
  TRELLIS_ERR_PAYLOAD_TOO_LARGE: { status: 413, title: 'The request body is over the size limit' },
  TRELLIS_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'The content type or charset is not supported' },
  TRELLIS_ERR_BROKER_LAGGING: { status: 429, title: "The Broker's subscribers are too far behind" },
  TRELLIS_ERR_OVERLOADED: { status: 503, title: 'The store is too far behind' },
  TRELLIS_ERR_TOO_MANY_TAILS: { status: 429, title: 'Too many live tails are open' },
  TRELLIS_ERR_RATE_LIMITED: { status: 429, title: 'More events than the rate limit allows' },
  TRELLIS_ERR_STORE_UNAVAILABLE: { status: 503, title: 'The store could not make the events durable' },
  TRELLIS_ERR_SHUTTING_DOWN: { status: 503, title: 'The server is shutting down' },
  TRELLIS_ERR_RESOURCE_INVALID: { status: 400, title: 'A resource field breaks a rule' },
  TRELLIS_ERR_RESOURCE_PARSE: { status: 400, title: 'The resource document is not valid YAML or JSON' },
  TRELLIS_ERR_KIND_UNKNOWN: { status: 404, title: 'Unknown resource kind or API group' },
  TRELLIS_ERR_RESOURCE_NOT_FOUND: { status: 404, title: 'No such resource' },
  TRELLIS_ERR_EVENT_NOT_FOUND: { status: 404, title: 'The Broker holds no such event' },
  TRELLIS_ERR_CONFLICT: { status: 409, title: 'The resource changed since it was read' },
  TRELLIS_ERR_UNAUTHORIZED: { status: 401, title: 'The admin API needs the admin token' },
  TRELLIS_ERR_TOKEN_MISSING: { status: 401, title: 'Sending needs a bearer token' },
  TRELLIS_ERR_TOKEN_INVALID: { status: 401, title: 'The bearer token is not a valid JWT' },
  TRELLIS_ERR_TOKEN_EXPIRED: { status: 401, title: 'The bearer token has expired' },
  TRELLIS_ERR_TOKEN_AUDIENCE: { status: 401, title: 'The bearer token is for another audience' },
  TRELLIS_ERR_TOKEN_ISSUER: { status: 401, title: "The bearer token's issuer is not trusted" },
  TRELLIS_ERR_TOKEN_SIGNATURE: { status: 401, title: "The bearer token's signature does not verify" },
  TRELLIS_ERR_FORBIDDEN: { status: 403, title: 'The sender may not send these events here' },
  TRELLIS_ERR_ORIGIN_FORBIDDEN: {
    status: 403,
    title: 'A web page of another origin tried to use the admin API',
  },
  TRELLIS_ERR_HOST_FORBIDDEN: { status: 403, title: "The Host header is not one of the server's names" },
  TRELLIS_ERR_GROUP_NOT_READY: { status: 409, title: 'The consumer group is not Ready' },
  TRELLIS_ERR_TOO_MANY_MEMBERS: { status: 429, title: 'Too many subscribers are connected to this server' },
  TRELLIS_ERR_GROUP_MISMATCH: {
    status: 409,
    title: 'The consumer group reads another stream or has another filter',
  },
  TRELLIS_ERR_NO_RESPONDER: { status: 404, title: 'No subscription takes the request' },
  TRELLIS_ERR_TOO_MANY_REQUESTS: { status: 429, title: 'Too many requests wait for replies on this server' },
  TRELLIS_ERR_REPLY_TIMEOUT: { status: 504, title: 'No reply came within the timeout' },
  TRELLIS_ERR_INTERNAL: { status: 500, title: 'An unexpected error inside Trellis' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

/** An error that knows how to become an HTTP response. */
export class TrellisError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'TrellisError';
    this.status = ERRORS[code].status;
  }

  /** The JSON body sent to clients: `{ code, message, ...details }`. */
  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, ...this.details };
  }
}
