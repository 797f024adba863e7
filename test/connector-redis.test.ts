/** The Redis Streams connector against this machine's Redis (REDIS_URL, default redis://127.0.0.1:6379). */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { entryToEvent, eventToFields } from '../src/connectors/redis.js';
import { run, serve } from './helpers/process.js';
import { serverUp } from './helpers/reachable.js';
import { broker, ceHeaders, conditionOf, testServer } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';

const up = await serverUp(REDIS_URL, 6379, 'Redis');

const source = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'sources.trellis.dev/v1alpha1',
  kind: 'RedisStreamSource',
  metadata: { name, namespace: 'default' },
  spec,
});
const sinkDoc = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'sinks.trellis.dev/v1alpha1',
  kind: 'RedisStreamSink',
  metadata: { name, namespace: 'default' },
  spec,
});

describe('the Redis entry mapping', () => {
  it('binary and structured entries round-trip; other entries are wrapped with their fields as JSON', () => {
    const e = {
      attrs: {
        specversion: '1.0',
        id: 'r1',
        source: '/s',
        type: 't',
        datacontenttype: 'application/octet-stream',
      },
      data: Buffer.from([0, 255, 1]),
    };
    const pairs = (f: (string | Buffer)[]) => {
      const out: [string, Buffer][] = [];
      for (let i = 0; i < f.length; i += 2)
        out.push([String(f[i]), Buffer.from(f[i + 1] as string | Buffer)]);
      return out;
    };
    expect(entryToEvent('s', '1-0', pairs(eventToFields(e)))).toEqual(e);
    expect(entryToEvent('s', '1-0', pairs(eventToFields(e, 'structured'))).attrs).toEqual(e.attrs);
    const w = entryToEvent('orders', '1700000000000-0', [['user', Buffer.from('ann')]]);
    expect(w.attrs).toMatchObject({
      type: 'dev.trellis.redis.entry',
      source: 'redis://orders',
      id: '1700000000000-0',
      subject: 'orders',
    });
    expect(JSON.parse(w.data!.toString())).toEqual({ user: 'ann' });
    const broken = entryToEvent('orders', '1-1', [['ce_specversion', Buffer.from('1.0')]]);
    expect(String(broken.attrs['trellisinvalid'])).toContain('required');
  });
});

