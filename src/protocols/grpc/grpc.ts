/**
 * The gRPC API (`proto/trellis/v1/trellis.proto`, service `trellis.v1.EventMesh`), on its own port
 * (`--grpc-port`): Publish, PublishBatch, a bidirectional Subscribe with acks, nacks and a window, and
 * Request, with events in the CloudEvents Protobuf format. The same authentication (metadata
 * `authorization`), EventPolicy, rate limits and consumer groups as HTTP and WebSocket. Messages are
 * read by Trellis's own protobuf codec; errors are gRPC statuses with the Trellis code in the
 * `trellis-error-code` trailer.
 * @module
 */
import type { PeerCertificate } from 'node:tls';
import {
  type Metadata,
  Server,
  type ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceDefinition,
  type sendUnaryData,
  status,
  Metadata as TrailerMetadata,
} from '@grpc/grpc-js';
import type { CloudEvent } from '../../cloudevents/event.js';
import {
  CLOUDEVENT_SCHEMA,
  decodeMessage,
  encodeMessage,
  eventFromProtoObject,
  eventToProtoObject,
  type ProtoObject,
  type Schema,
} from '../../cloudevents/protobuf.js';
import type { Member } from '../../dataplane/groups.js';
import type { SenderIdentity } from '../../dataplane/ingress.js';
import { TrellisError } from '../../errors.js';
import { toTrellisError } from '../http/errors.js';
import { type StreamAddress, type Streaming, streamAddress } from '../streaming.js';
import type { OpenedGroup } from '../subscriptions.js';

const EVENT = { type: 'message', schema: CLOUDEVENT_SCHEMA } as const;
export const PUBLISH: Schema = [
  { no: 1, name: 'target', type: 'string' },
  { no: 2, name: 'event', ...EVENT },
];
const PUBLISH_BATCH: Schema = [
  { no: 1, name: 'target', type: 'string' },
  { no: 2, name: 'events', ...EVENT, repeated: true },
];
const PUBLISH_RESPONSE: Schema = [{ no: 1, name: 'accepted', type: 'uint32' }];
const SUBSCRIPTION: Schema = [
  { no: 1, name: 'target', type: 'string' },
  { no: 2, name: 'group', type: 'string' },
  { no: 3, name: 'filter', type: 'string' },
  { no: 4, name: 'from', type: 'string' },
  { no: 5, name: 'window', type: 'uint32' },
  { no: 6, name: 'ordered', type: 'bool' },
];
const ACK: Schema = [
  { no: 1, name: 'ids', type: 'string', repeated: true },
  { no: 2, name: 'reply', ...EVENT },
];
const NACK: Schema = [
  { no: 1, name: 'id', type: 'string' },
  { no: 2, name: 'delayMs', type: 'uint32' },
  { no: 3, name: 'drop', type: 'bool' },
  { no: 4, name: 'reason', type: 'string' },
];
const WINDOW: Schema = [{ no: 1, name: 'size', type: 'uint32' }];
/** `SubscribeRequest`: one of these set. */
export const SUBSCRIBE_REQUEST: Schema = [
  { no: 1, name: 'subscription', type: 'message', schema: SUBSCRIPTION, oneof: true },
  { no: 2, name: 'ack', type: 'message', schema: ACK, oneof: true },
  { no: 3, name: 'nack', type: 'message', schema: NACK, oneof: true },
  { no: 4, name: 'window', type: 'message', schema: WINDOW, oneof: true },
];
const SUBSCRIBED: Schema = [
  { no: 1, name: 'namespace', type: 'string' },
  { no: 2, name: 'group', type: 'string' },
  { no: 3, name: 'ephemeral', type: 'bool' },
  { no: 4, name: 'window', type: 'uint32' },
];
const DELIVERY: Schema = [
  { no: 1, name: 'id', type: 'string' },
  { no: 2, name: 'event', ...EVENT },
  { no: 3, name: 'attempt', type: 'uint32' },
  { no: 4, name: 'sequence', type: 'uint64' },
];
/** `SubscribeResponse`. */
export const SUBSCRIBE_RESPONSE: Schema = [
  { no: 1, name: 'subscribed', type: 'message', schema: SUBSCRIBED, oneof: true },
  { no: 2, name: 'delivery', type: 'message', schema: DELIVERY, oneof: true },
];
const REQUEST: Schema = [
  { no: 1, name: 'target', type: 'string' },
  { no: 2, name: 'event', ...EVENT },
  { no: 3, name: 'timeoutMs', type: 'uint32' },
];

