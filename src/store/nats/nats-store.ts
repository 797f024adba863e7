/**
 * The NATS JetStream store: the same ports as the embedded SQLite store, over an existing distributed
 * engine. Events go to one stream (`{P}_EVENTS`, a subject per Broker or Channel) for reads and replay;
 * at ingress each matching subscription gets a delivery message in a work-queue stream
 * (`{P}_DELIVERIES`, a subject per subscription, the event in the payload, its sequence, attempt and due
 * time in headers), read by a durable consumer per subscription that every process shares. A retry is a
 * new delivery message carrying the attempt and due time, so attempts are counted exactly whatever
 * JetStream redelivers. Resources live in a KV bucket, watched by every process.
 * @module
 */

import { readFileSync } from 'node:fs';
import {
  AckPolicy,
  type Consumer,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import {
  type Authenticator,
  type ConnectionOptions,
  connect,
  credsAuthenticator,
  headers,
  type NatsConnection,
  nanos,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
} from '@nats-io/transport-node';
import {
  type AppendItem,
  type Backlog,
  ConflictError,
  DEAD_LETTER_PREFIX,
  type DeliveryState,
  type EventLog,
  type PendingDelivery,
  type ResourceEvent,
  type ResourceObject,
  type ResourceStore,
  type Store,
  type StreamRetention,
} from '../types.js';
import { decodeEvent, encodeEvent, resourceKey, token, untoken } from './codec.js';
import { JetStreamPublisher } from './publisher.js';

export interface NatsStoreOptions {
  /** `nats://host:port`, or several. */
  servers: string | string[];
  /** The first part of every stream, subject and bucket name (several meshes can share one NATS). */
  prefix?: string;
  /** How long a fetched delivery stays leased without a sign of life (in-flight ones are kept alive). */
  ackWaitMs?: number;
  /** A NATS credentials file (JWT and NKey seed), as `nats` and `nsc` write them. */
  credsFile?: string | undefined;
  /** User and password (NATS `authorization { users }`). */
  user?: string | undefined;
  password?: string | undefined;
  /** A NATS authorization token. */
  token?: string | undefined;
  /** TLS: the CA that signs the NATS servers' certificates, and a client certificate and key (mTLS). */
  tlsCaFile?: string | undefined;
  tlsCertFile?: string | undefined;
  tlsKeyFile?: string | undefined;
  /** Publishes awaiting JetStream's acknowledgement, across all requests; more wait their turn. */
  publishWindow?: number;
  /** Copies JetStream keeps of every stream and bucket (1, 3 or 5 on a NATS cluster). */
  replicas?: number;
  /** Where to report trouble the store recovers from by itself (a pull that failed and is made again). */
  warn?: ((context: Record<string, unknown>, message: string) => void) | undefined;
}

const SEQ = 'Trellis-Seq';
/** Compaction reads at most this many pending deliveries; beyond, it waits for the backlog to shrink. */
const COMPACT_SCAN_LIMIT = 10_000;
const ATTEMPT = 'Trellis-Attempt';
const DUE = 'Trellis-Due';
/** The stream (Broker or Channel) a delivery's event belongs to. */
const STREAM = 'Trellis-Stream';
/** Deliveries a process holds per subscription beyond those fetched (all leased to it, kept alive). */
const PULL_BUFFER = 256;
/** How long one pull request stays open at the server (it is renewed at once). */
const PULL_EXPIRES_MS = 30_000;
/** How long a fetch with nothing buffered waits for an arrival. */
const FETCH_WAIT_MS = 100;

interface Pull {
  buffer: JsMsg[];
  /** Deliveries-stream sequences of the messages buffered or leased here: JetStream may hand one over twice. */
  inHand: Set<number>;
  stopped: boolean;
  /** A listener was told since the last fetch. */
  signalled: boolean;
  exclusive: boolean;
  iter?: { stop(): void } | undefined;
  /** Wakes the pull loop (room in the buffer, or a stop). */
  space?: (() => void) | undefined;
  /** Wakes a fetch waiting for an arrival. */
  arrived?: (() => void) | undefined;
}

/** The value an owner leaves in an exclusive subscription's key when it lets go cleanly. */
const RELEASED = '-';

/** The attempts-bucket key of a kept retry. */
function attemptKey(sub: string, seq: number): string {
  return `a${token(sub)}.${seq}`;
}

/** A delivery message as the port's pending delivery: the event, and its sequence, attempt and due time. */
function toDelivery(
  sub: string,
  m: { headers?: { get(k: string): string } | undefined; data: Uint8Array },
): PendingDelivery {
  return {
    subscription: sub,
    seq: Number(m.headers?.get(SEQ)),
    attempt: Number(m.headers?.get(ATTEMPT) ?? 0),
    dueAt: Number(m.headers?.get(DUE) ?? 0),
    event: decodeEvent(m.data),
  };
}

/** The connection options for the NATS client: credentials, TLS, and reconnecting for ever. */
export function connectionOptions(opts: NatsStoreOptions): ConnectionOptions {
  const authenticator: Authenticator[] = [];
  if (opts.credsFile !== undefined) {
    const file = opts.credsFile;
    authenticator.push(credsAuthenticator(() => readFileSync(file)));
  }
  if (opts.user !== undefined) authenticator.push(usernamePasswordAuthenticator(opts.user, opts.password));
  if (opts.token !== undefined) authenticator.push(tokenAuthenticator(opts.token));
  const tls =
    opts.tlsCaFile !== undefined || opts.tlsCertFile !== undefined || opts.tlsKeyFile !== undefined
      ? {
          ...(opts.tlsCaFile !== undefined ? { caFile: opts.tlsCaFile } : {}),
          ...(opts.tlsCertFile !== undefined ? { certFile: opts.tlsCertFile } : {}),
          ...(opts.tlsKeyFile !== undefined ? { keyFile: opts.tlsKeyFile } : {}),
        }
      : undefined;
  return {
    servers: opts.servers,
    name: 'trellis',
    // No stack captured per request: a publish is a request, and there are many.
    noAsyncTraces: true,
    // A NATS restart or a failover must never leave a process without its store for good.
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    ...(authenticator.length > 0 ? { authenticator } : {}),
    ...(tls !== undefined ? { tls } : {}),
  };
}

/** Connects, and creates the streams and the bucket if they are not there yet. */
export async function openNatsStore(opts: NatsStoreOptions): Promise<Store> {
  const nc = await connect(connectionOptions(opts));
  try {
    const s = new NatsStore(nc, await jetstreamManager(nc), jetstream(nc), opts);
    await s.init();
    return s;
  } catch (err) {
    await nc.close();
    throw err;
  }
}

class NatsStore implements Store {
  readonly events: EventLog;
  readonly deliveries: DeliveryState;
  readonly resources: ResourceStore;
  private readonly p: string;
  private readonly deliveriesStream: string;
  private readonly replicas: number;
  /** Event streams known to exist with their configuration, by Trellis stream key. */
  private readonly eventStreams = new Map<string, Promise<void>>();
  /** Each stream's retention, as the server configured it. */
  private readonly retentions = new Map<string, StreamRetention | undefined>();
  private readonly ackWaitMs: number;
  private readonly warn: NatsStoreOptions['warn'];
  private writes = 0;
  private closed = false;
  /** False from a disconnect until the client has reconnected: appends are refused at once meanwhile. */
  private connected = true;
  private readonly window: Window;
  private readonly publisher: JetStreamPublisher;
  private kv!: KV;
  /** Attempts of kept (ordered) retries, by subscription and sequence, while their delivery is pending. */
  private attempts!: KV;
  /** Kept retries recorded by this process (their key goes when the delivery is settled). */
  private readonly recorded = new Set<string>();
  /** Kept retries of previous owners of the subscriptions this process took over, read when it took them. */
  private readonly recovered = new Map<string, { attempt: number; dueAt: number }>();
  /** Which process fetches each exclusive (ordered) subscription: a key per subscription, expiring unless renewed. */
  private owners!: KV;
  private readonly processId = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  /** Exclusive subscriptions this process owns: the key's revision, and when fetching may start. */
  private readonly owned = new Map<string, { revision: number; from: number }>();
  private renewer: NodeJS.Timeout | undefined;
  /** Ownerships being let go (awaited on close, so the next owner need not wait for them to expire). */
  private readonly letting = new Set<Promise<void>>();
  private readonly consumers = new Map<string, Consumer>();
  /** Each subscription's pull: what arrived and is not fetched yet. */
  private readonly pulls = new Map<string, Pull>();
  private readonly listeners = new Set<(subscription: string) => void>();
  /** Leased delivery messages, by subscription and event sequence. */
  private readonly leases = new Map<string, Map<number, JsMsg>>();
  private keepAlive: NodeJS.Timeout | undefined;
  /** Every resource by KV key, with its revision, kept current by a watch of the bucket. */
  private readonly cache = new Map<string, { obj: ResourceObject; revision: number }>();
  /** The bucket's last revision the cache reflects, and who waits for a later one. */
  private seenRevision = 0;
  private revisionWaiters: { revision: number; resolve: () => void }[] = [];
  private readonly watchers = new Set<(e: ResourceEvent) => void>();
  private stopWatch: (() => void) | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    opts: NatsStoreOptions,
  ) {
    this.p = opts.prefix ?? 'trellis';
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(this.p))
      throw new Error(`NATS prefix '${this.p}': use 1-32 of A-Z a-z 0-9 _ -`);
    this.replicas = opts.replicas ?? 1;
    this.deliveriesStream = `${this.p}_DELIVERIES`;
    this.ackWaitMs = opts.ackWaitMs ?? 60_000;
    this.warn = opts.warn;
    this.window = new Window(opts.publishWindow ?? 4096);
    this.publisher = new JetStreamPublisher(nc);
    this.events = {
      append: (items) => this.append(items),
      pendingWrites: () => this.writes,
      getEvent: (stream, seq) => this.getEvent(stream, seq),
      findEvent: (stream, id, source) => this.findEvent(stream, id, source),
      read: (stream, afterSeq, max) => this.read(stream, afterSeq, max),
      remove: (stream, seqs) => this.removeEvents(stream, seqs),
    };
    this.deliveries = {
      retriesRefetched: true,
      fetch: (sub, max, o) => this.fetch(sub, max, o?.exclusive === true),
      claim: () => false,
      ack: (sub, seq) => this.settle(sub, seq),
      terminate: (sub, seq) => this.settle(sub, seq),
      retry: (sub, seq, attempt, dueAt, keep) => this.retry(sub, seq, attempt, dueAt, keep === true),
      release: (sub) => this.release(sub),
      enqueue: async (sub, stream, events) => {
        await Promise.all(
          events.map((e) => this.publishDelivery(sub, stream, e.seq, 0, 0, encodeEvent(e.event))),
        );
      },
      peek: (sub, afterSeq, limit) => this.peek(sub, afterSeq, limit),
      dropSubscription: (sub) => this.dropSubscription(sub),
      counts: () => this.counts(),
      backlog: () => this.backlog(),
      onDeliveries: (listener) => {
        this.listeners.add(listener);
        return () => this.listeners.delete(listener);
      },
    };
    this.resources = {
      get: async (kind, ns, name) => this.cache.get(resourceKey(kind, ns, name))?.obj,
      list: async (kind, ns) => this.list(kind, ns),
      put: (obj, expected) => this.put(obj, expected),
      delete: (kind, ns, name) => this.deleteResource(kind, ns, name),
      watch: (listener) => {
        this.watchers.add(listener);
        return () => this.watchers.delete(listener);
      },
      current: () => this.current(),
    };
  }

  /** A Broker's or Channel's events live in a JetStream stream of their own. */
  private evStream(stream: string): string {
    return `${this.p}_EV_${token(stream)}`;
  }
  private evSubject(stream: string): string {
    return `${this.p}.ev.${token(stream)}`;
  }
  private dSubject(sub: string): string {
    return `${this.p}.d.${token(sub)}`;
  }

  async init(): Promise<void> {
    void (async () => {
      for await (const st of this.nc.status()) {
        if (st.type === 'disconnect') {
          this.connected = false;
          this.publisher.failAll('the connection to NATS was lost; the events may or may not be stored');
        } else if (st.type === 'reconnect') {
          this.connected = true;
          // Pull requests did not survive the server: make them again now.
          for (const p of this.pulls.values()) p.iter?.stop();
        }
      }
    })();
    await this.ensureStream({
      name: this.deliveriesStream,
      subjects: [`${this.p}.d.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      allow_direct: true,
      num_replicas: this.replicas,
    });
    const kvm = new Kvm(this.nc);
    this.kv = await kvm.create(`${this.p}_resources`, { history: 1, replicas: this.replicas });
    const ttl = this.ownerTtlMs();
    this.owners = await kvm.create(`${this.p}_owners`, { history: 1, ttl, replicas: this.replicas });
    // A record outlives any sane backoff; one left behind by a crash between settling and deleting goes by itself.
    this.attempts = await kvm.create(`${this.p}_attempts`, {
      history: 1,
      replicas: this.replicas,
      ttl: 7 * 24 * 3600 * 1000,
    });
    const ownersStream = `KV_${this.p}_owners`;
    const oi = await this.jsm.streams.info(ownersStream);
    if (oi.config.max_age !== nanos(ttl))
      await this.jsm.streams.update(ownersStream, { ...oi.config, max_age: nanos(ttl) });
    // Watch first, then load: a change made meanwhile is seen at least once, and revisions order them.
    // What was committed before the watch began is in the load.
    const before = (await this.kv.status()).streamInfo.state.last_seq;
    const w = await this.kv.watch({ include: 'updates' });
    this.stopWatch = () => w.stop();
    void (async () => {
      for await (const e of w) {
        if (e.operation === 'PUT')
          this.cachePut(e.key, JSON.parse(new TextDecoder().decode(e.value)), e.revision);
        else this.cacheDelete(e.key);
        this.saw(e.revision);
      }
    })();
    for await (const key of await this.kv.keys()) {
      const e = await this.kv.get(key);
      if (e !== null && e.operation === 'PUT')
        this.cachePut(key, e.json<ResourceObject>(), e.revision, false);
    }
    this.saw(before);
    this.keepAlive = setInterval(
      () => {
        for (const m of this.leases.values()) for (const msg of m.values()) msg.working();
        for (const st of this.pulls.values()) for (const msg of st.buffer) msg.working();
      },
      Math.max(1000, this.ackWaitMs / 3),
    );
    this.keepAlive.unref();
    this.renewer = setInterval(() => void this.renewOwnership(), Math.max(250, this.ownerTtlMs() / 4));
    this.renewer.unref();
  }

  /** How long an owner that stopped renewing keeps an exclusive subscription. */
  private ownerTtlMs(): number {
    return Math.max(2000, this.ackWaitMs);
  }

  /**
   * True when this process owns the exclusive subscription (taking it when nobody does) and may fetch.
   * A new owner whose predecessor left deliveries leased waits until those leases have expired, so
   * that they come back to it, before anything newer, on its first fetch.
   */
  private async own(sub: string, c: Consumer): Promise<boolean> {
    const mine = this.owned.get(sub);
    if (mine !== undefined) return Date.now() >= mine.from;
    const key = `o${token(sub)}`;
    let revision: number;
    let handedOver = false;
    try {
      revision = await this.owners.create(key, this.processId);
    } catch {
      // Held, unless its owner let it go (its leases went back to the queue before that).
      const cur = await this.owners.get(key).catch(() => null);
      if (cur === null || cur.operation !== 'PUT' || cur.string() !== RELEASED) return false;
      try {
        revision = await this.owners.update(key, this.processId, cur.revision);
      } catch {
        return false;
      }
      handedOver = true;
    }
    // The previous owners' kept retries, to continue their attempt counts.
    for await (const k of await this.attempts.keys(`a${token(sub)}.>`)) {
      const e = await this.attempts.get(k).catch(() => null);
      if (e !== null && e.operation === 'PUT')
        this.recovered.set(k, e.json<{ attempt: number; dueAt: number }>());
    }
    const info = await c.info();
    const others = info.num_ack_pending - (this.leases.get(sub)?.size ?? 0);
    const from = others > 0 && !handedOver ? Date.now() + this.ackWaitMs + 1000 : 0;
    this.owned.set(sub, { revision, from });
    return Date.now() >= from;
  }

  private async renewOwnership(): Promise<void> {
    if (!this.connected) return;
    for (const [sub, o] of this.owned) {
      try {
        o.revision = await this.owners.update(`o${token(sub)}`, this.processId, o.revision);
      } catch {
        // Another process took it (this one was silent too long): it fetches from now on.
        this.owned.delete(sub);
      }
    }
  }

  holdLease(name: string, onChange: (held: boolean) => void): () => void {
    const key = `L${token(name)}`;
    let revision: number | undefined;
    let stopped = false;
    const tick = async () => {
      if (stopped || !this.connected) return;
      try {
        if (revision !== undefined) {
          revision = await this.owners.update(key, this.processId, revision);
          return;
        }
        try {
          revision = await this.owners.create(key, this.processId);
        } catch {
          const cur = await this.owners.get(key);
          if (cur === null || cur.operation !== 'PUT' || cur.string() !== RELEASED) return;
          revision = await this.owners.update(key, this.processId, cur.revision);
        }
        if (!stopped) onChange(true);
      } catch {
        // Renewal refused: another process holds it now.
        if (revision !== undefined) {
          revision = undefined;
          onChange(false);
        }
      }
    };
    void tick();
    const timer = setInterval(() => void tick(), Math.max(250, this.ownerTtlMs() / 4));
    timer.unref();
    const release = () => {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      this.leaseReleases.delete(release);
      if (revision === undefined) return;
      const rev = revision;
      revision = undefined;
      onChange(false);
      const p = this.owners
        .update(key, RELEASED, rev)
        .then(() => undefined)
        .catch(() => undefined)
        .finally(() => this.letting.delete(p));
      this.letting.add(p);
    };
    this.leaseReleases.add(release);
    return release;
  }

  /** Leases held through `holdLease`, given up on close. */
  private readonly leaseReleases = new Set<() => void>();

  private disown(sub: string): void {
    const o = this.owned.get(sub);
    if (o === undefined) return;
    this.owned.delete(sub);
    const p = this.owners
      .update(`o${token(sub)}`, RELEASED, o.revision)
      .then(() => undefined)
      .catch(() => undefined)
      .finally(() => this.letting.delete(p));
    this.letting.add(p);
  }

  /** Creates a stream, or brings an existing one's limits and replicas in line with `cfg`. */
  private async ensureStream(cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
    const info = await this.jsm.streams.info(cfg.name).catch(() => undefined);
    if (info === undefined) {
      await this.jsm.streams.add(cfg);
      return;
    }
    const c = info.config;
    if (
      (cfg.max_age !== undefined && c.max_age !== cfg.max_age) ||
      (cfg.max_bytes !== undefined && c.max_bytes !== cfg.max_bytes) ||
      (cfg.num_replicas !== undefined && c.num_replicas !== cfg.num_replicas)
    )
      await this.jsm.streams.update(cfg.name, { ...c, ...cfg });
  }

  /** A Broker's or Channel's event stream as configured: its own limits, else unlimited (compaction trims it). */
  private eventStreamConfig(stream: string): Partial<StreamConfig> & { name: string } {
    const r = this.retentions.get(stream);
    const age = r?.maxAgeMs ?? 0;
    return {
      name: this.evStream(stream),
      subjects: [this.evSubject(stream)],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      allow_direct: true,
      num_replicas: this.replicas,
      max_age: nanos(age),
      max_bytes: r?.maxBytes ?? -1,
      // JetStream wants the duplicate window within the maximum age.
      ...(age > 0 ? { duplicate_window: nanos(Math.min(age, 120_000)) } : {}),
    };
  }

  /** Makes sure a stream's event stream exists (once per process, unless something failed). */
  private ensureEvents(stream: string): Promise<void> {
    let p = this.eventStreams.get(stream);
    if (p === undefined) {
      p = this.ensureStream(this.eventStreamConfig(stream)).catch((err: unknown) => {
        this.eventStreams.delete(stream);
        throw err;
      });
      this.eventStreams.set(stream, p);
    }
    return p;
  }

  async configureStream(stream: string, r: StreamRetention | undefined): Promise<void> {
    this.retentions.set(stream, r);
    this.eventStreams.delete(stream);
    await this.ensureEvents(stream);
  }

  async dropStream(stream: string): Promise<void> {
    this.retentions.delete(stream);
    this.eventStreams.delete(stream);
    await this.jsm.streams.delete(this.evStream(stream)).catch(() => undefined);
  }

  async ready(): Promise<void> {
    if (this.closed || this.nc.isClosed()) throw new Error('the NATS connection is closed');
    if (!this.connected) throw new Error('NATS is unreachable; reconnecting');
    await this.nc.flush();
  }

  /**
   * A JetStream publish that waits for a place in the window first. Publishes asked for during one turn
   * of the event loop (many requests' events) go out together on the next, in one socket write.
   */
  private async publish(subject: string, payload: Uint8Array, h?: ReturnType<typeof headers>) {
    await this.window.enter();
    try {
      if (!this.connected) throw new Error('NATS is unreachable; reconnecting');
      return await new Promise<number>((resolve, reject) => {
        this.outbox.push({ subject, payload, h, resolve, reject });
        if (this.outbox.length === 1) setImmediate(() => this.sendOutbox());
      });
    } finally {
      this.window.leave();
    }
  }

  private readonly outbox: {
    subject: string;
    payload: Uint8Array;
    h: ReturnType<typeof headers> | undefined;
    resolve: (seq: number) => void;
    reject: (e: unknown) => void;
  }[] = [];

  private sendOutbox(): void {
    for (const o of this.outbox.splice(0))
      this.publisher.publish(o.subject, o.payload, o.h).then(o.resolve, o.reject);
  }

  // Events

  private async append(items: readonly AppendItem[]): Promise<number[]> {
    if (this.closed) throw new Error('store is closed');
    if (!this.connected) throw new Error('NATS is unreachable; reconnecting');
    this.writes += items.length;
    const streams = new Set(items.map((it) => it.stream));
    try {
      for (const st of streams) await this.ensureEvents(st);
      // Pipelined: every publish goes out before any acknowledgement is awaited.
      const payloads = items.map((it) => encodeEvent(it.event));
      const acks = await Promise.all(
        items.map((it, i) => this.publish(this.evSubject(it.stream), payloads[i]!)),
      );
      const seqs = acks;
      const deliveries: Promise<unknown>[] = [];
      for (const [i, it] of items.entries()) {
        for (const sub of it.deliveries)
          deliveries.push(this.publishDelivery(sub, it.stream, seqs[i]!, 0, 0, payloads[i]!));
      }
      await Promise.all(deliveries);
      return seqs;
    } catch (err) {
      // A stream deleted by another process (its Broker went and came back) is made again next time.
      for (const st of streams) this.eventStreams.delete(st);
      throw err;
    } finally {
      this.writes -= items.length;
    }
  }

  private publishDelivery(
    sub: string,
    stream: string,
    seq: number,
    attempt: number,
    dueAt: number,
    payload: Uint8Array,
  ) {
    const h = headers();
    h.set(STREAM, stream);
    h.set(SEQ, String(seq));
    h.set(ATTEMPT, String(attempt));
    h.set(DUE, String(dueAt));
    return this.publish(this.dSubject(sub), payload, h);
  }

  private async getEvent(stream: string, seq: number) {
    try {
      const m = await this.jsm.streams.getMessage(this.evStream(stream), { seq });
      return m === null ? undefined : decodeEvent(m.data);
    } catch {
      return undefined;
    }
  }

  /** Stored messages of one subject of a stream, from a sequence on, with an ordered consumer. */
  private async *scan(stream: string, subject: string, startSeq: number, max: number): AsyncGenerator<JsMsg> {
    const c = await this.js.consumers.get(stream, {
      filter_subjects: subject,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: Math.max(1, startSeq),
    });
    try {
      let left = max;
      while (left > 0) {
        const pending = (await c.info()).num_pending;
        const n = Math.min(left, pending, 1000);
        if (n <= 0) return;
        const iter = await c.fetch({ max_messages: n, expires: 2000 });
        let got = 0;
        for await (const m of iter) {
          got++;
          yield m;
        }
        if (got === 0) return;
        left -= got;
      }
    } finally {
      await c.delete().catch(() => undefined);
    }
  }

  /**
   * Stored messages of a subject of the deliveries stream, without a consumer (a work-queue stream
   * allows no second consumer on a subject): one direct get per message, for peek and compaction.
   */
  private async *storedDeliveries(
    subject: string,
  ): AsyncGenerator<{ seq: number; headers: { get(k: string): string } | undefined; data: Uint8Array }> {
    let seq = 1;
    for (;;) {
      const m = await this.jsm.direct
        .getMessage(this.deliveriesStream, { seq, next_by_subj: subject })
        .catch(() => null);
      if (m === null) return;
      yield { seq: m.seq, headers: m.header, data: m.data };
      seq = m.seq + 1;
    }
  }

  private async read(stream: string, afterSeq: number, max: number) {
    const out: { seq: number; event: ReturnType<typeof decodeEvent> }[] = [];
    const name = this.evStream(stream);
    if (!(await this.exists(name))) return out;
    for await (const m of this.scan(name, this.evSubject(stream), afterSeq + 1, max))
      out.push({ seq: m.seq, event: decodeEvent(m.data) });
    return out;
  }

  private async removeEvents(stream: string, seqs: readonly number[]): Promise<number> {
    const name = this.evStream(stream);
    if (!(await this.exists(name))) return 0;
    let n = 0;
    for (const seq of seqs)
      if (await this.jsm.streams.deleteMessage(name, seq, false).catch(() => false)) n++;
    return n;
  }

  private async findEvent(stream: string, id: string, source?: string) {
    let found: ReturnType<typeof decodeEvent> | undefined;
    const name = this.evStream(stream);
    if (!(await this.exists(name))) return undefined;
    for await (const m of this.scan(name, this.evSubject(stream), 1, 100_000)) {
      const e = decodeEvent(m.data);
      if (e.attrs['id'] === id && (source === undefined || e.attrs['source'] === source)) found = e;
    }
    return found;
  }

  private async exists(name: string): Promise<boolean> {
    return (await this.jsm.streams.info(name).catch(() => undefined)) !== undefined;
  }

  // Deliveries

  private async consumer(sub: string): Promise<Consumer> {
    let c = this.consumers.get(sub);
    if (c === undefined) {
      const durable = `d${token(sub)}`;
      const info = await this.jsm.consumers.info(this.deliveriesStream, durable).catch(() => undefined);
      if (info === undefined) {
        await this.jsm.consumers.add(this.deliveriesStream, {
          durable_name: durable,
          filter_subject: this.dSubject(sub),
          ack_policy: AckPolicy.Explicit,
          ack_wait: nanos(this.ackWaitMs),
          max_deliver: -1,
        });
      } else if (info.config.ack_wait !== nanos(this.ackWaitMs)) {
        // The last process started decides (processes of one mesh should agree: --nats-ack-wait).
        await this.jsm.consumers.update(this.deliveriesStream, durable, { ack_wait: nanos(this.ackWaitMs) });
      }
      c = await this.js.consumers.get(this.deliveriesStream, durable);
      this.consumers.set(sub, c);
    }
    return c;
  }

  /**
   * Leases what this process's pull for the subscription has received (starting the pull on first use),
   * waiting briefly when nothing has arrived yet. Deliveries are pushed by JetStream as they are stored,
   * to whichever process has room, and `onDeliveries` listeners hear of them.
   */
  private async fetch(sub: string, max: number, exclusive: boolean): Promise<PendingDelivery[]> {
    if (this.closed) return [];
    let st = this.pulls.get(sub);
    if (st === undefined) {
      st = { buffer: [], inHand: new Set(), stopped: false, signalled: false, exclusive };
      this.pulls.set(sub, st);
      void this.pullLoop(sub, st);
    }
    st.exclusive = exclusive;
    if (st.buffer.length === 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, FETCH_WAIT_MS);
        function done() {
          clearTimeout(t);
          resolve();
        }
        st.arrived = done;
      });
      st.arrived = undefined;
      // The rest of a batch arrives in the same read: let it land.
      if (st.buffer.length > 0) await new Promise((r) => setImmediate(r));
    }
    let leased = this.leases.get(sub);
    if (leased === undefined) {
      leased = new Map();
      this.leases.set(sub, leased);
    }
    const taken = st.buffer.splice(0, max);
    st.signalled = false;
    st.space?.();
    const out: PendingDelivery[] = [];
    for (const m of taken) {
      const d = toDelivery(sub, m);
      // A kept retry of a previous owner: its attempt count is in the attempts bucket, not in the message.
      const rec = this.recovered.get(attemptKey(sub, d.seq));
      if (rec !== undefined) {
        this.recovered.delete(attemptKey(sub, d.seq));
        d.attempt = rec.attempt;
        d.dueAt = rec.dueAt;
        this.recorded.add(attemptKey(sub, d.seq));
      }
      leased.set(d.seq, m);
      out.push(d);
    }
    // More than asked for is waiting: say so, or the worker would wait for the next arrival.
    if (st.buffer.length > 0) this.signal(sub, st);
    return out.sort((a, b) => a.seq - b.seq);
  }

  /** Tells listeners a subscription has deliveries waiting here, once per fetch. */
  private signal(sub: string, st: Pull): void {
    if (st.signalled) return;
    st.signalled = true;
    queueMicrotask(() => {
      for (const l of this.listeners) l(sub);
    });
  }

  /**
   * Keeps a pull request open for a subscription while its buffer has room: JetStream sends deliveries
   * as they are stored, to whichever process asked. Buffered deliveries are leased to this process (kept
   * alive), so the buffer is small. An exclusive subscription is pulled only while this process owns it.
   */
  private async pullLoop(sub: string, st: Pull): Promise<void> {
    while (!st.stopped && !this.closed) {
      try {
        if (!this.connected) {
          await this.pause(st, 500);
          continue;
        }
        const c = await this.consumer(sub);
        if (st.exclusive && !(await this.own(sub, c))) {
          // Another process owns it; what this one holds goes back, oldest first, to the owner.
          for (const m of st.buffer.splice(0)) {
            st.inHand.delete(m.seq);
            m.nak();
          }
          await this.pause(st, 1000);
          continue;
        }
        const want = PULL_BUFFER - st.buffer.length;
        if (want <= 0) {
          await new Promise<void>((r) => {
            st.space = r;
          });
          st.space = undefined;
          continue;
        }
        const iter = await c.fetch({ max_messages: want, expires: PULL_EXPIRES_MS, idle_heartbeat: 5000 });
        st.iter = iter;
        for await (const m of iter) {
          if (st.stopped) {
            m.nak();
            continue;
          }
          // A second copy of a message this process holds (seen from NATS 2.9 after a redelivery): the
          // copy held settles it.
          if (st.inHand.has(m.seq)) continue;
          st.inHand.add(m.seq);
          st.buffer.push(m);
          st.arrived?.();
          this.signal(sub, st);
        }
        st.iter = undefined;
      } catch (err) {
        st.iter = undefined;
        if (st.stopped || this.closed) return;
        this.warn?.({ err, subscription: sub }, 'pulling deliveries failed; pulling again in 1s');
        await this.pause(st, 1000);
      }
    }
  }

  private pause(st: Pull, ms: number): Promise<void> {
    return new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      t.unref();
      st.space = () => {
        clearTimeout(t);
        r();
      };
    }).then(() => {
      st.space = undefined;
    });
  }

  /** Stops a subscription's pull and gives back what it buffered. */
  private stopPull(sub: string): void {
    const st = this.pulls.get(sub);
    if (st === undefined) return;
    this.pulls.delete(sub);
    st.stopped = true;
    st.iter?.stop();
    st.space?.();
    st.arrived?.();
    for (const m of st.buffer.splice(0)) m.nak();
  }

  private acking: JsMsg[] = [];
  private acked: Promise<void> | undefined;

  /**
   * Acknowledges on the next turn of the event loop, with every other acknowledgement of this turn, in
   * one socket write; resolves once the server has read them (one PING for all, not a request each). An
   * acknowledgement lost with a connection means the delivery is made again: at least once.
   */
  private ackLater(m: JsMsg): Promise<void> {
    this.acking.push(m);
    this.acked ??= new Promise<void>((r) => setImmediate(r)).then(() => {
      this.acked = undefined;
      for (const x of this.acking.splice(0)) x.ack();
      return this.nc.flush();
    });
    return this.acked;
  }

  private take(sub: string, seq: number): JsMsg | undefined {
    const m = this.leases.get(sub)?.get(seq);
    if (m !== undefined) {
      this.leases.get(sub)!.delete(seq);
      this.pulls.get(sub)?.inHand.delete(m.seq);
    }
    return m;
  }

  /** Ack or terminate: either way the work-queue message is removed (acknowledged, and confirmed). */
  private async settle(sub: string, seq: number): Promise<void> {
    const m = this.take(sub, seq);
    if (m === undefined) return;
    const key = attemptKey(sub, seq);
    if (this.recorded.delete(key)) await this.attempts.delete(key).catch(() => undefined);
    await this.ackLater(m);
  }

  /** A retry is a new delivery message with the attempt and due time, then the old one is removed. */
  /**
   * A retry is a new delivery message with the attempt and due time, then the old one is removed. A kept
   * retry (ordered) stays leased here, kept alive, with its attempt and due time in the attempts bucket,
   * where a process that gets the message after a crash finds them. A failed write keeps the lease: the
   * worker tries again.
   */
  private async retry(
    sub: string,
    seq: number,
    attempt: number,
    dueAt: number,
    keep: boolean,
  ): Promise<void> {
    const m = this.leases.get(sub)?.get(seq);
    if (m === undefined) return;
    if (keep) {
      await this.attempts.put(attemptKey(sub, seq), JSON.stringify({ attempt, dueAt }));
      this.recorded.add(attemptKey(sub, seq));
      return;
    }
    await this.publishDelivery(sub, m.headers?.get(STREAM) ?? '', seq, attempt, dueAt, m.data);
    this.take(sub, seq);
    await this.ackLater(m);
  }

  private release(sub: string): void {
    this.stopPull(sub);
    const m = this.leases.get(sub);
    // Naks first, then the ownership goes: the next owner finds them waiting.
    if (m === undefined) {
      this.disown(sub);
      return;
    }
    for (const msg of m.values()) msg.nak();
    this.leases.delete(sub);
    this.disown(sub);
  }

  private async peek(sub: string, afterSeq: number, limit: number): Promise<PendingDelivery[]> {
    const out: PendingDelivery[] = [];
    for await (const m of this.storedDeliveries(this.dSubject(sub))) {
      const d = toDelivery(sub, m);
      if (d.seq > afterSeq) out.push(d);
    }
    return out.sort((a, b) => a.seq - b.seq).slice(0, limit);
  }

  private async dropSubscription(sub: string): Promise<void> {
    this.stopPull(sub);
    this.leases.delete(sub);
    this.disown(sub);
    this.consumers.delete(sub);
    await this.jsm.consumers.delete(this.deliveriesStream, `d${token(sub)}`).catch(() => undefined);
    await this.jsm.streams.purge(this.deliveriesStream, { filter: this.dSubject(sub) });
  }

  private async counts(): Promise<Map<string, number>> {
    const info = await this.jsm.streams.info(this.deliveriesStream, { subjects_filter: `${this.p}.d.>` });
    const out = new Map<string, number>();
    for (const [subject, n] of Object.entries(info.state.subjects ?? {})) {
      if (n > 0) out.set(untoken(subject.slice(`${this.p}.d.`.length)), n);
    }
    return out;
  }

  /** Pending deliveries per subscription, with the store time of the first one (a direct get each). */
  private async backlog(): Promise<Map<string, Backlog>> {
    const info = await this.jsm.streams.info(this.deliveriesStream, { subjects_filter: `${this.p}.d.>` });
    const out = new Map<string, Backlog>();
    await Promise.all(
      Object.entries(info.state.subjects ?? {}).map(async ([subject, n]) => {
        if (n <= 0) return;
        const first = await this.jsm.direct
          .getMessage(this.deliveriesStream, { seq: 1, next_by_subj: subject })
          .catch(() => null);
        out.set(untoken(subject.slice(`${this.p}.d.`.length)), {
          pending: n,
          oldestMs: first === null ? undefined : first.time.getTime(),
        });
      }),
    );
    return out;
  }

  /**
   * Removes events older than `olderThanMs` below the oldest one a pending delivery refers to (its
   * retry may read it again); resolves with how many were removed. Finding that one reads the pending
   * deliveries, so with more than COMPACT_SCAN_LIMIT of them a round removes nothing: events are kept
   * longer than the retention while subscribers are far behind.
   */
  async compact(olderThanMs: number): Promise<number> {
    const d = await this.jsm.streams.info(this.deliveriesStream);
    if (d.state.messages > COMPACT_SCAN_LIMIT) return 0;
    // The oldest event each stream's pending deliveries refer to.
    const oldest = new Map<string, number>();
    if (d.state.messages > 0) {
      for await (const m of this.storedDeliveries(`${this.p}.d.>`)) {
        const st = m.headers?.get(STREAM) ?? '';
        oldest.set(st, Math.min(oldest.get(st) ?? Number.MAX_SAFE_INTEGER, Number(m.headers?.get(SEQ))));
      }
    }
    const head = `${this.p}_EV_`;
    let removed = 0;
    for await (const name of this.jsm.streams.names()) {
      if (!name.startsWith(head)) continue;
      const stream = untoken(name.slice(head.length));
      // A stream with its own maximum age is trimmed by JetStream itself; dead letters stay until removed.
      if (this.retentions.get(stream)?.maxAgeMs !== undefined || stream.startsWith(DEAD_LETTER_PREFIX))
        continue;
      const info = await this.jsm.streams.info(name).catch(() => undefined);
      if (info === undefined || info.state.messages === 0) continue;
      let limit = Math.min(info.state.last_seq + 1, oldest.get(stream) ?? Number.MAX_SAFE_INTEGER);
      if (olderThanMs > 0)
        limit = Math.min(
          limit,
          await this.firstNewerThan(name, Date.now() - olderThanMs, info.state.first_seq, limit),
        );
      if (limit <= info.state.first_seq) continue;
      removed += (await this.jsm.streams.purge(name, { seq: limit })).purged;
    }
    return removed;
  }

  /** The first event sequence stored at or after `time` (a binary search over the stored range). */
  private async firstNewerThan(name: string, time: number, first: number, end: number): Promise<number> {
    let lo = first;
    let hi = end;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const m = await this.jsm.streams.getMessage(name, { seq: mid }).catch(() => null);
      if (m !== null && m.time.getTime() < time) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  // Resources

  private saw(revision: number): void {
    if (revision <= this.seenRevision) return;
    this.seenRevision = revision;
    const due = this.revisionWaiters.filter((x) => x.revision <= revision);
    if (due.length === 0) return;
    this.revisionWaiters = this.revisionWaiters.filter((x) => x.revision > revision);
    for (const x of due) x.resolve();
  }

  /** Resolves once the cache reflects every change the bucket held when called (by any process). */
  private async current(): Promise<void> {
    const last = (await this.kv.status()).streamInfo.state.last_seq;
    if (this.seenRevision >= last) return;
    await new Promise<void>((resolve, reject) => {
      const waiter = {
        revision: last,
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      };
      const t = setTimeout(() => {
        this.revisionWaiters = this.revisionWaiters.filter((x) => x !== waiter);
        reject(new Error(`the resource cache did not reach the bucket's revision ${last} in 10 s`));
      }, 10_000);
      this.revisionWaiters.push(waiter);
    });
  }

  private emit(e: ResourceEvent): void {
    for (const w of this.watchers) w(e);
  }

  private cachePut(key: string, body: ResourceObject, revision: number, notify = true): void {
    const prev = this.cache.get(key);
    if (prev !== undefined && prev.revision >= revision) return;
    const obj = { ...body, metadata: { ...body.metadata, resourceVersion: String(revision) } };
    this.cache.set(key, { obj, revision });
    if (notify) this.emit({ type: prev === undefined ? 'ADDED' : 'MODIFIED', object: obj });
  }

  private cacheDelete(key: string): void {
    const prev = this.cache.get(key);
    if (prev === undefined) return;
    this.cache.delete(key);
    this.emit({ type: 'DELETED', object: prev.obj });
  }

  private list(kind: string, ns?: string): ResourceObject[] {
    const prefix = ns === undefined ? `${kind}.` : `${kind}.${ns}.`;
    const out: ResourceObject[] = [];
    for (const [k, v] of this.cache) if (k.startsWith(prefix)) out.push(v.obj);
    return out.sort(
      (a, b) =>
        a.metadata.namespace.localeCompare(b.metadata.namespace) ||
        a.metadata.name.localeCompare(b.metadata.name),
    );
  }

  private async put(obj: ResourceObject, expected: string | undefined): Promise<ResourceObject> {
    const key = resourceKey(obj.kind, obj.metadata.namespace, obj.metadata.name);
    const body = JSON.stringify({ ...obj, metadata: { ...obj.metadata, resourceVersion: '' } });
    let revision: number;
    try {
      if (expected === undefined) revision = await this.kv.put(key, body);
      else if (expected === '') revision = await this.kv.create(key, body);
      else {
        const want = Number(expected);
        if (!Number.isSafeInteger(want)) throw new Error('not a revision');
        revision = await this.kv.update(key, body, want);
      }
    } catch (err) {
      if (expected === undefined) throw err;
      const have = this.cache.get(key)?.obj.metadata.resourceVersion ?? '';
      throw new ConflictError(
        `${obj.kind} ${obj.metadata.namespace}/${obj.metadata.name} is at resourceVersion '${have}', not '${expected}'; get it again and retry`,
      );
    }
    this.cachePut(key, JSON.parse(body) as ResourceObject, revision);
    return this.cache.get(key)!.obj;
  }

  private async deleteResource(kind: string, ns: string, name: string): Promise<ResourceObject | undefined> {
    const key = resourceKey(kind, ns, name);
    const cur = this.cache.get(key);
    if (cur === undefined) return undefined;
    await this.kv.delete(key);
    this.cacheDelete(key);
    return cur.obj;
  }

  /** A notice on a core NATS subject (not stored): every process of the mesh may listen. */
  notify(channel: string, payload: Uint8Array): void {
    if (this.closed || this.nc.isClosed()) return;
    this.nc.publish(`${this.p}.notice.${token(channel)}`, payload);
  }

  onNotice(channel: string, listener: (payload: Uint8Array) => void): () => void {
    const sub = this.nc.subscribe(`${this.p}.notice.${token(channel)}`, {
      callback: (err, m) => {
        if (err === null) listener(m.data);
      },
    });
    return () => sub.unsubscribe();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepAlive);
    clearInterval(this.renewer);
    this.publisher.close();
    for (const sub of [...this.leases.keys(), ...this.owned.keys(), ...this.pulls.keys()]) this.release(sub);
    for (const release of [...this.leaseReleases]) release();
    await this.nc.flush().catch(() => undefined);
    await Promise.all(this.letting);
    this.stopWatch?.();
    this.watchers.clear();
    await this.nc.drain().catch(() => undefined);
  }

  /** Deletes the streams and the bucket (tests, and `trellis` tooling that removes a mesh). */
  async destroy(): Promise<void> {
    const names: string[] = [];
    for await (const name of this.jsm.streams.names()) if (name.startsWith(`${this.p}_EV_`)) names.push(name);
    for (const name of names) await this.jsm.streams.delete(name).catch(() => undefined);
    await this.jsm.streams.delete(this.deliveriesStream).catch(() => undefined);
    await this.kv.destroy().catch(() => undefined);
    await this.owners.destroy().catch(() => undefined);
    await this.attempts.destroy().catch(() => undefined);
  }
}

/** Deletes every stream and bucket of a prefix (tests clean up after themselves with it). */
export async function destroyNatsStore(servers: string, prefix: string): Promise<void> {
  const s = (await openNatsStore({ servers, prefix })) as unknown as NatsStore;
  await s.destroy();
  await s.close();
}

/** A counting semaphore: at most `size` holders; the others wait in arrival order. */
class Window {
  private used = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly size: number) {}
  enter(): Promise<void> | undefined {
    if (this.used < this.size) {
      this.used++;
      return undefined;
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  leave(): void {
    const next = this.waiting.shift();
    if (next !== undefined) next();
    else this.used--;
  }
}
