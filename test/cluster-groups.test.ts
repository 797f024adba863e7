/**
 * Consumer groups in cluster mode: two processes on one NATS JetStream, a member of one group on each;
 * events published to either process are shared between the two members, every one delivered; a group
 * made on one process replays on it from what JetStream retains.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Delivery, TrellisClient } from '../src/client/trellis.js';
import { destroyNatsStore } from '../src/store/nats/nats-store.js';
import { NATS_URL, natsUp } from './helpers/nats.js';
import { run, type Served, serve } from './helpers/process.js';

const up = await natsUp();

describe.runIf(up)('consumer groups across two processes on one NATS', () => {
  const prefix = `g${randomBytes(5).toString('hex')}`;
  let dir: string;
  const procs: Served[] = [];
  const clients: TrellisClient[] = [];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trellis-cluster-groups-'));
    for (let i = 0; i < 2; i++)
      procs.push(
        await serve([
          '--store',
          'nats',
          '--nats-url',
          NATS_URL,
          '--nats-prefix',
          prefix,
          '--retention',
          'PT1H',
          '--data-dir',
          join(dir, `p${i}`),
        ]),
      );
    const r = await run(['apply', '-f', '-'], {
      input: 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n',
      env: { TRELLIS_SERVER: procs[0]!.url },
    });
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    for (const p of procs) {
      p.child.kill('SIGTERM');
      await p.exited();
    }
    await destroyNatsStore(NATS_URL, prefix).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  const client = (url: string) => {
    const c = new TrellisClient({ url });
    clients.push(c);
    return c;
  };
  const collect = (c: TrellisClient, group: string, from?: string) => {
    const sub = c.subscribe('default/default', { group, from });
    const got: Delivery[] = [];
    void (async () => {
      for await (const d of sub) {
        got.push(d);
        d.ack();
      }
    })();
    return { sub, got };
  };

  it('members on two processes share one group; every event published to either is delivered', {
    timeout: 120_000,
  }, async () => {
    const [a, b] = [client(procs[0]!.url), client(procs[1]!.url)];
    // The Broker is on both processes before anyone subscribes there.
    await expect
      .poll(async () => (await b.get('broker', 'default').catch(() => undefined))?.status !== undefined, {
        timeout: 20_000,
      })
      .toBe(true);
    const ma = collect(a, 'shared');
    const mb = collect(b, 'shared');
    await Promise.all([ma.sub.ready, mb.sub.ready]);
    for (let i = 0; i < 200; i += 20) {
      const batch = Array.from({ length: 20 }, (_, j) => ({ id: `c${i + j}`, source: '/t', type: 't' }));
      await (i % 40 === 0 ? a : b).publish('default/default', batch);
    }
    const all = () => new Set([...ma.got, ...mb.got].map((d) => d.event.id));
    await expect.poll(() => all().size, { timeout: 60_000 }).toBe(200);
    console.log(
      `cluster group: 200 events, ${ma.got.length} to the member on process 1, ${mb.got.length} on process 2`,
    );
    expect(ma.got.length).toBeGreaterThan(0);
    expect(mb.got.length).toBeGreaterThan(0);
    ma.sub.close();
    mb.sub.close();
  });

  it('request-reply across processes: the requester on one, the responder on the other', {
    timeout: 60_000,
  }, async () => {
    const [a, b] = [client(procs[0]!.url), client(procs[1]!.url)];
    const responder = b.respond(
      'default/default',
      { group: 'pricing', filter: "type = 'price.asked'" },
      (e) => ({
        source: '/pricing',
        type: 'price.given',
        data: { for: e.id },
      }),
    );
    try {
      await responder.ready;
      // The group is in process 1's data plane too before the request goes there.
      await expect
        .poll(
          async () =>
            (await a.get('consumergroup', 'pricing').catch(() => undefined))?.status?.['conditions'] !==
            undefined,
          {
            timeout: 20_000,
          },
        )
        .toBe(true);
      const reply = await a.request(
        'default/default',
        { id: 'ask-x', source: '/shop', type: 'price.asked' },
        { timeout: 20_000 },
      );
      expect(reply).toMatchObject({ type: 'price.given', data: { for: 'ask-x' } });
    } finally {
      responder.close();
    }
  });

  it('a new group replays what JetStream retains, on whichever process it is made', {
    timeout: 120_000,
  }, async () => {
    const b = client(procs[1]!.url);
    const late = collect(b, 'late', 'earliest');
    await late.sub.ready;
    // The 200 events of the first test (the request and its reply are in the history too).
    await expect
      .poll(() => new Set(late.got.map((d) => d.event.id).filter((id) => /^c\d+$/.test(id))).size, {
        timeout: 60_000,
      })
      .toBe(200);
    late.sub.close();
  });
});
