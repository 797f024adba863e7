/**
 * CloudEvents over WebSocket (the CloudEvents WebSocket binding): a connection to an ingress path
 * (`ws://host/ns/broker`, `/channels/ns/name`) with the `cloudevents.json` subprotocol carries one event
 * per text message, in the JSON format, both ways. Every event the client sends is published and answered
 * (`dev.trellis.control.published`, status 202 once stored); with `?subscribe` the connection is also a
 * member of a consumer group, sent the group's events (each with the `trellisdelivery` extension it
 * acknowledges with) up to its window of unacknowledged ones. Acks, nacks, window changes and requests
 * are CloudEvents too, of types `dev.trellis.control.*`, so the connection carries nothing but events.
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { CloudEvent } from '../../cloudevents/event.js';
import { parseJsonBody } from '../../cloudevents/http.js';
import { eventFromJson, eventToJson } from '../../cloudevents/json-format.js';
import { eventFromProtobuf, eventToProtobuf } from '../../cloudevents/protobuf.js';
import type { GroupDelivery, Member } from '../../dataplane/groups.js';
import type { SenderIdentity } from '../../dataplane/ingress.js';
import { TrellisError } from '../../errors.js';
import { toTrellisError } from '../http/errors.js';
import { answerOf, type StreamAddress, type Streaming, streamAddress } from '../streaming.js';
import type { OpenedGroup } from '../subscriptions.js';

export const SUBPROTOCOL = 'cloudevents.json';
/** The Protobuf format: each event a binary message (io.cloudevents.v1.CloudEvent). */
export const PROTO_SUBPROTOCOL = 'cloudevents.proto';
/** Control events' types start with this; an application's own events may not. */
export const CONTROL_PREFIX = 'dev.trellis.control.';
/** The extension a delivered event carries: what the member acknowledges. */
export const DELIVERY_EXTENSION = 'trellisdelivery';

const DEFAULT_WINDOW = 100;
const MAX_WINDOW = 10_000;
/** Publishes in flight per connection; beyond, the connection is not read until some are answered. */
const MAX_INFLIGHT = 256;
const PING_MS = 30_000;

export interface WebSocketOptions {
  /** Host and Origin checks (a page of another site must not use a local server): throws the refusal. */
  guard(headers: IncomingMessage['headers']): void;
  /** Largest message (an event in the JSON format, or a control event), bytes. */
  maxMessageBytes: number;
}

/** Subscription parameters from a query string; throws the 400 naming the parameter. */
export function subscribeParams(q: URLSearchParams): {
  subscribe: boolean;
  group?: string | undefined;
  filter?: string | undefined;
  from?: string | undefined;
  window: number;
  ordered: boolean;
} {
  const one = (name: string) => {
    const all = q.getAll(name);
    if (all.length > 1)
      throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', `${name}: given ${all.length} times; give it once`, {
        field: name,
      });
    return all[0];
  };
  const w = one('window');
  let window = DEFAULT_WINDOW;
  if (w !== undefined) {
    if (!/^\d{1,6}$/.test(w) || Number(w) < 1 || Number(w) > MAX_WINDOW)
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        `window: must be an integer from 1 to ${MAX_WINDOW}, got '${w.slice(0, 20)}'`,
        {
          field: 'window',
        },
      );
    window = Number(w);
  }
  const filter = one('filter');
  if (filter !== undefined && filter.length > 4096)
    throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', 'filter: at most 4096 characters', { field: 'filter' });
  const ordered = one('ordered');
  return {
    subscribe: q.has('subscribe') || q.has('group'),
    group: one('group'),
    filter,
    from: one('from'),
    window,
    ordered: ordered === '' || ordered === 'true',
  };
}

/** The credential a request carries: `Authorization`, or (browsers cannot set headers) `access_token`. */
export function credentialOf(headers: IncomingMessage['headers'], q: URLSearchParams): string | undefined {
  if (typeof headers.authorization === 'string') return headers.authorization;
  const t = q.get('access_token');
  return t === null ? undefined : `Bearer ${t}`;
}

/** A control event from the server. */
function control(type: string, data: Record<string, unknown>): string {
  return JSON.stringify({
    specversion: '1.0',
    id: randomUUID(),
    source: '/trellis',
    type: CONTROL_PREFIX + type,
    datacontenttype: 'application/json',
    data,
  });
}

/** A delivered event: without the Broker's loop counter, with the id the member acknowledges. */
export function deliveredJson(d: GroupDelivery): Record<string, unknown> {
  const { knativebrokerttl: _ttl, ...attrs } = d.event.attrs;
  return eventToJson({ attrs: { ...attrs, [DELIVERY_EXTENSION]: d.id }, data: d.event.data });
}

