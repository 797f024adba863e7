/**
 * The store ports: what the data plane and the control plane need from durable storage, shaped so that the
 * embedded SQLite adapter and a NATS JetStream adapter are two implementations of the same interfaces.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';

/** One event to append to a stream (a Broker's log), with the subscriptions it must be delivered to. */
export interface AppendItem {
  /** The stream, `namespace/broker`. */
  stream: string;
  event: CloudEvent;
  /** Subscription ids (Trigger uids) whose filter matched: one pending delivery is recorded for each. */
  deliveries: readonly string[];
}

/** A pending delivery of one event to one subscription. */
export interface PendingDelivery {
  subscription: string;
  seq: number;
  /** How many attempts already failed. */
  attempt: number;
  /** Epoch milliseconds when the next attempt is due. */
  dueAt: number;
  event: CloudEvent;
}

/** The event log: append-only streams; sequence numbers increase within each stream. */
export interface EventLog {
  /**
   * Appends events and their pending deliveries in one durable step. Resolves with each event's sequence
   * number only once the events and deliveries would survive a crash; rejects if they were not stored.
   */
  append(items: readonly AppendItem[]): Promise<number[]>;
  /** Reads one stored event of a stream by sequence number. */
  getEvent(stream: string, seq: number): Promise<CloudEvent | undefined>;
  /**
   * The newest stored event of a stream with this `id` (and `source`, when given); only events still in
   * the store (pending delivery, or kept by the retention) are found.
   */
  findEvent(stream: string, id: string, source?: string): Promise<CloudEvent | undefined>;
  /** Events handed to `append` and not yet durable: how far the store is behind (ingress backpressure). */
  pendingWrites(): number;
  /**
   * Reads a stream from a position: up to `max` stored events with `seq > afterSeq`, oldest first (for
   * replay; only events still in the store, pending or kept by the retention, are there).
   */
  read(stream: string, afterSeq: number, max: number): Promise<{ seq: number; event: CloudEvent }[]>;
  /**
   * Removes stored events of a stream by sequence number (dead letters purged or redriven); resolves
   * with how many were there. Durable on resolve.
   */
  remove(stream: string, seqs: readonly number[]): Promise<number>;
}

/**
 * Streams whose key starts with this hold dead letters (`deadletters/NS/BROKER`): compaction and the
 * retention never remove their events; only {@link EventLog.remove} does.
 */
export const DEAD_LETTER_PREFIX = 'deadletters/';

/**
 * Per-subscription delivery progress, as leases: a worker fetches pending deliveries (each is then
 * leased to it: no other fetch returns it), and settles each with ack (delivered), retry (failed, due
 * again at a time; the lease stays with the worker) or terminate (dead-lettered or dropped). Leases live
 * in the process: after a crash, or `release`, every unsettled delivery is pending again (at least
 * once). A lease is named by its subscription and sequence number, so a JetStream adapter keeps its
 * message handles to itself (ack, nak with a delay, term).
 */
export interface DeliveryState {
  /**
   * True when a retried delivery comes back through `fetch` when it is due (a store shared by several
   * processes); false when the worker that retried it keeps it and brings it back itself.
   */
  readonly retriesRefetched?: boolean;
  /**
   * Leases up to `max` pending deliveries of a subscription that no lease holds, oldest first, due or not.
   * With `exclusive` (ordered delivery), a store shared by several processes lets one process at a time
   * fetch the subscription's deliveries and returns nothing to the others; the owner changes only when
   * it releases the subscription or stops answering, and a new owner gets the old owner's unsettled
   * deliveries before any newer one.
   */
  fetch(subscription: string, max: number, opts?: { exclusive?: boolean }): Promise<PendingDelivery[]>;
  /**
   * Leases a delivery that ingress just appended and handed over in memory (the embedded fast path).
   * False when a fetch already returned it; an adapter without the fast path always says false.
   */
  claim(subscription: string, seq: number): boolean;
  /** The delivery was made: it is removed; durable on resolve. */
  ack(subscription: string, seq: number): Promise<void>;
  /**
   * An attempt failed: `attempt` failed attempts so far, the next one due at `dueAt`; durable on resolve.
   * With `keep` (ordered delivery, where a retry must not queue behind newer events) the worker keeps
   * the lease and brings the delivery back itself, even when `retriesRefetched`; the attempt count is
   * still recorded, so whoever holds the delivery after a crash continues it.
   */
  retry(subscription: string, seq: number, attempt: number, dueAt: number, keep?: boolean): Promise<void>;
  /** The delivery is given up (dead-lettered, or dropped): it is removed; durable on resolve. */
  terminate(subscription: string, seq: number): Promise<void>;
  /**
   * Records pending deliveries of events already stored in `stream` (a replay: a consumer group that starts
   * at an earlier position, `trellis replay`), due now, attempt 0. Durable on resolve; the subscription's
   * worker gets them through `fetch` even when its lease position is past them. A delivery already pending
   * may be recorded a second time (at least once).
   */
  enqueue(
    subscription: string,
    stream: string,
    events: readonly { seq: number; event: CloudEvent }[],
  ): Promise<void>;
  /** Gives up every lease of a subscription (its worker stopped): its deliveries are pending again. */
  release(subscription: string): void;
  /** Pending deliveries of a subscription with `seq > afterSeq`, leased or not, without leasing them. */
  peek(subscription: string, afterSeq: number, limit: number): Promise<PendingDelivery[]>;
  /** Removes every pending delivery of a subscription (its resource was deleted). */
  dropSubscription(subscription: string): Promise<void>;
  /** How many deliveries are pending, per subscription. */
  counts(): Promise<Map<string, number>>;
  /**
   * How many deliveries are pending per subscription, and when the oldest of them was stored (ms since
   * the epoch): lag and its age, for metrics. Read on a scrape, not on the hot path.
   */
  backlog(): Promise<Map<string, Backlog>>;
  /**
   * Calls `listener` when deliveries for a subscription became available to this process without an
   * append here (a shared store: another process stored them, or a retry came due); returns a function
   * that stops it. Without it, workers look for such deliveries by polling.
   */
  onDeliveries?(listener: (subscription: string) => void): () => void;
}

