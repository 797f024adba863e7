/**
 * The embedded store: one SQLite file in the data directory (better-sqlite3, WAL, synchronous=FULL).
 * Writes that arrive within one turn of the event loop share one transaction (group commit).
 * @module
 */
import { mkdirSync } from 'node:fs';
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
} from '../types.js';

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

type Op =
  | {
      t: 'append';
      items: readonly AppendItem[];
      resolve: (seqs: number[]) => void;
      reject: (e: unknown) => void;
    }
  | { t: 'complete'; sub: string; seq: number; resolve: () => void; reject: (e: unknown) => void }
  | {
      t: 'reschedule';
      sub: string;
      seq: number;
      attempt: number;
      due: number;
      resolve: () => void;
      reject: (e: unknown) => void;
    };

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
  private closed = false;
  private readonly watchers = new Set<(e: ResourceEvent) => void>();
  private readonly st: ReturnType<SqliteStore['prepare']>;
  private resourceVersion: number;

  constructor(opts: SqliteStoreOptions) {
    let file = ':memory:';
    if (opts.dataDir !== ':memory:') {
      mkdirSync(opts.dataDir, { recursive: true });
      file = join(opts.dataDir, 'trellis.db');
    }
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    this.st = this.prepare();
    const rv = this.db.prepare(`SELECT value FROM meta WHERE key = 'resourceVersion'`).get() as
      | { value: string }
      | undefined;
    this.resourceVersion = rv ? Number(rv.value) : 0;
    this.events = {
      append: (items) => this.enqueueAppend(items),
      getEvent: async (seq) => {
        const row = this.st.getEvent.get(seq) as { attrs: string; data: Buffer | null } | undefined;
        return row ? rowToEvent(row.attrs, row.data) : undefined;
      },
    };
    this.deliveries = {
      pending: async (sub, afterSeq, limit) => this.pending(sub, afterSeq, limit),
      complete: (sub, seq) =>
        new Promise<void>((resolve, reject) => this.enqueue({ t: 'complete', sub, seq, resolve, reject })),
      reschedule: (sub, seq, attempt, due) =>
        new Promise<void>((resolve, reject) =>
          this.enqueue({ t: 'reschedule', sub, seq, attempt, due, resolve, reject }),
        ),
      dropSubscription: async (sub) => {
        this.st.dropSub.run(sub);
      },
      counts: async () => {
        const rows = this.st.counts.all() as { sub: string; n: number }[];
        return new Map(rows.map((r) => [r.sub, r.n]));
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
        const row = this.st.getRes.get(kind, ns, name) as { body: string } | undefined;
        if (!row) return undefined;
        this.st.delRes.run(kind, ns, name);
        const obj = JSON.parse(row.body) as ResourceObject;
        this.emit({ type: 'DELETED', object: obj });
        return obj;
      },
      watch: (listener) => {
        this.watchers.add(listener);
        return () => this.watchers.delete(listener);
      },
    };
  }

  private prepare() {
    const db = this.db;
    return {
      insertEvent: db.prepare('INSERT INTO events (stream, attrs, data, created) VALUES (?, ?, ?, ?)'),
      insertDelivery: db.prepare('INSERT INTO deliveries (sub, seq, attempt, due) VALUES (?, ?, 0, 0)'),
      deleteDelivery: db.prepare('DELETE FROM deliveries WHERE sub = ? AND seq = ?'),
      updateDelivery: db.prepare('UPDATE deliveries SET attempt = ?, due = ? WHERE sub = ? AND seq = ?'),
      pending: db.prepare(
        `SELECT d.seq AS seq, d.attempt AS attempt, d.due AS due, e.attrs AS attrs, e.data AS data
         FROM deliveries d JOIN events e ON e.seq = d.seq
         WHERE d.sub = ? AND d.seq > ? ORDER BY d.seq LIMIT ?`,
      ),
      getEvent: db.prepare('SELECT attrs, data FROM events WHERE seq = ?'),
      dropSub: db.prepare('DELETE FROM deliveries WHERE sub = ?'),
      counts: db.prepare('SELECT sub, COUNT(*) AS n FROM deliveries GROUP BY sub'),
      getRes: db.prepare('SELECT body FROM resources WHERE kind = ? AND namespace = ? AND name = ?'),
      listRes: db.prepare('SELECT body FROM resources WHERE kind = ? AND namespace = ? ORDER BY name'),
      listResAll: db.prepare('SELECT body FROM resources WHERE kind = ? ORDER BY namespace, name'),
      putRes: db.prepare(
        'INSERT INTO resources (kind, namespace, name, body) VALUES (?, ?, ?, ?) ' +
          'ON CONFLICT (kind, namespace, name) DO UPDATE SET body = excluded.body',
      ),
      delRes: db.prepare('DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?'),
      setMeta: db.prepare(
        'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      ),
      minPending: db.prepare('SELECT MIN(seq) AS m FROM deliveries'),
      compact: db.prepare('DELETE FROM events WHERE seq < ? AND created < ?'),
    };
  }

  async ready(): Promise<void> {
    if (this.closed) throw new Error('store is closed');
    this.db.prepare('SELECT 1').get();
  }

  private emit(e: ResourceEvent): void {
    for (const w of this.watchers) w(e);
  }

  private putResource(obj: ResourceObject, expected: string | undefined): ResourceObject {
    const { kind } = obj;
    const { namespace, name } = obj.metadata;
    const tx = this.db.transaction(() => {
      const row = this.st.getRes.get(kind, namespace, name) as { body: string } | undefined;
      const current = row ? (JSON.parse(row.body) as ResourceObject) : undefined;
      if (expected !== undefined) {
        const have = current?.metadata.resourceVersion ?? '';
        if (have !== expected) {
          throw new ConflictError(
            `${kind} ${namespace}/${name} is at resourceVersion '${have}', not '${expected}'; get it again and retry`,
          );
        }
      }
      this.resourceVersion++;
      const stored: ResourceObject = {
        ...obj,
        metadata: { ...obj.metadata, resourceVersion: String(this.resourceVersion) },
      };
      this.st.putRes.run(kind, namespace, name, JSON.stringify(stored));
      this.st.setMeta.run('resourceVersion', String(this.resourceVersion));
      return { stored, existed: current !== undefined };
    });
    const { stored, existed } = tx();
    this.emit({ type: existed ? 'MODIFIED' : 'ADDED', object: stored });
    return stored;
  }

  private pending(sub: string, afterSeq: number, limit: number): PendingDelivery[] {
    const rows = this.st.pending.all(sub, afterSeq, limit) as {
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
    return new Promise((resolve, reject) => this.enqueue({ t: 'append', items, resolve, reject }));
  }

  private enqueue(op: Op): void {
    if (this.closed) {
      op.reject(new Error('store is closed'));
      return;
    }
    this.queue.push(op);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Writes every queued operation in one transaction, then settles their promises. */
  private flush(): void {
    this.flushScheduled = false;
    const ops = this.queue;
    if (ops.length === 0) return;
    this.queue = [];
    const now = Date.now();
    const results: number[][] = [];
    const st = this.st;
    try {
      this.db.transaction(() => {
        for (const op of ops) {
          if (op.t === 'append') {
            const seqs: number[] = [];
            for (const item of op.items) {
              const r = st.insertEvent.run(
                item.stream,
                JSON.stringify(item.event.attrs),
                item.event.data ?? null,
                now,
              );
              const seq = Number(r.lastInsertRowid);
              for (const sub of item.deliveries) st.insertDelivery.run(sub, seq);
              seqs.push(seq);
            }
            results.push(seqs);
          } else if (op.t === 'complete') {
            st.deleteDelivery.run(op.sub, op.seq);
          } else {
            st.updateDelivery.run(op.attempt, op.due, op.sub, op.seq);
          }
        }
      })();
    } catch (err) {
      for (const op of ops) op.reject(err);
      return;
    }
    let i = 0;
    for (const op of ops) {
      if (op.t === 'append') op.resolve(results[i++]!);
      else op.resolve();
    }
  }

  async compact(olderThanMs: number): Promise<number> {
    const row = this.st.minPending.get() as { m: number | null };
    const below = row.m ?? Number.MAX_SAFE_INTEGER;
    return this.st.compact.run(below, Date.now() - olderThanMs).changes;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.watchers.clear();
    this.db.close();
  }
}

function rowToEvent(attrs: string, data: Buffer | null): CloudEvent {
  const a = JSON.parse(attrs) as Record<string, AttributeValue>;
  return data === null ? { attrs: a } : { attrs: a, data };
}