const raw = (b: Buffer) => b;
const asIs = (b: Buffer) => b;

function method(name: string, requestStream: boolean, responseStream: boolean) {
  return {
    path: `/trellis.v1.EventMesh/${name}`,
    requestStream,
    responseStream,
    // Messages are decoded in the handlers, so a bad one is answered with INVALID_ARGUMENT and why.
    requestSerialize: asIs,
    requestDeserialize: raw,
    responseSerialize: asIs,
    responseDeserialize: raw,
  };
}

const SERVICE: ServiceDefinition = {
  Publish: method('Publish', false, false),
  PublishBatch: method('PublishBatch', false, false),
  Subscribe: method('Subscribe', true, true),
  Request: method('Request', false, false),
};

/** The gRPC status for an HTTP status. */
function grpcCode(httpStatus: number): status {
  switch (httpStatus) {
    case 400:
    case 413:
    case 415:
      return status.INVALID_ARGUMENT;
    case 401:
      return status.UNAUTHENTICATED;
    case 403:
      return status.PERMISSION_DENIED;
    case 404:
      return status.NOT_FOUND;
    case 409:
      return status.FAILED_PRECONDITION;
    case 429:
      return status.RESOURCE_EXHAUSTED;
    case 503:
      return status.UNAVAILABLE;
    case 504:
      return status.DEADLINE_EXCEEDED;
    default:
      return status.INTERNAL;
  }
}

/** An error as a gRPC status, with the Trellis code (and Retry-After seconds) in the trailers. */
export function grpcError(err: unknown): { code: status; details: string; metadata: Metadata } {
  const te = toTrellisError(err);
  const metadata = new TrailerMetadata();
  metadata.set('trellis-error-code', te.code);
  if (te.status === 429 || te.status === 503)
    metadata.set('retry-after', String(te.details['retryAfter'] ?? 1));
  return { code: grpcCode(te.status), details: te.message, metadata };
}

function bad(message: string, field: string): TrellisError {
  return new TrellisError('TRELLIS_ERR_BAD_REQUEST', message, { field });
}

function decode(schema: Schema, b: Buffer): ProtoObject {
  try {
    return decodeMessage(schema, b);
  } catch (err) {
    throw new TrellisError(
      'TRELLIS_ERR_MALFORMED_EVENT',
      `the message is not valid protobuf: ${(err as Error).message}`,
    );
  }
}

function eventOf(o: unknown, field: string): CloudEvent {
  if (o === undefined) throw bad(`${field}: the event is missing`, field);
  return eventFromProtoObject(o as ProtoObject);
}

function addressOf(target: unknown): StreamAddress {
  const addr = typeof target === 'string' ? streamAddress(`/${target.replace(/^\//, '')}`) : undefined;
  if (addr === undefined)
    throw bad(
      `target: '${String(target ?? '').slice(0, 100)}' is not an address ("namespace/broker", "channels/namespace/name")`,
      'target',
    );
  return addr;
}

function authorization(md: Metadata): string | undefined {
  const v = md.get('authorization')[0];
  return typeof v === 'string' ? v : undefined;
}

/**
 * The connection as the sender check reads a TLS socket: the client certificate when the handshake
 * verified it (against --tls-client-ca), read only if the check asks (a request with a token does not).
 */
function tlsPeer(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null }): unknown {
  const cert = () => call.getAuthContext()?.sslPeerCertificate;
  return {
    get authorized() {
      return cert() !== undefined;
    },
    getPeerCertificate: cert,
  };
}