/** A subscription's pending deliveries: how many, and when the oldest was stored. */
export interface Backlog {
  pending: number;
  oldestMs?: number | undefined;
}

/** A stored resource, as Knative writes it: apiVersion, kind, metadata, spec, status. */
export interface ResourceObject {
  apiVersion: string;
  kind: string;
  metadata: ResourceMetadata;
  spec: Record<string, unknown>;
  status?: Record<string, unknown>;
}

export interface ResourceMetadata {
  name: string;
  namespace: string;
  uid: string;
  generation: number;
  resourceVersion: string;
  creationTimestamp: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** A change seen by a watcher. */
export interface ResourceEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: ResourceObject;
}

/** Resources with optimistic concurrency on `metadata.resourceVersion`, and a watch for reconcilers. */
export interface ResourceStore {
  get(kind: string, namespace: string, name: string): Promise<ResourceObject | undefined>;
  list(kind: string, namespace?: string): Promise<ResourceObject[]>;
  /**
   * Creates or replaces a resource. When `expectedVersion` is given, the stored resourceVersion must equal it
   * (or the resource must not exist when it is `''`), otherwise rejects with a conflict. Assigns a new
   * resourceVersion and resolves with the stored object.
   */
  put(obj: ResourceObject, expectedVersion?: string): Promise<ResourceObject>;
  delete(kind: string, namespace: string, name: string): Promise<ResourceObject | undefined>;
  /** Calls `listener` for every change after this call; returns a function that stops the watch. */
  watch(listener: (e: ResourceEvent) => void): () => void;
  /**
   * Resolves once `get` and `list` reflect every change committed before the call, by any process of a
   * shared store (they may read a local copy that follows the store); rejects when that cannot be known.
   */
  current(): Promise<void>;
}

/** The optimistic-concurrency check failed in {@link ResourceStore.put}. */
export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConflictError';
  }
}

/** How long, and how much, of a stream's history is kept (a Broker's or Channel's annotations). */
export interface StreamRetention {
  /** Events older than this are removed, ms. */
  maxAgeMs?: number | undefined;
  /** The oldest events are removed while the stream holds more than this, bytes (cluster mode). */
  maxBytes?: number | undefined;
}

/** A store adapter: all three ports, plus its lifecycle. */
export interface Store {
  readonly events: EventLog;
  readonly deliveries: DeliveryState;
  readonly resources: ResourceStore;
  /** Resolves when the store can serve; rejects with the reason when it cannot. */
  ready(): Promise<void>;
  /**
   * Removes delivered events older than `olderThanMs` (or, for a stream configured with a maximum age,
   * older than that); resolves with how many were removed.
   */
  compact(olderThanMs: number): Promise<number>;
  /**
   * Sets a stream's retention (undefined: the server's default). An adapter without per-stream limits
   * omits it; one that cannot apply a setting rejects with the reason.
   */
  configureStream?(stream: string, retention: StreamRetention | undefined): Promise<void>;
  /** The stream is gone (its Broker or Channel was deleted): its history may be removed. */
  dropStream?(stream: string): Promise<void>;
  /**
   * Holds a named lease for as long as this process lives: a store shared by several processes gives it
   * to one of them at a time (another takes it when the holder stops answering), so that work that must
   * be done once (watching resources for an ApiServerSource) is done by one process. `onChange` hears
   * when this process gains or loses it; the returned function gives it up. Without it, every process
   * holds every lease (a store of one process).
   */
  holdLease?(name: string, onChange: (held: boolean) => void): () => void;
  /**
   * Sends a small message to whichever process listens on `channel` (at most once, not stored: a
   * notice, such as a reply a requester on another process waits for). Without it, a store serves one
   * process, and there is nobody else to tell.
   */
  notify?(channel: string, payload: Uint8Array): void;
  /** Hears the notices sent to `channel`; returns a function that stops it. */
  onNotice?(channel: string, listener: (payload: Uint8Array) => void): () => void;
  /** Flushes pending writes and releases connections and files. */
  close(): Promise<void>;
}
