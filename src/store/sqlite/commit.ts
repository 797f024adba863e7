/**
 * The group-commit write path of the SQLite store: one transaction applies a batch of operations. The same
 * function runs in the writer worker thread (see writer.ts) and, for in-memory stores, on the main thread.
 * @module
 */
import type Database from 'better-sqlite3';

/**
 * One write: append an event (with its deliveries), complete a delivery, reschedule one, compact, put or
 * delete a resource, or drop a subscription's deliveries. Every write of the store goes through here, so
 * one connection (the writer's) holds the write lock and no other ever waits for it.
 */
export type WireOp =
  | [op: 'a', stream: string, attrs: string, data: Uint8Array | null, deliveries: string[]]
  | [op: 'c', sub: string, seq: number]
  | [op: 'r', sub: string, seq: number, attempt: number, due: number]
  | [
      op: 'x',
      createdBefore: number,
      limit: number,
      /** Streams with their own retention: [stream, createdBefore or null, maxBytes or null]. */
      own: [stream: string, createdBefore: number | null, maxBytes: number | null][],
    ]
  | [
      op: 'p',
      kind: string,
      namespace: string,
      name: string,
      body: string,
      expectedVersion: string | null,
      resourceVersion: number,
    ]
  | [op: 'd', kind: string, namespace: string, name: string]
  | [op: 's', sub: string]
  | [op: 'e', stream: string, seq: number]
  | [op: 'q', sub: string, seqs: number[]];

/** Which ops answer with a result: appends (the sequence number), compaction, resource put and delete. */
export function resultCount(op: WireOp): number {
  const k = op[0];
  return k === 'a' || k === 'x' || k === 'p' || k === 'd' || k === 'e' ? 1 : 0;
}

/**
 * Prepares the statements and returns a function that applies a batch in one transaction and returns one
 * result per op that has one ({@link resultCount}), in order: an append's sequence number; how many
 * events a compaction removed; for a put, 1 (created), 2 (replaced) or `conflict:<stored version>`; for a
 * delete, the removed body or 0. Self-contained: it is also sent to the worker as text.
 */
export function makeCommit(db: Database.Database): (ops: WireOp[], now: number) => (number | string)[] {
  const insertEvent = db.prepare('INSERT INTO events (stream, attrs, data, created) VALUES (?, ?, ?, ?)');
  const insertDelivery = db.prepare('INSERT INTO deliveries (sub, seq, attempt, due) VALUES (?, ?, 0, 0)');
  const deleteDelivery = db.prepare('DELETE FROM deliveries WHERE sub = ? AND seq = ?');
  const updateDelivery = db.prepare('UPDATE deliveries SET attempt = ?, due = ? WHERE sub = ? AND seq = ?');
  const minPending = db.prepare('SELECT MIN(seq) AS m FROM deliveries');
  // Delivered events (below every pending delivery) older than the retention, oldest first, a bounded number.
  const compact = db.prepare(
    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < ? AND created < ? AND substr(stream, 1, 12) != 'deadletters/' AND stream NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?)",
  );
  // A stream with its own retention: by age, and by size (the newest events up to maxBytes stay).
  const compactStream = db.prepare(
    'DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE stream = ? AND seq < ? AND created < ? ORDER BY seq LIMIT ?)',
  );
  const sizeCut = db.prepare(
    'SELECT seq FROM (SELECT seq, SUM(length(attrs) + ifnull(length(data), 0)) OVER (ORDER BY seq DESC) AS total FROM events WHERE stream = ?) WHERE total > ? ORDER BY seq DESC LIMIT 1',
  );
  const compactBelow = db.prepare(
    'DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE stream = ? AND seq < ? AND seq <= ? ORDER BY seq LIMIT ?)',
  );
  const removeEvent = db.prepare('DELETE FROM events WHERE stream = ? AND seq = ?');
  const getRes = db.prepare('SELECT body FROM resources WHERE kind = ? AND namespace = ? AND name = ?');
  const putRes = db.prepare(
    'INSERT INTO resources (kind, namespace, name, body) VALUES (?, ?, ?, ?) ' +
      'ON CONFLICT (kind, namespace, name) DO UPDATE SET body = excluded.body',
  );
  const delRes = db.prepare('DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?');
  const setMeta = db.prepare(
    'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
  );
  const dropSub = db.prepare('DELETE FROM deliveries WHERE sub = ?');
  const replayDelivery = db.prepare(
    'INSERT OR IGNORE INTO deliveries (sub, seq, attempt, due) SELECT ?, seq, 0, 0 FROM events WHERE seq = ?',
  );
  return db.transaction((ops: WireOp[], now: number) => {
    const seqs: (number | string)[] = [];
    for (const op of ops) {
      if (op[0] === 'a') {
        const data = op[3] === null ? null : Buffer.from(op[3].buffer, op[3].byteOffset, op[3].byteLength);
        const seq = Number(insertEvent.run(op[1], op[2], data, now).lastInsertRowid);
        for (const sub of op[4]) insertDelivery.run(sub, seq);
        seqs.push(seq);
      } else if (op[0] === 'c') {
        deleteDelivery.run(op[1], op[2]);
      } else if (op[0] === 'e') {
        seqs.push(removeEvent.run(op[1], op[2]).changes);
      } else if (op[0] === 'x') {
        const m = (minPending.get() as { m: number | null }).m ?? Number.MAX_SAFE_INTEGER;
        const own = op[3];
        let n = compact.run(m, op[1], JSON.stringify(own.map((o) => o[0])), op[2]).changes;
        for (const [stream, before, maxBytes] of own) {
          if (before !== null) n += compactStream.run(stream, m, before, op[2]).changes;
          if (maxBytes !== null) {
            const cut = (sizeCut.get(stream, maxBytes) as { seq: number } | undefined)?.seq;
            if (cut !== undefined) n += compactBelow.run(stream, m, cut, op[2]).changes;
          }
        }
        seqs.push(n);
      } else if (op[0] === 'p') {
        const row = getRes.get(op[1], op[2], op[3]) as { body: string } | undefined;
        const have = row
          ? (JSON.parse(row.body) as { metadata: { resourceVersion: string } }).metadata.resourceVersion
          : '';
        if (op[5] !== null && have !== op[5]) {
          seqs.push(`conflict:${have}`);
          continue;
        }
        putRes.run(op[1], op[2], op[3], op[4]);
        setMeta.run('resourceVersion', String(op[6]));
        seqs.push(row ? 2 : 1);
      } else if (op[0] === 'd') {
        const row = getRes.get(op[1], op[2], op[3]) as { body: string } | undefined;
        if (row) delRes.run(op[1], op[2], op[3]);
        seqs.push(row ? row.body : 0);
      } else if (op[0] === 's') {
        dropSub.run(op[1]);
      } else if (op[0] === 'q') {
        for (const seq of op[2]) replayDelivery.run(op[1], seq);
      } else {
        updateDelivery.run(op[3], op[4], op[1], op[2]);
      }
    }
    return seqs;
  });
}
