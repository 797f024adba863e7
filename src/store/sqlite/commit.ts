/**
 * The group-commit write path of the SQLite store: one transaction applies a batch of operations. The same
 * function runs in the writer worker thread (see writer.ts) and, for in-memory stores, on the main thread.
 * @module
 */
import type Database from 'better-sqlite3';

/** One write: append an event (with its deliveries), complete a delivery, or reschedule one. */
export type WireOp =
  | [op: 'a', stream: string, attrs: string, data: Uint8Array | null, deliveries: string[]]
  | [op: 'c', sub: string, seq: number]
  | [op: 'r', sub: string, seq: number, attempt: number, due: number]
  | [op: 'x', createdBefore: number, limit: number];

/**
 * Prepares the statements and returns a function that applies a batch in one transaction and returns the
 * sequence numbers of the appended events in order (a compaction adds how many events it removed).
 * Self-contained: it is also sent to the worker as text.
 */
export function makeCommit(db: Database.Database): (ops: WireOp[], now: number) => number[] {
  const insertEvent = db.prepare('INSERT INTO events (stream, attrs, data, created) VALUES (?, ?, ?, ?)');
  const insertDelivery = db.prepare('INSERT INTO deliveries (sub, seq, attempt, due) VALUES (?, ?, 0, 0)');
  const deleteDelivery = db.prepare('DELETE FROM deliveries WHERE sub = ? AND seq = ?');
  const updateDelivery = db.prepare('UPDATE deliveries SET attempt = ?, due = ? WHERE sub = ? AND seq = ?');
  const minPending = db.prepare('SELECT MIN(seq) AS m FROM deliveries');
  // Delivered events (below every pending delivery) older than the retention, oldest first, a bounded number.
  const compact = db.prepare(
    'DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < ? AND created < ? ORDER BY seq LIMIT ?)',
  );
  return db.transaction((ops: WireOp[], now: number) => {
    const seqs: number[] = [];
    for (const op of ops) {
      if (op[0] === 'a') {
        const data = op[3] === null ? null : Buffer.from(op[3].buffer, op[3].byteOffset, op[3].byteLength);
        const seq = Number(insertEvent.run(op[1], op[2], data, now).lastInsertRowid);
        for (const sub of op[4]) insertDelivery.run(sub, seq);
        seqs.push(seq);
      } else if (op[0] === 'c') {
        deleteDelivery.run(op[1], op[2]);
      } else if (op[0] === 'x') {
        const m = (minPending.get() as { m: number | null }).m;
        seqs.push(compact.run(m ?? Number.MAX_SAFE_INTEGER, op[1], op[2]).changes);
      } else {
        updateDelivery.run(op[3], op[4], op[1], op[2]);
      }
    }
    return seqs;
  });
}
