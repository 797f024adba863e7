/**
 * Consumer groups' members in this process: applications connected over WebSocket, gRPC or Server-Sent
 * Events that share a subscription's events. The dispatcher drains a group's subscription as any other
 * (retries, backoff, dead letters, ordering, durable progress); its attempts go to a member here instead
 * of an HTTP subscriber. Each member has a window (credits): it is never sent more unacknowledged events
 * than that, and a member with no room is skipped, so a slow member never slows the others. An event a
 * member does not settle within the group's timeout, or whose member leaves, is a failed attempt: it goes
 * again (to whichever member has room) after the group's backoff.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import type { SendResult } from './sender.js';

/** One attempt handed to a member: `id` is what it acknowledges with. */
export interface GroupDelivery {
  id: string;
  seq: number;
  /** Failed attempts before this one. */
  attempt: number;
  event: CloudEvent;
}

/** How a member settles a delivery. */
export type Settlement =
  /** Done; with `reply`, a reply event (it goes where the group's replies go: back into its Broker). */
  | { kind: 'ack'; reply?: CloudEvent | undefined }
  /**
   * Not done: with `requeue` (default), it comes back after `delayMs` (or the group's backoff if longer);
   * without, it is given up at once (the dead-letter sink, when the group has one).
   */
  | {
      kind: 'nack';
      delayMs?: number | undefined;
      requeue?: boolean | undefined;
      reason?: string | undefined;
    };

/** A delivery's outcome as the dispatcher reads it (an HTTP-like answer). */
export type LocalResult = SendResult & { retryAfterMs?: number | undefined };

/** Where a group's subscription sends its attempts: a member of this process. */
export interface LocalDestination {
  deliver(event: CloudEvent, seq: number, attempt: number, timeoutMs: number): Promise<LocalResult>;
}

interface Pending {
  seq: number;
  member: Member;
  timer: NodeJS.Timeout;
  resolve: (r: LocalResult) => void;
}

interface Waiting {
  event: CloudEvent;
  seq: number;
  attempt: number;
  timeoutMs: number;
  resolve: (r: LocalResult) => void;
}

const EMPTY = Buffer.alloc(0);

function answer(status: number, body: string, retryAfterMs?: number): LocalResult {
  return { kind: 'response', status, headers: {}, body: Buffer.from(body), retryAfterMs };
}

/** A member: what it holds, and how to send it an attempt. */
export class Member {
  readonly inflight = new Map<string, Pending>();
  left = false;

  constructor(
    readonly group: Group,
    public window: number,
    private readonly sendFn: (d: GroupDelivery) => void,
    /** For logs and status: where it connected from, over what. */
    readonly label: string,
  ) {}

  get room(): number {
    return this.window - this.inflight.size;
  }

  send(d: GroupDelivery): void {
    this.sendFn(d);
  }

  /** Settles a delivery it was sent; false when it holds none by that id (settled, timed out, unknown). */
  settle(id: string, how: Settlement): boolean {
    const p = this.inflight.get(id);
    if (p === undefined) return false;
    this.inflight.delete(id);
    clearTimeout(p.timer);
    if (how.kind === 'ack') {
      if (how.reply === undefined) p.resolve({ kind: 'response', status: 202, headers: {}, body: EMPTY });
      else
        p.resolve({
          kind: 'response',
          status: 200,
          headers: { 'content-type': 'application/cloudevents+json' },
          body: Buffer.from(JSON.stringify(replyJson(how.reply))),
        });
    } else if (how.requeue === false) {
      this.group.failedAt(p.seq, this);
      p.resolve(answer(422, `rejected by a member of the group${how.reason ? `: ${how.reason}` : ''}`));
    } else {
      this.group.failedAt(p.seq, this);
      p.resolve(
        answer(
          503,
          `not acknowledged: the member asked for it again${how.reason ? ` (${how.reason})` : ''}`,
          how.delayMs ?? 0,
        ),
      );
    }
    this.group.freed();
    return true;
  }

  /** Changes the window; more room lets waiting deliveries go to it. */
  setWindow(n: number): void {
    this.window = n;
    this.group.freed();
  }

  /** The member went: what it held goes again (to another member, or when one comes). */
  leave(): void {
    if (this.left) return;
    this.left = true;
    for (const p of this.inflight.values()) {
      clearTimeout(p.timer);
      p.resolve({
        kind: 'error',
        error: `the member holding it (${this.label}) disconnected`,
        timeout: false,
      });
    }
    this.inflight.clear();
    this.group.remove(this);
  }
}

/** The JSON format of a reply, for the dispatcher's decoder. */
function replyJson(e: CloudEvent): Record<string, unknown> {
  const out: Record<string, unknown> = { ...e.attrs };
  if (e.data !== undefined) out['data_base64'] = Buffer.from(e.data).toString('base64');
  return out;
}

