/**
 * The embedded store: one SQLite file in the data directory (better-sqlite3, WAL, synchronous=FULL).
 * Writes that arrive within one turn of the event loop share one transaction (group commit).
 * @module
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { AttributeValue, CloudEvent } from '../../cloudevents/event.js';
import {
  type AppendItem,
  ConflictError,
  type DeliveryState,
  type EventLog,
  type PendingDelivery,
  type ResourceEvent,
  type ResourceObject,
  type ResourceStore,
  type Store,
  type StreamRetention,
} from '../types.js';
import { resultCount, type WireOp } from './commit.js';
import { type DataDirLock, openDataDir } from './data-dir.js';
import { inlineWriter, type Writer, workerWriter } from './writer.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  stream TEXT NOT NULL,
  attrs TEXT NOT NULL,
  data BLOB,
  created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
  sub TEXT NOT NULL,
  seq INTEGER NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 0,
  due INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (sub, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_seq ON deliveries (seq);
CREATE TABLE IF NOT EXISTS resources (
  kind TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (kind, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
`;

/** Transactions queued at the writer at once (measured: 2 keeps the writer busy without shrinking batches). */
const MAX_INFLIGHT = 2;

interface Op {
  wire: WireOp[];
  /** How many results the op's wire ops answer with (see resultCount). */
  results: number;
  resolve: (results: (number | string)[]) => void;
  reject: (e: unknown) => void;
}

export interface SqliteStoreOptions {
  /** Directory that holds `trellis.db`; created if missing. `:memory:` keeps everything in memory (tests). */
  dataDir: string;
}

/** Opens (or creates) the SQLite store in `dataDir`. */
export function openSqliteStore(opts: SqliteStoreOptions): Store {
  return new SqliteStore(opts);
}

class SqliteStore implements Store {
  readonly events: EventLog;
  readonly deliveries: DeliveryState;
  readonly resources: ResourceStore;
  private readonly db: Database.Database;
  private queue: Op[] = [];
  private flushScheduled = false;
  /** Transactions handed to the writer and not yet durable. */
  private readonly inflight = new Set<Promise<void>>();
  /** Appended events queued or in flight at the writer. */
  private pendingEvents = 0;
  private closed = false;
  private readonly writer: Writer;
  private readonly watchers = new Set<(e: ResourceEvent) => void>();
  private readonly st: ReturnType<SqliteStore['prepare']>;
  private resourceVersion: number;
  private readonly dirLock: DataDirLock | undefined;

