/**
 * What the streaming protocols (WebSocket, gRPC, Server-Sent Events) share beside subscriptions: the
 * address a connection names, who the peer is (the same authentication and EventPolicy as HTTP ingress),
 * publishing one event with its answer, and request-reply over the mesh.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import type { Ingress, SenderIdentity } from '../dataplane/ingress.js';
import { IN_REPLY_TO, REPLY_TO, type ReplyWaiters } from '../dataplane/replies.js';
import { TrellisError } from '../errors.js';
import { ADDRESS_PREFIXES, pathAudience } from '../resources/addressing.js';
import { toTrellisError } from './http/errors.js';
import type { RateLimiter } from './http/ingress-routes.js';
import type { SubscribeRequest, Subscriptions } from './subscriptions.js';

/** A stream a connection names by its path: its key, and what a subscription to it reads. */
export interface StreamAddress {
  /** `ns/broker`, `channels/ns/name`, ... (the ingress path without its slash). */
  key: string;
  namespace: string;
  /** Set for a Broker or Channel: what a subscription reads. Other addressables take publishes only. */
  target?: SubscribeRequest['target'] | undefined;
}

/** Reads a path as an ingress address (`/ns/broker`, `/channels/ns/name`); undefined when it is none. */
export function streamAddress(path: string): StreamAddress | undefined {
  const parts = path.replace(/\/+$/, '').split('/').slice(1);
  const ok = (s: string | undefined) => s !== undefined && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(s);
  if (parts.length === 2 && parts[0] !== 'apis' && ok(parts[0]) && ok(parts[1]))
    return {
      key: `${parts[0]}/${parts[1]}`,
      namespace: parts[0]!,
      target: { kind: 'Broker', name: parts[1]! },
    };
  if (parts.length === 3 && ADDRESS_PREFIXES.has(parts[0]!) && ok(parts[1]) && ok(parts[2])) {
    const channel = parts[0] === 'channels' || parts[0] === 'inmemorychannels';
    return {
      key: parts.join('/'),
      namespace: parts[1]!,
      target: channel ? { kind: 'Channel', name: parts[2]! } : undefined,
    };
  }
  return undefined;
}

/** The answer to one published event: 202 once stored, else the error's status, code and message. */
export interface PublishAnswer {
  status: number;
  code?: string | undefined;
  message?: string | undefined;
  retryAfter?: number | undefined;
}

export interface StreamingOptions {
  ingress: Ingress;
  subscriptions: Subscriptions;
  replies: ReplyWaiters;
  rateLimited: RateLimiter;
  /**
   * When set (no OIDC, an admin token configured), subscribing needs it: a subscription reads every event
   * of a stream, as `trellis tail` does. Throws the 401.
   */
  adminToken?: ((authorization: string | undefined) => void) | undefined;
  /** Longest request-reply wait a requester may ask for. */
  maxRequestTimeoutMs: number;
}

export class Streaming {
  constructor(readonly o: StreamingOptions) {}

  get subscriptions(): Subscriptions {
    return this.o.subscriptions;
  }

  /**
   * Who the peer is, for an address and a purpose: with OIDC on, the identity its token (or client
   * certificate) proves for the address's audience, and — to subscribe — an EventPolicy must allow it as
   * a sender there; otherwise subscribing needs the admin token when one is set. Throws the 401 or 403.
   */
  async authenticate(
    addr: StreamAddress,
    authorization: string | undefined,
    socket: unknown,
    subscribing: boolean,
  ): Promise<SenderIdentity | undefined> {
    const senders = this.o.ingress.senders;
    if (senders === undefined) {
      if (subscribing) this.o.adminToken?.(authorization);
      return undefined;
    }
    const who = await senders.check(authorization, pathAudience(`/${addr.key}`) ?? addr.key, socket);
    if (subscribing) senders.authorize(addr.key, who, []);
    return who;
  }

