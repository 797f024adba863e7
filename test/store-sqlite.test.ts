/** The SQLite adapter runs the shared store conformance suite, plus its own durability settings. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { expect, it } from 'vitest';
import { openSqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { runStoreConformance } from './store-conformance.js';

runStoreConformance('sqlite', async (dir) => openSqliteStore({ dataDir: dir }));

it('sqlite: one file in the data directory, in WAL mode', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-sqlite-'));
  const s = openSqliteStore({ dataDir: join(dir, 'nested') });
  await s.ready();
  await s.close();
  const db = new Database(join(dir, 'nested', 'trellis.db'), { readonly: true });
  expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
  db.close();
  rmSync(dir, { recursive: true, force: true });
});