  constructor(opts: SqliteStoreOptions) {
    let file = ':memory:';
    if (opts.dataDir !== ':memory:') {
      this.dirLock = openDataDir(opts.dataDir, ['trellis.db']);
      file = join(opts.dataDir, 'trellis.db');
    }
    try {
      this.db = new Database(file);
    } catch (err) {
      this.dirLock?.release();
      throw err;
    }
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    this.st = this.prepare();
    this.writer =
      file === ':memory:' || process.env['TRELLIS_SQLITE_WRITER'] === 'inline'
        ? inlineWriter(this.db)
        : workerWriter(file);
    const rv = this.db.prepare(`SELECT value FROM meta WHERE key = 'resourceVersion'`).get() as
      | { value: string }
      | undefined;
    this.resourceVersion = rv ? Number(rv.value) : 0;
    this.events = {
      append: (items) => this.enqueueAppend(items),
      pendingWrites: () => this.pendingEvents,
      findEvent: async (stream, id, source) => {
        const rows = this.st.findEvent.all(stream, id) as { attrs: string; data: Buffer | null }[];
        for (const r of rows) {
          const e = rowToEvent(r.attrs, r.data);
          if (source === undefined || e.attrs['source'] === source) return e;
        }
        return undefined;
      },
      read: async (stream, afterSeq, max) => {
        const rows = this.st.readStream.all(afterSeq, stream, max) as {
          seq: number;
          attrs: string;
          data: Buffer | null;
        }[];
        return rows.map((r) => ({ seq: r.seq, event: rowToEvent(r.attrs, r.data) }));
      },
      getEvent: async (stream, seq) => {
        const row = this.st.getEvent.get(seq, stream) as { attrs: string; data: Buffer | null } | undefined;
        return row ? rowToEvent(row.attrs, row.data) : undefined;
      },
      remove: async (stream, seqs) => {
        const done = await Promise.all(seqs.map((seq) => this.write(['e', stream, seq])));
        return done.reduce<number>((n, r) => n + Number(r ?? 0), 0);
      },
    };
    // Leases: rows up to a subscription's cursor have been handed out; after a release (or a restart)
    // the cursor starts again at 0 and every pending row is fetched again.
    const cursors = new Map<string, number>();
    // Replayed deliveries below a subscription's cursor, not handed out yet (ascending): fetched first.
    const replayed = new Map<string, number[]>();
    this.deliveries = {
      fetch: async (sub, max) => {
        const behind = replayed.get(sub);
        if (behind !== undefined) {
          const take = behind.splice(0, max);
          if (behind.length === 0) replayed.delete(sub);
          const want = new Set(take);
          const rows = this.pendingBetween(sub, take[0]!, take[take.length - 1]!).filter((r) =>
            want.has(r.seq),
          );
          if (rows.length > 0) return rows;
        }
        const rows = this.pending(sub, cursors.get(sub) ?? 0, max);
        if (rows.length > 0) cursors.set(sub, rows[rows.length - 1]!.seq);
        return rows;
      },
      enqueue: async (sub, _stream, events) => {
        if (events.length === 0) return;
        const seqs = events.map((e) => e.seq).sort((a, b) => a - b);
        await this.write(['q', sub, seqs]);
        const cursor = cursors.get(sub) ?? 0;
        const behind = seqs.filter((s) => s <= cursor);
        if (behind.length === 0) return;
        const merged = [...new Set([...(replayed.get(sub) ?? []), ...behind])].sort((a, b) => a - b);
        replayed.set(sub, merged);
      },
      claim: (sub, seq) => {
        // The store makes a commit visible a moment before the append resolves: a fetch may have
        // returned this delivery already. Commits apply in order, so everything up to the cursor has.
        if (seq <= (cursors.get(sub) ?? 0)) return false;
        cursors.set(sub, seq);
        return true;
      },
      ack: (sub, seq) => this.write(['c', sub, seq]).then(() => undefined),
      terminate: (sub, seq) => this.write(['c', sub, seq]).then(() => undefined),
      retry: (sub, seq, attempt, due) => this.write(['r', sub, seq, attempt, due]).then(() => undefined),
      release: (sub) => {
        cursors.delete(sub);
        replayed.delete(sub);
      },
      peek: async (sub, afterSeq, limit) => this.pending(sub, afterSeq, limit),
      dropSubscription: (sub) => {
        cursors.delete(sub);
        replayed.delete(sub);
        return this.write(['s', sub]).then(() => undefined);
      },
      counts: async () => {
        const rows = this.st.counts.all() as { sub: string; n: number }[];
        return new Map(rows.map((r) => [r.sub, r.n]));
      },
      backlog: async () => {
        const rows = this.st.backlog.all() as { sub: string; n: number; created: number | null }[];
        return new Map(rows.map((r) => [r.sub, { pending: r.n, oldestMs: r.created ?? undefined }]));
      },
    };
    this.resources = {
      get: async (kind, ns, name) => {
        const row = this.st.getRes.get(kind, ns, name) as { body: string } | undefined;
        return row ? (JSON.parse(row.body) as ResourceObject) : undefined;
      },
      list: async (kind, ns) => {
        const rows = (ns === undefined ? this.st.listResAll.all(kind) : this.st.listRes.all(kind, ns)) as {
          body: string;
        }[];
        return rows.map((r) => JSON.parse(r.body) as ResourceObject);
      },
      put: async (obj, expected) => this.putResource(obj, expected),
      delete: async (kind, ns, name) => {
        const body = await this.write(['d', kind, ns, name]);
        if (typeof body !== 'string') return undefined;
        const obj = JSON.parse(body) as ResourceObject;
        this.emit({ type: 'DELETED', object: obj });
        return obj;
      },
      watch: (listener) => {
        this.watchers.add(listener);
        return () => this.watchers.delete(listener);
      },
      // One process holds the database: reads are always current.
      current: async () => undefined,
    };
  }