/** One group's members in this process, and the attempts waiting for room. */
export class Group implements LocalDestination {
  readonly members: Member[] = [];
  private readonly waiting: Waiting[] = [];
  private next = 0;
  /** Who held an event whose attempt failed (bounded): its next attempt goes to another member if one has room. */
  private readonly lastHolder = new Map<number, Member>();

  constructor(
    readonly subscription: string,
    private readonly onEmpty: () => void,
  ) {}

  deliver(event: CloudEvent, seq: number, attempt: number, timeoutMs: number): Promise<LocalResult> {
    return new Promise((resolve) => {
      const w: Waiting = { event, seq, attempt, timeoutMs, resolve };
      if (!this.place(w)) {
        if (this.members.length === 0)
          resolve({ kind: 'error', error: 'no member of the group is connected here', timeout: false });
        else this.waiting.push(w);
      }
    });
  }

  /** Sends an attempt to the next member with room (round robin); false when none has. */
  private place(w: Waiting): boolean {
    const n = this.members.length;
    const avoid = w.attempt > 0 ? this.lastHolder.get(w.seq) : undefined;
    const others = avoid !== undefined && this.members.some((x) => x !== avoid && x.room > 0);
    for (let i = 0; i < n; i++) {
      const m = this.members[(this.next + i) % n]!;
      if (m.room <= 0 || (others && m === avoid)) continue;
      this.lastHolder.delete(w.seq);
      this.next = (this.next + i + 1) % n;
      const id = String(w.seq);
      // The same event redelivered to the member holding it: the older attempt is over.
      const before = m.inflight.get(id);
      if (before !== undefined) {
        clearTimeout(before.timer);
        before.resolve({ kind: 'error', error: 'sent again to the same member', timeout: false });
      }
      const timer = setTimeout(() => {
        if (m.inflight.get(id) !== p) return;
        m.inflight.delete(id);
        this.failedAt(w.seq, m);
        p.resolve({
          kind: 'error',
          error: `not acknowledged within ${w.timeoutMs} ms by ${m.label}`,
          timeout: true,
        });
        this.freed();
      }, w.timeoutMs);
      const p: Pending = { seq: w.seq, member: m, timer, resolve: w.resolve };
      m.inflight.set(id, p);
      try {
        m.send({ id, seq: w.seq, attempt: w.attempt, event: w.event });
      } catch (err) {
        clearTimeout(timer);
        m.inflight.delete(id);
        w.resolve({
          kind: 'error',
          error: `sending to ${m.label} failed: ${(err as Error).message}`,
          timeout: false,
        });
      }
      return true;
    }
    return false;
  }

  /** Notes that a member's attempt failed (timeout, nack, left), so the next attempt prefers another one. */
  failedAt(seq: number, m: Member): void {
    this.lastHolder.delete(seq);
    this.lastHolder.set(seq, m);
    if (this.lastHolder.size > 10_000) this.lastHolder.delete(this.lastHolder.keys().next().value!);
  }

  /** Room came (a settlement, a new member, a bigger window): waiting attempts go. */
  freed(): void {
    while (this.waiting.length > 0 && this.place(this.waiting[0]!)) this.waiting.shift();
  }

  add(m: Member): void {
    this.members.push(m);
    this.freed();
  }

  remove(m: Member): void {
    const i = this.members.indexOf(m);
    if (i >= 0) this.members.splice(i, 1);
    if (this.members.length > 0) {
      this.freed();
      return;
    }
    for (const w of this.waiting.splice(0))
      w.resolve({ kind: 'error', error: 'no member of the group is connected here', timeout: false });
    this.onEmpty();
  }
}

/**
 * Every group with a member in this process, by subscription id. `onChange` hears when a group gets its
 * first member here or loses its last (the dispatcher drains a group's subscription only where it has
 * members, so that a process with none never holds its deliveries).
 */
export class ConsumerGroups {
  private readonly groups = new Map<string, Group>();

  constructor(private readonly onChange: (subscription: string) => void) {}

  /** Adds a member; `send` gets each attempt, which it settles through the returned member. */
  join(subscription: string, window: number, send: (d: GroupDelivery) => void, label: string): Member {
    let g = this.groups.get(subscription);
    const first = g === undefined;
    if (g === undefined) {
      const group: Group = new Group(subscription, () => {
        if (this.groups.get(subscription) === group && group.members.length === 0) {
          this.groups.delete(subscription);
          this.onChange(subscription);
        }
      });
      g = group;
      this.groups.set(subscription, g);
    }
    const m = new Member(g, window, send, label);
    g.add(m);
    if (first) this.onChange(subscription);
    return m;
  }

  /** The group of a subscription, when it has members here. */
  get(subscription: string): Group | undefined {
    return this.groups.get(subscription);
  }

  /** Members here, per subscription. */
  counts(): Map<string, number> {
    return new Map([...this.groups].map(([k, g]) => [k, g.members.length]));
  }

  /** Every member leaves (shutdown). */
  closeAll(): void {
    for (const g of [...this.groups.values()]) for (const m of [...g.members]) m.leave();
  }
}