/** A delivered event in the Protobuf format. */
function deliveredProto(d: GroupDelivery): Buffer {
  const { knativebrokerttl: _ttl, ...attrs } = d.event.attrs;
  return eventToProtobuf({ attrs: { ...attrs, [DELIVERY_EXTENSION]: d.id }, data: d.event.data });
}

/** Serves WebSocket upgrades on the server's port. */
export class WebSocketIngress {
  private readonly wss: WebSocketServer;
  private readonly sockets = new Set<WebSocket>();
  private readonly pinger: NodeJS.Timeout;

  constructor(
    private readonly core: Streaming,
    private readonly opts: WebSocketOptions,
  ) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: opts.maxMessageBytes + 64 * 1024,
      perMessageDeflate: false,
      // The client's first choice among the formats served.
      handleProtocols: (protocols) =>
        [...protocols].find((p) => p === SUBPROTOCOL || p === PROTO_SUBPROTOCOL) ?? false,
    });
    const alive = new WeakSet<WebSocket>();
    this.pinger = setInterval(() => {
      for (const ws of this.sockets) {
        if (!alive.has(ws)) {
          ws.terminate();
          continue;
        }
        alive.delete(ws);
        ws.ping();
      }
    }, PING_MS);
    this.pinger.unref();
    this.wss.on('connection', (ws: WebSocket) => {
      alive.add(ws);
      ws.on('pong', () => alive.add(ws));
    });
  }

  /** Handles an upgrade request; false when the path is not an address (the caller answers). */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const url = new URL(req.url ?? '/', 'http://x');
    const addr = streamAddress(url.pathname);
    if (addr === undefined) return false;
    void this.accept(req, socket, head, url, addr).catch((err: unknown) => refuse(socket, err));
    return true;
  }

  private async accept(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    url: URL,
    addr: StreamAddress,
  ): Promise<void> {
    const offered = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((s) => s.trim());
    if (!offered.includes(SUBPROTOCOL) && !offered.includes(PROTO_SUBPROTOCOL))
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        `offer the WebSocket subprotocol '${SUBPROTOCOL}' or '${PROTO_SUBPROTOCOL}' (Sec-WebSocket-Protocol): the CloudEvents format events travel in`,
      );
    this.opts.guard(req.headers);
    const params = subscribeParams(url.searchParams);
    if (params.subscribe && addr.target === undefined)
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        `/${addr.key} takes events but holds no subscriptions; subscribe to a Broker or a Channel`,
      );
    const sender = await this.core.authenticate(
      addr,
      credentialOf(req.headers, url.searchParams),
      req.socket,
      params.subscribe,
    );
    // The group is opened before the upgrade, so that a refusal is an HTTP answer with its status.
    let opened: OpenedGroup | undefined;
    if (params.subscribe)
      opened = await this.core.subscriptions.open({
        namespace: addr.namespace,
        target: addr.target!,
        group: params.group,
        filter: params.filter,
        from: params.from,
        ordered: params.ordered,
      });
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.sockets.add(ws);
      this.wss.emit('connection', ws, req);
      new Session(
        this.core,
        ws,
        ws.protocol === PROTO_SUBPROTOCOL,
        addr,
        sender,
        req.socket.remoteAddress ?? '',
        opened,
        params.window,
        () => this.sockets.delete(ws),
      );
    });
  }

  /** Closes every connection (shutdown): members leave, their unacknowledged events go again. */
  close(): void {
    clearInterval(this.pinger);
    for (const ws of this.sockets) ws.close(1001, 'server shutting down');
    this.wss.close();
  }
}