  private prepare() {
    const db = this.db;
    return {
      pending: db.prepare(
        `SELECT d.seq AS seq, d.attempt AS attempt, d.due AS due, e.attrs AS attrs, e.data AS data
         FROM deliveries d JOIN events e ON e.seq = d.seq
         WHERE d.sub = ? AND d.seq > ? ORDER BY d.seq LIMIT ?`,
      ),
      pendingBetween: db.prepare(
        `SELECT d.seq AS seq, d.attempt AS attempt, d.due AS due, e.attrs AS attrs, e.data AS data
         FROM deliveries d JOIN events e ON e.seq = d.seq
         WHERE d.sub = ? AND d.seq >= ? AND d.seq <= ? ORDER BY d.seq`,
      ),
      getEvent: db.prepare('SELECT attrs, data FROM events WHERE seq = ? AND stream = ?'),
      // Replay reads: a scan in sequence order (no index on stream: it would cost every append).
      readStream: db.prepare(
        'SELECT seq, attrs, data FROM events WHERE seq > ? AND stream = ? ORDER BY seq LIMIT ?',
      ),
      // A debugging lookup (trellis explain --event-id): a scan of the stream, newest first.
      findEvent: db.prepare(
        "SELECT attrs, data FROM events WHERE stream = ? AND json_extract(attrs, '$.id') = ? ORDER BY seq DESC LIMIT 100",
      ),
      counts: db.prepare('SELECT sub, COUNT(*) AS n FROM deliveries GROUP BY sub'),
      // The oldest pending delivery is the one with the lowest seq (seqs grow with time).
      backlog: db.prepare(
        'SELECT d.sub, d.n, e.created FROM (SELECT sub, COUNT(*) AS n, MIN(seq) AS s FROM deliveries GROUP BY sub) d LEFT JOIN events e ON e.seq = d.s',
      ),
      getRes: db.prepare('SELECT body FROM resources WHERE kind = ? AND namespace = ? AND name = ?'),
      listRes: db.prepare('SELECT body FROM resources WHERE kind = ? AND namespace = ? ORDER BY name'),
      listResAll: db.prepare('SELECT body FROM resources WHERE kind = ? ORDER BY namespace, name'),
    };
  }

  async ready(): Promise<void> {
    if (this.closed) throw new Error('store is closed');
    this.db.prepare('SELECT 1').get();
  }

  private emit(e: ResourceEvent): void {
    for (const w of this.watchers) w(e);
  }

