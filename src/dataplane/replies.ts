/**
 * Request-reply over the mesh: a requester's event carries `trellisreplyto` (a token this process made);
 * whatever answers it (a consumer group member's reply, an HTTP subscriber's reply event, a responder
 * that publishes its answer itself) carries `trellisinreplyto` with the same token when it is stored, and
 * the waiting requester gets it. The dispatcher copies the token from an event to its reply.
 * @module
 */
import { randomBytes } from 'node:crypto';
import type { CloudEvent } from '../cloudevents/event.js';

/** The extension a request carries: where its reply is awaited. */
export const REPLY_TO = 'trellisreplyto';
/** The extension a reply carries: the request's token. */
export const IN_REPLY_TO = 'trellisinreplyto';

interface Waiter {
  resolve: (e: CloudEvent) => void;
  timer: NodeJS.Timeout;
}

/** Requests waiting for their reply in this process, by token (bounded). */
export class ReplyWaiters {
  private readonly waiting = new Map<string, Waiter>();
  /** This process's part of every token it makes (12 hex digits): where a reply to it is awaited. */
  readonly id = randomBytes(6).toString('hex');
  private n = 0;
  /**
   * Set in a mesh of several processes: a reply to a token another process made goes to it (`owner` is
   * that process's {@link id}).
   */
  forward: ((owner: string, reply: CloudEvent) => void) | undefined;

  constructor(readonly max = 10_000) {}

  get size(): number {
    return this.waiting.size;
  }

  /** A new token (unique in this process, unguessable across processes). */
  token(): string {
    return `${this.id}${randomBytes(6).toString('hex')}${(this.n++).toString(36)}`;
  }

  /**
   * Waits for the reply to `token`: resolves with it, or with undefined after `timeoutMs` or on cancel.
   * Undefined at once when too many requests wait already.
   */
  expect(token: string, timeoutMs: number): { reply: Promise<CloudEvent | undefined>; cancel: () => void } {
    if (this.waiting.size >= this.max) return { reply: Promise.resolve(undefined), cancel: () => undefined };
    let done: (e: CloudEvent | undefined) => void = () => undefined;
    const reply = new Promise<CloudEvent | undefined>((resolve) => {
      done = resolve;
    });
    const timer = setTimeout(() => {
      this.waiting.delete(token);
      done(undefined);
    }, timeoutMs);
    this.waiting.set(token, { resolve: (e) => done(e), timer });
    return {
      reply,
      cancel: () => {
        const w = this.waiting.get(token);
        if (w === undefined) return;
        clearTimeout(w.timer);
        this.waiting.delete(token);
        done(undefined);
      },
    };
  }

  /**
   * Events just stored (here, or forwarded by the process that stored them): a reply a request here
   * waits for goes to it (the first one wins); one to another process's request is forwarded to it.
   */
  observe(events: readonly CloudEvent[]): void {
    if (this.waiting.size === 0 && this.forward === undefined) return;
    for (const e of events) {
      const t = e.attrs[IN_REPLY_TO];
      if (t === undefined) continue;
      const token = String(t);
      if (!token.startsWith(this.id)) {
        if (/^[0-9a-f]{12}/.test(token)) this.forward?.(token.slice(0, 12), e);
        continue;
      }
      const w = this.waiting.get(token);
      if (w === undefined) continue;
      this.waiting.delete(token);
      clearTimeout(w.timer);
      w.resolve(e);
    }
  }

  /** Every waiting request ends without a reply (shutdown). */
  close(): void {
    for (const [t, w] of this.waiting) {
      clearTimeout(w.timer);
      this.waiting.delete(t);
    }
  }
}
