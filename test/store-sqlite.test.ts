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

it('sqlite: a stream with its own retention keeps its history by age and by size; the others follow --retention', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-sqlite-'));
  const s = openSqliteStore({ dataDir: dir });
  try {
    const ev = (id: string, stream: string) => ({
      stream,
      event: { attrs: { specversion: '1.0', id, source: '/s', type: 't' }, data: Buffer.alloc(100) },
      deliveries: [],
    });
    await s.events.append(['1', '2', '3'].map((id) => ev(id, 'ns/plain')));
    await s.events.append(['1', '2', '3'].map((id) => ev(id, 'ns/kept')));
    await s.events.append(['1', '2', '3', '4', '5'].map((id) => ev(id, 'ns/small')));
    await s.configureStream!('ns/kept', { maxAgeMs: 3_600_000 });
    // Each event is about 160 bytes: two fit in 400.
    await s.configureStream!('ns/small', { maxBytes: 400 });
    // --retention PT0S: delivered events go at once, except where a stream keeps its own.
    await s.compact(0);
    const ids = async (stream: string) =>
      (await s.events.read(stream, 0, 100)).map((x) => x.event.attrs['id']);
    expect(await ids('ns/plain')).toEqual([]);
    expect(await ids('ns/kept')).toEqual(['1', '2', '3']);
    expect(await ids('ns/small')).toEqual(['4', '5']);
    // Back to the default: the stream's history follows --retention again.
    await s.configureStream!('ns/kept', undefined);
    await s.compact(0);
    expect(await ids('ns/kept')).toEqual([]);
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
