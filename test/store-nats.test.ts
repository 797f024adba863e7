/**
 * The NATS JetStream adapter runs the same store conformance suite as the SQLite one, against the NATS
 * server of this machine (NATS_URL, default nats://127.0.0.1:4222). Each test uses streams of its own
 * (a prefix derived from its directory) and removes them afterwards.
 */
import { createHash } from 'node:crypto';
import { afterAll } from 'vitest';
import { destroyNatsStore, openNatsStore } from '../src/store/nats/nats-store.js';
import { NATS_URL, natsUp } from './helpers/nats.js';
import { runStoreConformance } from './store-conformance.js';

const URL_ = NATS_URL;
const up = await natsUp();

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