  /**
   * Stores a resource through the writer (the only connection that writes), checking the expected version
   * inside the same transaction. Puts arriving together share one commit, as appends do.
   */
  private async putResource(obj: ResourceObject, expected: string | undefined): Promise<ResourceObject> {
    const { kind } = obj;
    const { namespace, name } = obj.metadata;
    this.resourceVersion++;
    const stored: ResourceObject = {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: String(this.resourceVersion) },
    };
    const r = await this.write([
      'p',
      kind,
      namespace,
      name,
      JSON.stringify(stored),
      expected ?? null,
      this.resourceVersion,
    ]);
    if (typeof r === 'string') {
      const have = r.slice('conflict:'.length);
      throw new ConflictError(
        `${kind} ${namespace}/${name} is at resourceVersion '${have}', not '${expected}'; get it again and retry`,
      );
    }
    this.emit({ type: r === 2 ? 'MODIFIED' : 'ADDED', object: stored });
    return stored;
  }

  /** Queues one write op and resolves with its result (undefined for ops without one). */
  private write(op: WireOp): Promise<number | string | undefined> {
    const results = resultCount(op);
    return new Promise((resolve, reject) =>
      this.enqueue({ wire: [op], results, resolve: (r) => resolve(r[0]), reject }),
    );
  }

  private pending(sub: string, afterSeq: number, limit: number): PendingDelivery[] {
    return this.toDeliveries(sub, this.st.pending.all(sub, afterSeq, limit));
  }

  private pendingBetween(sub: string, from: number, to: number): PendingDelivery[] {
    return this.toDeliveries(sub, this.st.pendingBetween.all(sub, from, to));
  }

  private toDeliveries(sub: string, all: unknown[]): PendingDelivery[] {
    const rows = all as {
      seq: number;
      attempt: number;
      due: number;
      attrs: string;
      data: Buffer | null;
    }[];
    return rows.map((r) => ({
      subscription: sub,
      seq: r.seq,
      attempt: r.attempt,
      dueAt: r.due,
      event: rowToEvent(r.attrs, r.data),
    }));
  }

  private enqueueAppend(items: readonly AppendItem[]): Promise<number[]> {
    const wire: WireOp[] = items.map((it) => [
      'a',
      it.stream,
      JSON.stringify(it.event.attrs),
      it.event.data ?? null,
      it.deliveries as string[],
    ]);
    this.pendingEvents += wire.length;
    const done = () => {
      this.pendingEvents -= wire.length;
    };
    return new Promise((resolve, reject) =>
      this.enqueue({
        wire,
        results: wire.length,
        resolve: (seqs) => {
          done();
          resolve(seqs as number[]);
        },
        reject: (err) => {
          done();
          reject(err);
        },
      }),
    );
  }

  private enqueue(op: Op): void {
    if (this.closed) {
      op.reject(new Error('store is closed'));
      return;
    }
    this.queue.push(op);
    if (!this.flushScheduled && this.inflight.size < MAX_INFLIGHT) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
  }

  /**
   * Group commit: everything queued goes in one transaction. Up to MAX_INFLIGHT transactions are handed to
   * the writer at once (it applies them in order), so it never waits for the main thread between two;
   * what arrives meanwhile forms the next batch.
   */
  private flush(): void {
    if (this.inflight.size >= MAX_INFLIGHT || this.queue.length === 0) return;
    const ops = this.queue;
    this.queue = [];
    const wire: WireOp[] = [];
    for (const op of ops) for (const w of op.wire) wire.push(w);
    const p = this.writer.commit(wire, Date.now()).then(
      (seqs) => {
        let i = 0;
        for (const op of ops) {
          const n = op.results;
          op.resolve(n === 0 ? [] : seqs.slice(i, i + n));
          i += n;
        }
      },
      (err: unknown) => {
        for (const op of ops) op.reject(err);
      },
    );
    this.inflight.add(p);
    void p.finally(() => {
      this.inflight.delete(p);
      this.flush();
    });
  }

  /** Streams with their own retention (a Broker's or Channel's annotations). */
  private readonly retentions = new Map<string, StreamRetention>();
  /** When sizes were last measured: a size limit costs a scan of the stream, so it is checked every 30 s. */
  private sizesCheckedAt = 0;

  /**
   * Removes up to 10,000 delivered events per call (and per stream with its own retention), in the
   * writer's own transaction (never on this thread): older than `olderThanMs`, or than the stream's own
   * age; beyond a stream's size, the oldest first. Events with a pending delivery stay.
   */
  async compact(olderThanMs: number): Promise<number> {
    const now = Date.now();
    const sizes = now - this.sizesCheckedAt >= 30_000;
    if (sizes) this.sizesCheckedAt = now;
    const own: [string, number | null, number | null][] = [...this.retentions].map(([stream, r]) => [
      stream,
      r.maxAgeMs === undefined ? null : now - r.maxAgeMs,
      sizes && r.maxBytes !== undefined ? r.maxBytes : null,
    ]);
    return Number((await this.write(['x', now - olderThanMs, 10_000, own])) ?? 0);
  }

  /** Sets a stream's retention (by age, by size); undefined: the server's `--retention`. */
  async configureStream(stream: string, r: StreamRetention | undefined): Promise<void> {
    if (r === undefined || (r.maxAgeMs === undefined && r.maxBytes === undefined))
      this.retentions.delete(stream);
    else {
      this.retentions.set(stream, r);
      this.sizesCheckedAt = 0;
    }
  }

  /** A stream is gone: its own retention goes with it (its events leave as the default retention says). */
  async dropStream(stream: string): Promise<void> {
    this.retentions.delete(stream);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.inflight.size > 0 || this.queue.length > 0) {
      this.flush();
      await Promise.all(this.inflight);
    }
    await this.writer.close();
    this.watchers.clear();
    this.db.close();
    this.dirLock?.release();
  }
}

function rowToEvent(attrs: string, data: Buffer | null): CloudEvent {
  const a = JSON.parse(attrs) as Record<string, AttributeValue>;
  return data === null ? { attrs: a } : { attrs: a, data };
}
