/**
 * The NATS JetStream adapter runs the same store conformance suite as the SQLite one, against the NATS
 * server of this machine (NATS_URL, default nats://127.0.0.1:4222). Each test uses streams of its own
 * (a prefix derived from its directory) and removes them afterwards.
 */
import { createHash } from 'node:crypto';
import { Socket } from 'node:net';
import { afterAll } from 'vitest';
import { destroyNatsStore, openNatsStore } from '../src/store/nats/nats-store.js';
import { IN_CI } from './helpers/shared.js';
import { runStoreConformance } from './store-conformance.js';

const URL_ = process.env['NATS_URL'] ?? 'nats://127.0.0.1:4222';

async function reachable(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = new Socket();
    s.setTimeout(1000);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
    s.connect(Number(u.port || 4222), u.hostname);
  });
}

const up = await reachable(URL_);
if (!up) {
  const msg = `NATS is not reachable at ${URL_}: start it with 'nats-server -js' (the machine notes give the command)`;
  if (IN_CI) throw new Error(msg);
  console.warn(`SKIPPED: ${msg}`);
}

const prefixes = new Set<string>();
const prefixOf = (dir: string) => `t${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`;

if (up) {
  runStoreConformance('nats', async (dir) => {
    const prefix = prefixOf(dir);
    prefixes.add(prefix);
    return openNatsStore({ servers: URL_, prefix });
  });
  afterAll(async () => {
    for (const p of prefixes) await destroyNatsStore(URL_, p);
  });
}