export interface GrpcOptions {
  host: string;
  port: number;
  credentials: ServerCredentials;
  /** Largest message, bytes (an event with its envelope). */
  maxMessageBytes: number;
}

/** Serves the gRPC API; `start` resolves with the port it listens on. */
export class GrpcIngress {
  private readonly server: Server;
  private readonly calls = new Set<ServerDuplexStream<Buffer, Buffer>>();

  constructor(
    private readonly core: Streaming,
    private readonly opts: GrpcOptions,
  ) {
    this.server = new Server({
      'grpc.max_receive_message_length': opts.maxMessageBytes + 64 * 1024,
      'grpc.max_send_message_length': opts.maxMessageBytes + 64 * 1024,
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
    });
    this.server.addService(SERVICE, {
      Publish: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) =>
        void this.unary(
          call,
          cb,
          async (sender, addr, req, peer) => {
            await this.core.publishBatch(addr, [eventOf(req['event'], 'event')], sender, peer);
            return encodeMessage(PUBLISH_RESPONSE, { accepted: 1 });
          },
          PUBLISH,
        ),
      PublishBatch: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) =>
        void this.unary(
          call,
          cb,
          async (sender, addr, req, peer) => {
            const list = (req['events'] ?? []) as ProtoObject[];
            if (list.length === 0) throw bad('events: the batch is empty', 'events');
            const events = list.map((o, i) => {
              try {
                return eventFromProtoObject(o);
              } catch (err) {
                const te = toTrellisError(err);
                throw new TrellisError(te.code, `events[${i}]: ${te.message}`, te.details);
              }
            });
            await this.core.publishBatch(addr, events, sender, peer);
            return encodeMessage(PUBLISH_RESPONSE, { accepted: events.length });
          },
          PUBLISH_BATCH,
        ),
      Request: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) =>
        void this.unary(
          call,
          cb,
          async (sender, addr, req, peer) => {
            const timeout = Number(req['timeoutMs'] ?? 0) || 30_000;
            const reply = await this.core.request(
              addr,
              eventOf(req['event'], 'event'),
              sender,
              peer,
              timeout,
            );
            return encodeMessage(CLOUDEVENT_SCHEMA, eventToProtoObject(reply));
          },
          REQUEST,
        ),
      Subscribe: (call: ServerDuplexStream<Buffer, Buffer>) => this.subscribe(call),
    });
  }

  async start(): Promise<number> {
    return new Promise((resolve, reject) =>
      this.server.bindAsync(`${this.opts.host}:${this.opts.port}`, this.opts.credentials, (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
  }

  /** Ends every subscription (members leave) and stops the server, waiting up to `graceMs` for calls. */
  async close(graceMs = 2000): Promise<void> {
    for (const c of this.calls) c.end();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  private async unary(
    call: ServerUnaryCall<Buffer, Buffer>,
    cb: sendUnaryData<Buffer>,
    fn: (
      sender: SenderIdentity | undefined,
      addr: StreamAddress,
      req: ProtoObject,
      peer: string,
    ) => Promise<Buffer>,
    schema: Schema,
  ): Promise<void> {
    try {
      const req = decode(schema, call.request);
      const addr = addressOf(req['target']);
      const sender = await this.core.authenticate(addr, authorization(call.metadata), tlsPeer(call), false);
      cb(null, await fn(sender, addr, req, call.getPeer()));
    } catch (err) {
      cb(grpcError(err));
    }
  }

  private subscribe(call: ServerDuplexStream<Buffer, Buffer>): void {
    this.calls.add(call);
    let opened: OpenedGroup | undefined;
    let member: Member | undefined;
    let starting = false;
    let ended = false;
    const fail = (err: unknown) => {
      if (ended) return;
      ended = true;
      call.emit('error', grpcError(err));
    };
    const end = () => {
      this.calls.delete(call);
      if (member !== undefined && opened !== undefined)
        void this.core.subscriptions.left(opened, member).catch(() => undefined);
      member = undefined;
    };
    call.on('cancelled', end);
    call.on('close', end);
    call.on('end', () => {
      end();
      if (!ended) {
        ended = true;
        call.end();
      }
    });
    call.on('error', () => end());
    call.on('data', (b: Buffer) => {
      let m: ProtoObject;
      try {
        m = decode(SUBSCRIBE_REQUEST, b);
      } catch (err) {
        fail(err);
        return;
      }
      if (m['subscription'] !== undefined) {
        if (starting) {
          fail(bad('subscription: sent once, first', 'subscription'));
          return;
        }
        starting = true;
        void this.open(call, m['subscription'] as ProtoObject).then((r) => {
          if (ended || call.cancelled) {
            void this.core.subscriptions.left(r.opened, r.member).catch(() => undefined);
            return;
          }
          opened = r.opened;
          member = r.member;
        }, fail);
        return;
      }
      if (member === undefined) {
        fail(
          bad(
            'the first message must be a Subscription (and acknowledgements wait for Subscribed)',
            'subscription',
          ),
        );
        return;
      }
      try {
        if (m['ack'] !== undefined) {
          const a = m['ack'] as ProtoObject;
          const ids = (a['ids'] ?? []) as string[];
          const reply =
            a['reply'] === undefined ? undefined : eventFromProtoObject(a['reply'] as ProtoObject);
          if (reply !== undefined && ids.length !== 1)
            throw bad('ack: a reply answers one delivery', 'ack.reply');
          for (const id of ids) member.settle(id, { kind: 'ack', reply });
        } else if (m['nack'] !== undefined) {
          const n = m['nack'] as ProtoObject;
          member.settle(String(n['id'] ?? ''), {
            kind: 'nack',
            delayMs: Math.min(Number(n['delayMs'] ?? 0), 86_400_000),
            requeue: n['drop'] !== true,
            reason: typeof n['reason'] === 'string' ? n['reason'].slice(0, 256) : undefined,
          });
        } else if (m['window'] !== undefined) {
          const size = Number((m['window'] as ProtoObject)['size'] ?? 0);
          if (!(size >= 1 && size <= 10_000)) throw bad('window.size: from 1 to 10000', 'window.size');
          member.setWindow(size);
        }
      } catch (err) {
        fail(err);
      }
    });
  }

  private async open(
    call: ServerDuplexStream<Buffer, Buffer>,
    s: ProtoObject,
  ): Promise<{ opened: OpenedGroup; member: Member }> {
    const addr = addressOf(s['target']);
    if (addr.target === undefined) throw bad('target: subscribe to a Broker or a Channel', 'target');
    const window = Number(s['window'] ?? 0) || 100;
    if (window > 10_000) throw bad('window: from 1 to 10000', 'window');
    await this.core.authenticate(addr, authorization(call.metadata), tlsPeer(call), true);
    const str = (k: string) => (typeof s[k] === 'string' && s[k] !== '' ? (s[k] as string) : undefined);
    const opened = await this.core.subscriptions.open({
      namespace: addr.namespace,
      target: addr.target,
      group: str('group'),
      filter: str('filter'),
      from: str('from'),
      ordered: s['ordered'] === true,
    });
    call.write(
      encodeMessage(SUBSCRIBE_RESPONSE, {
        subscribed: {
          namespace: opened.group.metadata.namespace,
          group: opened.group.metadata.name,
          ephemeral: opened.ephemeral,
          window,
        },
      }),
    );
    const member = this.core.subscriptions.join(
      opened,
      window,
      (d) => {
        const { knativebrokerttl: _ttl, ...attrs } = d.event.attrs;
        call.write(
          encodeMessage(SUBSCRIBE_RESPONSE, {
            delivery: {
              id: d.id,
              event: eventToProtoObject({ ...d.event, attrs }),
              attempt: d.attempt,
              sequence: d.seq,
            },
          }),
        );
      },
      `grpc ${call.getPeer()}`,
    );
    return { opened, member };
  }
}
