/**
 * Where the SQLite store's group commits run. For a file, a worker thread with its own connection: the
 * main thread keeps reading requests and sending deliveries while a transaction is made durable (fsync),
 * and the next batch gathers meanwhile. For `:memory:`, the main thread's own connection.
 * @module
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { makeCommit, type WireOp } from './commit.js';

export interface Writer {
  /** Applies a batch in one durable transaction; resolves with the ops' results (see makeCommit). */
  commit(ops: WireOp[], now: number): Promise<(number | string)[]>;
  close(): Promise<void>;
}

/** Runs commits on the given connection, on this thread. */
export function inlineWriter(db: Database.Database): Writer {
  const commit = makeCommit(db);
  return {
    commit: async (ops, now) => commit(ops, now),
    close: async () => undefined,
  };
}

const WORKER_SOURCE = (makeCommitSource: string) => `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.pragma('busy_timeout = 5000');
const makeCommit = ${makeCommitSource};
const commit = makeCommit(db);
parentPort.on('message', (m) => {
  if (m.close) {
    db.close();
    parentPort.postMessage({ closed: true });
    return;
  }
  try {
    parentPort.postMessage({ id: m.id, seqs: commit(m.ops, m.now) });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String((err && err.message) || err) });
  }
});
`;

/** Runs commits in a worker thread with its own connection to `file`. */
export function workerWriter(file: string): Writer {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  const worker = new Worker(WORKER_SOURCE(makeCommit.toString()), {
    eval: true,
    workerData: { driver, file },
  });
  const pending = new Map<
    number,
    { resolve: (s: (number | string)[]) => void; reject: (e: Error) => void }
  >();
  let next = 0;
  let dead: Error | undefined;
  let onClosed: (() => void) | undefined;
  worker.on('message', (m: { id?: number; seqs?: (number | string)[]; error?: string; closed?: boolean }) => {
    if (m.closed) {
      onClosed?.();
      return;
    }
    const p = pending.get(m.id!);
    if (!p) return;
    pending.delete(m.id!);
    if (m.error !== undefined) p.reject(new Error(m.error));
    else p.resolve(m.seqs!);
  });
  const die = (err: Error) => {
    dead = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on('error', die);
  worker.on('exit', (code) => die(new Error(`the store writer thread exited (code ${code})`)));
  return {
    commit(ops, now) {
      if (dead) return Promise.reject(dead);
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, ops, now });
      });
    },
    async close() {
      if (dead) return;
      await new Promise<void>((resolve) => {
        onClosed = resolve;
        worker.postMessage({ close: true });
      });
      await worker.terminate();
    },
  };
}
