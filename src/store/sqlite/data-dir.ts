/**
 * The data directory: created private (0700, files 0600: events are business data), and locked so that a
 * second server on the same directory refuses to start instead of delivering every pending event again.
 * The lock is an exclusive SQLite lock (fcntl) held for the life of the process: the system releases it
 * when the process dies, even by SIGKILL, so a crash never leaves a stale lock behind.
 * @module
 */
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

/** Thrown when another process holds the data directory. */
export class DataDirLockedError extends Error {
  constructor(dir: string, pid: string | undefined) {
    super(
      `another Trellis server${pid ? ` (pid ${pid})` : ''} is using the data directory ${dir}; ` +
        'stop it first, or give this one another --data-dir',
    );
    this.name = 'DataDirLockedError';
  }
}

/** A held data directory; `release` lets it go. */
export interface DataDirLock {
  release(): void;
}

/** Creates `dir` private if missing, makes its files private, and takes its lock. */
export function openDataDir(dir: string, files: readonly string[]): DataDirLock {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  // Tighten a directory this user owns (one made by an older version, or by hand with the default umask).
  if (typeof process.getuid === 'function' && st.uid === process.getuid() && (st.mode & 0o077) !== 0)
    chmodSync(dir, 0o700);
  const lock = takeLock(dir);
  for (const f of files) {
    const p = join(dir, f);
    // SQLite gives its -wal and -shm files the mode of the database file: create that one private.
    if (!existsSync(p)) closeSync(openSync(p, 'a', 0o600));
    chmodSync(p, 0o600);
  }
  return lock;
}

function takeLock(dir: string): DataDirLock {
  const file = join(dir, 'trellis.lock');
  const pidFile = join(dir, 'trellis.pid');
  if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
  const db = new Database(file);
  try {
    db.pragma('busy_timeout = 0');
    db.pragma('locking_mode = EXCLUSIVE');
    db.pragma('journal_mode = MEMORY');
    db.exec('CREATE TABLE IF NOT EXISTS owner (pid INTEGER)');
    // The first write takes the exclusive lock; locking_mode EXCLUSIVE keeps it until the connection closes.
    db.exec('BEGIN EXCLUSIVE');
    db.exec('DELETE FROM owner');
    db.prepare('INSERT INTO owner (pid) VALUES (?)').run(process.pid);
    db.exec('COMMIT');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY') {
      let pid: string | undefined;
      try {
        pid = readFileSync(pidFile, 'utf8').trim() || undefined;
      } catch {
        pid = undefined;
      }
      throw new DataDirLockedError(dir, pid);
    }
    throw err;
  }
  writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o600 });
  return { release: () => db.close() };
}