describe.runIf(up)('RedisStreamSource and RedisStreamSink on this machine', () => {
  const tag = randomBytes(4).toString('hex');
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(REDIS_URL);
  });
  afterAll(async () => {
    const keys = await redis.keys(`trellis-test-${tag}-*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  it('source: entries into Trellis, acknowledged once stored; and the connection comes back after it is killed', async () => {
    const stream = `trellis-test-${tag}-in`;
    await using s = await testServer();
    await using sink = await startSink();
    const r = await s.apply(
      source('in', { address: REDIS_URL, stream, startId: '0', sink: { uri: sink.url } }),
    );
    expect(r.status, await r.text()).toBeLessThan(300);
    const path = '/apis/sources.trellis.dev/v1alpha1/namespaces/default/redisstreamsources/in';
    await expect.poll(() => conditionOf(s.url, path, 'Ready')).toMatchObject({ status: 'True' });
    await redis.xadd(
      stream,
      '*',
      ...(eventToFields({
        attrs: { specversion: '1.0', id: 'b1', source: '/shop', type: 'order.created' },
        data: Buffer.from('x'),
      }) as string[]),
    );
    await redis.xadd(stream, '*', 'user', 'ann', 'action', 'login');
    const got = await sink.waitFor(2, 15_000);
    expect(got.map((x) => x.event.attrs['type']).sort()).toEqual([
      'dev.trellis.redis.entry',
      'order.created',
    ]);
    await expect
      .poll(async () => ((await redis.xpending(stream, 'trellis-default-in')) as [number])[0])
      .toBe(0);
    // Kill Trellis's connections to Redis: it reconnects and goes on.
    const list = String(await redis.client('LIST'));
    for (const line of list.split('\n').filter((l) => l.includes('name=trellis-default-in'))) {
      const id = /id=(\d+)/.exec(line)?.[1];
      if (id !== undefined) await redis.client('KILL', 'ID', id);
    }
    await expect
      .poll(
        async () => {
          await redis.xadd(stream, '*', 'after', 'kill');
          return sink.received.some((x) => x.event.data?.toString().includes('"after"'));
        },
        { timeout: 20_000 },
      )
      .toBe(true);
  });

  it('an entry over --max-body-bytes is dropped (and acknowledged), and the entries after it go on', async () => {
    const stream = `trellis-test-${tag}-big`;
    await using s = await testServer({ maxBodyBytes: 65536 });
    await using sink = await startSink();
    await s.apply(source('big', { address: REDIS_URL, stream, startId: '0', sink: { uri: sink.url } }));
    await expect
      .poll(() =>
        conditionOf(
          s.url,
          '/apis/sources.trellis.dev/v1alpha1/namespaces/default/redisstreamsources/big',
          'Ready',
        ),
      )
      .toMatchObject({ status: 'True' });
    await redis.xadd(stream, '*', 'blob', 'x'.repeat(100_000));
    await redis.xadd(stream, '*', 'small', 'yes');
    const [got] = await sink.waitFor(1, 15_000);
    expect(JSON.parse(got!.event.data!.toString())).toEqual({ small: 'yes' });
    await expect
      .poll(async () => ((await redis.xpending(stream, 'trellis-default-big')) as [number])[0])
      .toBe(0);
    expect(sink.received).toHaveLength(1);
  });

  it('sink: a Trigger appends events to a stream, binary or structured', async () => {
    const bin = `trellis-test-${tag}-bin`;
    const st = `trellis-test-${tag}-st`;
    await using s = await testServer();
    await s.apply(broker('default'));
    for (const [name, stream, mode] of [
      ['to-bin', bin, 'binary'],
      ['to-st', st, 'structured'],
    ] as const) {
      expect(
        (await s.apply(sinkDoc(name, { address: REDIS_URL, stream, mode, maxLen: 1000 }))).status,
      ).toBeLessThan(300);
      await s.apply({
        apiVersion: 'eventing.knative.dev/v1',
        kind: 'Trigger',
        metadata: { name, namespace: 'default' },
        spec: {
          broker: 'default',
          subscriber: { ref: { apiVersion: 'sinks.trellis.dev/v1alpha1', kind: 'RedisStreamSink', name } },
        },
      });
      await expect
        .poll(() =>
          conditionOf(
            s.url,
            `/apis/sinks.trellis.dev/v1alpha1/namespaces/default/redisstreamsinks/${name}`,
            'Ready',
          ),
        )
        .toMatchObject({ status: 'True' });
    }
    await s.settled();
    const res = await fetch(`${s.url}/default/default`, {
      method: 'POST',
      headers: ceHeaders('to-redis'),
      body: '{"a":1}',
    });
    expect(res.status).toBe(202);
    await expect.poll(async () => (await redis.xlen(bin)) + (await redis.xlen(st))).toBe(2);
    const binFields = ((await redis.xrange(bin, '-', '+')) as [string, string[]][])[0]![1];
    expect(binFields).toEqual(expect.arrayContaining(['ce_id', 'to-redis', 'data', '{"a":1}']));
    const stFields = ((await redis.xrange(st, '-', '+')) as [string, string[]][])[0]![1];
    expect(stFields[0]).toBe('cloudevent');
    expect((JSON.parse(stFields[1]!) as { id: string }).id).toBe('to-redis');
  });

  it("kill -9 of Trellis mid-stream: after a restart every entry arrives (a dead consumer's entries are claimed)", {
    timeout: 120_000,
  }, async () => {
    const stream = `trellis-test-${tag}-kill`;
    const dir = mkdtempSync(join(tmpdir(), 'trellis-redis-'));
    try {
      await using sink = await startSink((_r, res) => setTimeout(() => res.writeHead(202).end(), 2));
      const args = ['--data-dir', join(dir, 'd')];
      let t = await serve(args);
      const yaml = `apiVersion: sources.trellis.dev/v1alpha1\nkind: RedisStreamSource\nmetadata: {name: k}\nspec:\n  address: ${REDIS_URL}\n  stream: ${stream}\n  startId: '0'\n  claimIdle: PT1S\n  sink: {uri: '${sink.url}'}\n`;
      expect((await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: t.url } })).code).toBe(0);
      const p = redis.pipeline();
      for (let i = 0; i < 300; i++) p.xadd(stream, '*', 'n', String(i));
      await p.exec();
      await expect.poll(() => sink.received.length, { timeout: 20_000 }).toBeGreaterThan(20);
      t.child.kill('SIGKILL');
      await t.exited();
      t = await serve(args);
      const got = () =>
        new Set(sink.received.map((x) => (JSON.parse(x.event.data!.toString()) as { n: string }).n));
      await expect.poll(() => got().size, { timeout: 60_000 }).toBe(300);
      console.log(`Redis source across kill -9: 300 entries, ${sink.received.length - 300} delivered twice`);
      t.child.kill('SIGTERM');
      await t.exited();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad specs naming the field', async () => {
    await using s = await testServer();
    const sink = { uri: 'http://127.0.0.1:9/' };
    const cases: [Record<string, unknown>, string][] = [
      [{ stream: 'x', sink }, 'spec.address: is required'],
      [{ address: 'redis://u:p@127.0.0.1:6379', stream: 'x', sink }, 'must not carry credentials'],
      [{ address: 'http://127.0.0.1:6379', stream: 'x', sink }, 'must be redis:// or rediss://'],
      [{ address: REDIS_URL, stream: 'a b', sink }, 'spec.stream: must be 1-512 printable'],
      [{ address: REDIS_URL, stream: 'x', startId: '5', sink }, 'spec.startId'],
      [
        { address: REDIS_URL, stream: 'x', auth: { password: 'p' }, sink },
        'spec.auth.password: secrets are not written',
      ],
    ];
    for (const [spec, message] of cases) {
      const r = await s.apply(source('bad', spec));
      expect([r.status, ((await r.json()) as { message: string }).message]).toEqual([
        400,
        expect.stringContaining(message),
      ]);
    }
  });
});
