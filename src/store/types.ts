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

/** The event log: append-only streams with a global sequence number. */
export interface EventLog {
  /**
   * Appends events and their pending deliveries in one durable step. Resolves with each event's sequence
   * number only once the events and deliveries would survive a crash; rejects if they were not stored.
   */
  append(items: readonly AppendItem[]): Promise<number[]>;
  /** Reads one stored event by sequence number. */
  getEvent(seq: number): Promise<CloudEvent | undefined>;
  /**
   * The newest stored event of a stream with this `id` (and `source`, when given); only events still in
   * the store (pending delivery, or kept by the retention) are found.
   */
  findEvent(stream: string, id: string, source?: string): Promise<CloudEvent | undefined>;
  /** Events handed to `append` and not yet durable: how far the store is behind (ingress backpressure). */
  pendingWrites(): number;
}

/** Per-subscription delivery progress: pending deliveries and their retry schedule. */
export interface DeliveryState {
  /** Pending deliveries of a subscription with `seq > afterSeq`, in sequence order, at most `limit`. */
  pending(subscription: string, afterSeq: number, limit: number): Promise<PendingDelivery[]>;
  /** Records that a delivery is done (delivered, dead-lettered or given up); durable on resolve. */
  complete(subscription: string, seq: number): Promise<void>;
  /** Records a failed attempt and when the next one is due; durable on resolve. */
  reschedule(subscription: string, seq: number, attempt: number, dueAt: number): Promise<void>;
  /** Removes every pending delivery of a subscription (its Trigger was deleted). */
  dropSubscription(subscription: string): Promise<void>;
  /** How many deliveries are pending, per subscription. */
  counts(): Promise<Map<string, number>>;
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
}

/** The optimistic-concurrency check failed in {@link ResourceStore.put}. */
export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConflictError';
  }
}

/** A store adapter: all three ports, plus its lifecycle. */
export interface Store {
  readonly events: EventLog;
  readonly deliveries: DeliveryState;
  readonly resources: ResourceStore;
  /** Resolves when the store can serve; rejects with the reason when it cannot. */
  ready(): Promise<void>;
  /** Removes delivered events older than `olderThanMs`; resolves with how many were removed. */
  compact(olderThanMs: number): Promise<number>;
  /** Flushes pending writes and releases connections and files. */
  close(): Promise<void>;
}
