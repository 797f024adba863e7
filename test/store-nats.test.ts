/**
 * The NATS JetStream adapter runs the same store conformance suite as the SQLite one, against the NATS
 * server of this machine (NATS_URL, default nats://127.0.0.1:4222). Each test uses streams of its own
 * (a prefix derived from its directory) and removes them afterwards.
 */
import { createHash } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
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

describe.runIf(up)('the NATS store in a cluster', () => {
  it('current(): once it resolves, one process reads what another has just written or deleted', async () => {
    const prefix = prefixOf(`current-${process.pid}-${Date.now()}`);
    prefixes.add(prefix);
    const a = await openNatsStore({ servers: URL_, prefix });
    const b = await openNatsStore({ servers: URL_, prefix });
    try {
      const obj = (name: string) => ({
        apiVersion: 'eventing.knative.dev/v1',
        kind: 'Trigger',
        metadata: {
          name,
          namespace: 'default',
          uid: `uid-${name}`,
          generation: 1,
          resourceVersion: '',
          creationTimestamp: new Date().toISOString(),
        },
        spec: {},
      });
      for (let i = 0; i < 20; i++) {
        await a.resources.put(obj(`t${i}`));
        if (i % 2 === 1) await a.resources.delete('Trigger', 'default', `t${i - 1}`);
        // No waiting for the watch: current() is the wait.
        await b.resources.current();
        expect((await b.resources.list('Trigger')).map((o) => o.metadata.name).sort()).toEqual(
          (await a.resources.list('Trigger')).map((o) => o.metadata.name).sort(),
        );
      }
      await b.resources.current();
      await a.resources.current();
    } finally {
      await a.close();
      await b.close();
    }
  });
});