  /** Stores one event (policy, rate limit, ingress checks); the answer says how it went. */
  async publish(
    addr: StreamAddress,
    event: CloudEvent,
    sender: SenderIdentity | undefined,
    peer: string,
  ): Promise<PublishAnswer> {
    try {
      this.admit(addr, event, sender, peer);
      await this.o.ingress.accept(addr.key, [event]);
      return { status: 202 };
    } catch (err) {
      return answerOf(err);
    }
  }

  /** Stores a batch: every event admitted (policy, rate limit), then all stored, or none; throws the refusal. */
  async publishBatch(
    addr: StreamAddress,
    events: CloudEvent[],
    sender: SenderIdentity | undefined,
    peer: string,
  ): Promise<void> {
    if (sender !== undefined) this.o.ingress.senders!.authorize(addr.key, sender, events);
    const limited = this.o.rateLimited(
      addr.key,
      sender !== undefined ? `sub:${sender.iss}:${sender.sub}` : `ip:${peer}`,
      events.length,
    );
    if (limited !== undefined) throw limited;
    await this.o.ingress.accept(addr.key, events);
  }

  /**
   * Publishes a request and waits for its reply (`timeoutMs`, at most the server's limit): throws
   * TRELLIS_ERR_NO_RESPONDER when no subscription took it, TRELLIS_ERR_REPLY_TIMEOUT when no reply came.
   */
  async request(
    addr: StreamAddress,
    event: CloudEvent,
    sender: SenderIdentity | undefined,
    peer: string,
    timeoutMs: number,
  ): Promise<CloudEvent> {
    this.admit(addr, event, sender, peer);
    // Refused before it is stored: a request nobody here could wait for would get no answer.
    if (this.o.replies.size >= this.o.replies.max)
      throw new TrellisError(
        'TRELLIS_ERR_TOO_MANY_REQUESTS',
        `${this.o.replies.max} requests wait for their replies on this server; nothing was stored, retry later`,
        { retryAfter: 1 },
      );
    const wait = Math.max(1, Math.min(timeoutMs, this.o.maxRequestTimeoutMs));
    const token = this.o.replies.token();
    event.attrs[REPLY_TO] = token;
    delete event.attrs[IN_REPLY_TO];
    const pending = this.o.replies.expect(token, wait);
    let matched: number;
    try {
      matched = await this.o.ingress.accept(addr.key, [event]);
    } catch (err) {
      pending.cancel();
      throw toTrellisError(err);
    }
    if (matched === 0) {
      pending.cancel();
      throw new TrellisError(
        'TRELLIS_ERR_NO_RESPONDER',
        `no Trigger, Subscription or consumer group at /${addr.key} takes this request (type '${String(event.attrs['type'])}'); it was stored, and nobody will answer it`,
      );
    }
    const reply = await pending.reply;
    if (reply === undefined)
      throw new TrellisError(
        'TRELLIS_ERR_REPLY_TIMEOUT',
        `no reply to request '${String(event.attrs['id'])}' came within ${wait} ms`,
        { timeoutMs: wait },
      );
    // The Broker's loop counter is not the requester's business (as on any delivery out of the Broker).
    const { knativebrokerttl: _ttl, ...attrs } = reply.attrs;
    return { ...reply, attrs };
  }

  /** The sender may send this event here (its EventPolicies), within the rate limits; throws the refusal. */
  private admit(
    addr: StreamAddress,
    event: CloudEvent,
    sender: SenderIdentity | undefined,
    peer: string,
  ): void {
    if (sender !== undefined) this.o.ingress.senders!.authorize(addr.key, sender, [event]);
    const limited = this.o.rateLimited(
      addr.key,
      sender !== undefined ? `sub:${sender.iss}:${sender.sub}` : `ip:${peer}`,
      1,
    );
    if (limited !== undefined) throw limited;
  }
}

/** An error as the answer to a published event. */
export function answerOf(err: unknown): PublishAnswer {
  const te = toTrellisError(err);
  return {
    status: te.status,
    code: te.code,
    message: te.message,
    retryAfter: te.status === 429 || te.status === 503 ? Number(te.details['retryAfter'] ?? 1) : undefined,
  };
}