/** Answers a refused upgrade with the HTTP status and the error as JSON. */
function refuse(socket: Duplex, err: unknown): void {
  const te = toTrellisError(err);
  const body = JSON.stringify(te.toJSON());
  if (!socket.writable) return;
  socket.end(
    `HTTP/1.1 ${te.status} ${te.status === 401 ? 'Unauthorized' : 'Refused'}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      (te.status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '') +
      'Connection: close\r\n\r\n' +
      body,
  );
}

/** One connection: its publishes, its requests, and its membership. */
class Session {
  private member: Member | undefined;
  private inflight = 0;
  private paused = false;

  constructor(
    private readonly core: Streaming,
    private readonly ws: WebSocket,
    /** The Protobuf format (binary messages) rather than JSON (text messages). */
    private readonly proto: boolean,
    private readonly addr: StreamAddress,
    private readonly sender: SenderIdentity | undefined,
    private readonly peer: string,
    private readonly group: OpenedGroup | undefined,
    window: number,
    onClose: () => void,
  ) {
    ws.on('message', (data, isBinary) => this.message(data as Buffer, isBinary));
    ws.on('error', () => undefined);
    ws.on('close', () => {
      onClose();
      if (this.member !== undefined && this.group !== undefined)
        void this.core.subscriptions.left(this.group, this.member).catch(() => undefined);
    });
    if (group !== undefined) {
      this.send(
        this.ctl('subscribed', {
          namespace: group.group.metadata.namespace,
          group: group.group.metadata.name,
          ephemeral: group.ephemeral,
          window,
        }),
      );
      this.member = this.core.subscriptions.join(
        group,
        window,
        (d) => ws.send(proto ? deliveredProto(d) : JSON.stringify(deliveredJson(d))),
        `websocket ${peer}`,
      );
    }
  }

  /** A control event in this connection's format. */
  private ctl(type: string, data: Record<string, unknown>): string | Buffer {
    if (!this.proto) return control(type, data);
    return eventToProtobuf({
      attrs: {
        specversion: '1.0',
        id: randomUUID(),
        source: '/trellis',
        type: CONTROL_PREFIX + type,
        datacontenttype: 'application/json',
      },
      data: Buffer.from(JSON.stringify(data)),
    });
  }

  private message(data: Buffer, isBinary: boolean): void {
    if (this.proto) {
      this.protoMessage(data, isBinary);
      return;
    }
    let obj: Record<string, unknown>;
    try {
      if (isBinary)
        throw new TrellisError(
          'TRELLIS_ERR_UNSUPPORTED_MEDIA_TYPE',
          `binary messages are not events here: the ${SUBPROTOCOL} subprotocol sends each event as a text message`,
        );
      const parsed = parseJsonBody(data, undefined);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
        throw new TrellisError(
          'TRELLIS_ERR_MALFORMED_EVENT',
          'a message must be one event, a JSON object (batches are not part of the WebSocket binding)',
        );
      obj = parsed as Record<string, unknown>;
    } catch (err) {
      this.error(err);
      return;
    }
    const type = obj['type'];
    if (typeof type === 'string' && type.startsWith(CONTROL_PREFIX)) {
      try {
        this.control(type.slice(CONTROL_PREFIX.length), obj);
      } catch (err) {
        this.error(err, obj['id']);
      }
      return;
    }
    let event: CloudEvent;
    try {
      event = eventFromJson(obj);
    } catch (err) {
      this.send(
        this.ctl('published', {
          id: typeof obj['id'] === 'string' ? obj['id'] : undefined,
          source: typeof obj['source'] === 'string' ? obj['source'] : undefined,
          ...answerOf(err),
        }),
      );
      return;
    }
    this.publish(event);
  }

  private publish(event: CloudEvent): void {
    this.track(this.core.publish(this.addr, event, this.sender, this.peer), (a) =>
      this.ctl('published', { id: event.attrs['id'], source: event.attrs['source'], ...a }),
    );
  }

  /** A message of the Protobuf format: an event to publish, or a control event (its data JSON). */
  private protoMessage(data: Buffer, isBinary: boolean): void {
    let event: CloudEvent;
    try {
      if (!isBinary)
        throw new TrellisError(
          'TRELLIS_ERR_UNSUPPORTED_MEDIA_TYPE',
          `text messages are not events here: the ${PROTO_SUBPROTOCOL} subprotocol sends each event as a binary message`,
        );
      event = eventFromProtobuf(data);
    } catch (err) {
      this.error(err);
      return;
    }
    const type = String(event.attrs['type']);
    if (!type.startsWith(CONTROL_PREFIX)) {
      this.publish(event);
      return;
    }
    try {
      let body: unknown;
      try {
        body = JSON.parse((event.data ?? Buffer.alloc(0)).toString('utf8'));
      } catch {
        body = undefined;
      }
      this.control(type.slice(CONTROL_PREFIX.length), { id: event.attrs['id'], data: body });
    } catch (err) {
      this.error(err, event.attrs['id']);
    }
  }

  /** Counts a publish or request in flight (pausing the connection beyond the limit) and sends its answer. */
  private track<T>(p: Promise<T>, answer: (v: T) => string | Buffer): void {
    this.inflight++;
    if (this.inflight >= MAX_INFLIGHT && !this.paused) {
      this.paused = true;
      this.ws.pause();
    }
    void p.then(
      (v) => this.done(answer(v)),
      (err: unknown) => this.done(this.ctl('error', answerOf(err) as unknown as Record<string, unknown>)),
    );
  }

  private done(message: string | Buffer): void {
    this.inflight--;
    if (this.paused && this.inflight < MAX_INFLIGHT / 2) {
      this.paused = false;
      this.ws.resume();
    }
    this.send(message);
  }

  private send(message: string | Buffer): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(message);
  }

  private error(err: unknown, about?: unknown): void {
    const a = answerOf(err);
    this.send(this.ctl('error', { ...a, ...(typeof about === 'string' ? { about } : {}) }));
  }

  private control(kind: string, obj: Record<string, unknown>): void {
    const data = obj['data'];
    if (data === null || typeof data !== 'object' || Array.isArray(data))
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        `${CONTROL_PREFIX}${kind}: data must be a JSON object`,
        {
          field: 'data',
        },
      );
    const d = data as Record<string, unknown>;
    switch (kind) {
      case 'ack':
        this.ack(d);
        return;
      case 'nack':
        this.nack(d);
        return;
      case 'window': {
        const size = d['size'];
        if (typeof size !== 'number' || !Number.isInteger(size) || size < 1 || size > MAX_WINDOW)
          throw new TrellisError(
            'TRELLIS_ERR_BAD_REQUEST',
            `window: data.size must be an integer from 1 to ${MAX_WINDOW}`,
            {
              field: 'data.size',
            },
          );
        this.needMember('window').setWindow(size);
        return;
      }
      case 'request':
        this.request(obj['id'], d);
        return;
      default:
        throw new TrellisError(
          'TRELLIS_ERR_BAD_REQUEST',
          `'${CONTROL_PREFIX}${kind.slice(0, 40)}' is not a control event; these are ack, nack, window and request, and an application's own event types may not start with ${CONTROL_PREFIX}`,
          { field: 'type' },
        );
    }
  }

  private needMember(what: string): Member {
    if (this.member === undefined)
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        `${what}: this connection did not subscribe (add ?subscribe)`,
      );
    return this.member;
  }

  private ack(d: Record<string, unknown>): void {
    const m = this.needMember('ack');
    const ids = d['ids'] ?? (d['id'] !== undefined ? [d['id']] : undefined);
    if (
      !Array.isArray(ids) ||
      ids.length === 0 ||
      ids.length > MAX_WINDOW ||
      !ids.every((x) => typeof x === 'string')
    )
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        'ack: data.ids must be a list of delivery ids (strings), or data.id one',
        {
          field: 'data.ids',
        },
      );
    let reply: CloudEvent | undefined;
    if (d['reply'] !== undefined) {
      if (ids.length !== 1)
        throw new TrellisError(
          'TRELLIS_ERR_BAD_REQUEST',
          'ack: a reply answers one delivery: give data.id with it',
          {
            field: 'data.reply',
          },
        );
      reply = eventFromJson(d['reply']);
    }
    for (const id of ids as string[]) m.settle(id, { kind: 'ack', reply });
  }

  private nack(d: Record<string, unknown>): void {
    const m = this.needMember('nack');
    const id = d['id'];
    if (typeof id !== 'string')
      throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', 'nack: data.id must be the delivery id (a string)', {
        field: 'data.id',
      });
    const delay = d['delay'];
    if (
      delay !== undefined &&
      (typeof delay !== 'number' || !Number.isFinite(delay) || delay < 0 || delay > 86_400_000)
    )
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        'nack: data.delay must be milliseconds from 0 to 86400000',
        {
          field: 'data.delay',
        },
      );
    const requeue = d['requeue'];
    if (requeue !== undefined && typeof requeue !== 'boolean')
      throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', 'nack: data.requeue must be true or false', {
        field: 'data.requeue',
      });
    const reason = typeof d['reason'] === 'string' ? d['reason'].slice(0, 256) : undefined;
    m.settle(id, {
      kind: 'nack',
      delayMs: delay as number | undefined,
      requeue: requeue as boolean | undefined,
      reason,
    });
  }

  private request(requestId: unknown, d: Record<string, unknown>): void {
    const event = eventFromJson(d['event']);
    const timeout = d['timeout'] ?? 30_000;
    if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout < 1)
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        'request: data.timeout must be milliseconds, at least 1',
        {
          field: 'data.timeout',
        },
      );
    const about = { request: typeof requestId === 'string' ? requestId : undefined, id: event.attrs['id'] };
    this.track(
      this.core.request(this.addr, event, this.sender, this.peer, timeout).then(
        (reply) => ({ status: 200, ...about, event: eventToJson(reply) }),
        (err: unknown) => ({ ...about, ...answerOf(err) }),
      ),
      (v) => this.ctl('reply', v),
    );
  }
}
