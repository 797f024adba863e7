/**
 * The findings of probing Trellis as an attacker and as a careless user would (issue 7), each against a
 * real server: events that hurt, subscribers that misbehave, loops, numbers, and the data directory.
 */
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatEvent } from '../src/cloudevents/display.js';
import { run, serve } from './helpers/process.js';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'trellis-hard-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const idle = (s: Awaited<ReturnType<typeof testServer>>, key = 'default/b') =>
  expect.poll(() => s.dispatcher.inflight() + s.ingress.lag.get(key), { timeout: 20_000 }).toBe(0);

describe('events that hurt', () => {
  it('a LIKE pattern that backtracks in a RegExp costs nothing: the server keeps answering', async () => {
    await using sink = await startSink();
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('evil', {
        broker: 'b',
        filters: [{ cesql: "subject LIKE '%a%a%a%a%b'" }],
        subscriber: { uri: sink.url },
      }),
    );
    await s.apply(trigger('all', { broker: 'b', subscriber: { uri: sink.url } }));
    const res = await s.post('/default/b', ceHeaders('long', 't', { 'ce-subject': 'a'.repeat(5000) }), '{}');
    expect(res.status).toBe(202);
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    await sink.waitFor(1);
    await idle(s);
    // Only the Trigger without the filter got it.
    expect(sink.received).toHaveLength(1);
  });

  it('deeply nested events and filters get a 4xx with a code, never a 500', async () => {
    await using s = await testServer();
    await s.apply(broker('b'));
    const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    const ev = `{"specversion":"1.0","id":"1","source":"/s","type":"t","data":${deep(5000)}}`;
    for (const [ct, body] of [
      ['application/cloudevents+json', ev],
      ['application/cloudevents-batch+json', `[${ev}]`],
    ]) {
      const r = await s.post('/default/b', { 'content-type': ct! }, body);
      expect(r.status).toBe(400);
      expect(((await r.json()) as { code: string }).code).toBe('TRELLIS_ERR_MALFORMED_EVENT');
    }
    // Valid depths are accepted, and deep data in binary mode is opaque bytes.
    const ok = `{"specversion":"1.0","id":"2","source":"/s","type":"t","data":${deep(100)}}`;
    expect((await s.post('/default/b', { 'content-type': 'application/cloudevents+json' }, ok)).status).toBe(
      202,
    );
    expect((await s.post('/default/b', ceHeaders('3'), deep(5000))).status).toBe(202);
    for (const cesql of [
      `${'('.repeat(5000)}TRUE${')'.repeat(5000)}`,
      `${'NOT '.repeat(100_000)}TRUE`,
      `${'ABS('.repeat(20_000)}1${')'.repeat(20_000)}`,
    ]) {
      const r = await s.apply(
        trigger('t', { broker: 'b', filters: [{ cesql }], subscriber: { uri: 'http://127.0.0.1:9/' } }),
      );
      expect(r.status).toBe(400);
      const e = (await r.json()) as { code: string; field: string; message: string };
      expect(e.code).toBe('TRELLIS_ERR_RESOURCE_INVALID');
      expect(e.field).toBe('spec.filters[0].cesql');
    }
    // A filters list nested past the document limit (built as text: JSON.stringify itself would overflow).
    const nested = `${'{"not":'.repeat(5000)}{"exact":{"type":"x"}}${'}'.repeat(5000)}`;
    const r = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: `{"apiVersion":"eventing.knative.dev/v1","kind":"Trigger","metadata":{"name":"t"},"spec":{"broker":"b","subscriber":{"uri":"http://127.0.0.1:9/"},"filters":[${nested}]}}`,
    });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { code: string }).code).toBe('TRELLIS_ERR_RESOURCE_PARSE');
  });
});

describe('subscribers that misbehave', () => {
  it('the timeout bounds the whole response: an endless body is cut and the event dead-lettered', async () => {
    await using dls = await startSink();
    await using endless = await startSink((_r, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const t = setInterval(() => res.write('x'), 20);
      res.on('close', () => clearInterval(t));
    });
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('t', {
        broker: 'b',
        subscriber: { uri: endless.url },
        delivery: { timeout: 'PT0.5S', retry: 1, backoffDelay: 'PT0.01S', deadLetterSink: { uri: dls.url } },
      }),
    );
    expect((await s.post('/default/b', ceHeaders('e1'), '{}')).status).toBe(202);
    const [got] = await dls.waitFor(1, 20_000);
    expect(Buffer.from(String(got!.event.attrs['knativeerrordata']), 'base64').toString()).toMatch(
      /timed out/,
    );
    expect(endless.received).toHaveLength(2);
  });

  it('a hanging subscriber on the same host and port as a healthy one does not starve it', async () => {
    await using sink = await startSink((r, res) => {
      if (r.path !== '/hang') res.writeHead(202).end();
    });
    await using s = await testServer({ concurrency: 8 });
    await s.apply(broker('b'));
    await s.apply(
      trigger('hangs', {
        broker: 'b',
        subscriber: { uri: `${sink.url}hang` },
        delivery: { timeout: 'PT60S' },
      }),
    );
    await s.apply(trigger('healthy', { broker: 'b', subscriber: { uri: `${sink.url}ok` } }));
    for (let i = 0; i < 300; i++)
      expect((await s.post('/default/b', ceHeaders(`h${i}`), '{}')).status).toBe(202);
    await expect
      .poll(() => sink.received.filter((r) => r.path === '/ok').length, { timeout: 20_000 })
      .toBe(300);
    expect(sink.received.filter((r) => r.path === '/hang').length).toBe(8);
  });
});

describe('loops and amplification', () => {
  for (const how of ['uri', 'ref'] as const) {
    it(`a Trigger whose subscriber is its own Broker (by ${how}) stops after knativebrokerttl hops`, async () => {
      await using count = await startSink();
      await using s = await testServer();
      await s.apply(broker('b'));
      const subscriber =
        how === 'uri'
          ? { uri: `${s.url}/default/b` }
          : { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'b' } };
      await s.apply(trigger('loop', { broker: 'b', subscriber }));
      await s.apply(trigger('count', { broker: 'b', subscriber: { uri: count.url } }));
      expect(
        (await s.post('/default/b', ceHeaders('x', 't', { 'ce-knativebrokerttl': '20' }), '{}')).status,
      ).toBe(202);
      await expect.poll(() => s.dispatcher.stats.dropped, { timeout: 20_000 }).toBe(1);
      await idle(s);
      // The event went round 20 times (TTL 20 down to 1), then the loop ended.
      expect(count.received).toHaveLength(20);
    });
  }

  it('knativebrokerttl in binary mode is range-checked; a value above 255 is lowered to 255', async () => {
    await using s = await testServer();
    await s.apply(broker('b'));
    const big = await s.post(
      '/default/b',
      ceHeaders('a', 't', { 'ce-knativebrokerttl': '99999999999' }),
      '{}',
    );
    expect(big.status).toBe(400);
    expect(await big.json()).toMatchObject({
      code: 'TRELLIS_ERR_INVALID_EVENT',
      attribute: 'knativebrokerttl',
    });
    const neg = await s.post('/default/b', ceHeaders('b', 't', { 'ce-knativebrokerttl': '-1' }), '{}');
    expect(neg.status).toBe(400);
    expect(((await neg.json()) as { message: string }).message).toMatch(/is -1: it must not be negative/);
    const zero = await s.post('/default/b', ceHeaders('c', 't', { 'ce-knativebrokerttl': '0' }), '{}');
    expect(((await zero.json()) as { code: string }).code).toBe('TRELLIS_ERR_TTL_EXHAUSTED');
    expect(
      (await s.post('/default/b', ceHeaders('d', 't', { 'ce-knativebrokerttl': '100000' }), '{}')).status,
    ).toBe(202);
    const stored = await s.store.events.findEvent('default/b', 'd');
    expect(stored?.attrs['knativebrokerttl']).toBe(255);
  });

  it('a reply is one event: a batch of 100 is ignored, not multiplied', async () => {
    await using count = await startSink();
    await using replier = await startSink((r, res) => {
      const batch = Array.from({ length: 100 }, (_, i) => ({
        specversion: '1.0',
        id: `${String(r.event.attrs['id'])}-${i}`,
        source: '/r',
        type: 'ask',
      }));
      res.writeHead(200, { 'content-type': 'application/cloudevents-batch+json' }).end(JSON.stringify(batch));
    });
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('replies', {
        broker: 'b',
        filter: { attributes: { type: 'ask' } },
        subscriber: { uri: replier.url },
      }),
    );
    await s.apply(trigger('count', { broker: 'b', subscriber: { uri: count.url } }));
    expect((await s.post('/default/b', ceHeaders('q', 'ask'), '{}')).status).toBe(202);
    await replier.waitFor(1);
    await idle(s);
    expect(count.received).toHaveLength(1);
    expect(s.dispatcher.stats.replies).toBe(0);
  });
});

describe('numbers', () => {
  it('a long backoff waits: P30D means the second attempt is 60 days away', async () => {
    await using fails = await startSink((_r, res) => res.writeHead(500).end());
    await using s = await testServer();
    await s.apply(broker('b'));
    const t = (await (
      await s.apply(
        trigger('t', {
          broker: 'b',
          subscriber: { uri: fails.url },
          delivery: { retry: 5, backoffDelay: 'P30D' },
        }),
      )
    ).json()) as { metadata: { uid: string } };
    expect((await s.post('/default/b', ceHeaders('slow'), '{}')).status).toBe(202);
    await fails.waitFor(1);
    await expect.poll(async () => (await s.store.deliveries.peek(t.metadata.uid, 0, 10))[0]?.attempt).toBe(1);
    const [p] = await s.store.deliveries.peek(t.metadata.uid, 0, 10);
    expect(p!.dueAt - Date.now()).toBeGreaterThan(59 * 24 * 3600 * 1000);
    expect(fails.received).toHaveLength(1);
  });

  it('retry 1100 with backoffDelay PT0S makes 1101 attempts and stores every one of them', async () => {
    await using fails = await startSink((_r, res) => res.writeHead(500).end());
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(
      trigger('t', {
        broker: 'b',
        subscriber: { uri: fails.url },
        delivery: { retry: 1100, backoffDelay: 'PT0S' },
      }),
    );
    expect((await s.post('/default/b', ceHeaders('many'), '{}')).status).toBe(202);
    await expect.poll(() => s.dispatcher.stats.dropped, { timeout: 30_000 }).toBe(1);
    expect(fails.received).toHaveLength(1101);
  });

  it('display escapes control characters (no terminal escape injection)', () => {
    const out = formatEvent({
      attrs: { specversion: '1.0', id: '1', source: '/s', type: 'evil\u001b]0;owned\u0007', subject: 'a\nb' },
      data: Buffer.from('line1\n\u001b[2Jline2'),
    });
    expect(out).not.toMatch(/[\u001b\u0007]/);
    expect(out).toContain('type: evil\\u001b]0;owned\\u0007');
    expect(out).toContain('subject: a\\u000ab');
    expect(out).toContain('  \\u001b[2Jline2');
  });
});

describe('the data directory', () => {
  it('is private, and a second server on it is refused with a clear message', async () => {
    const data = join(dir, 'private');
    const first = await serve(['--data-dir', data]);
    try {
      expect(statSync(data).mode & 0o777).toBe(0o700);
      for (const f of readdirSync(data))
        expect([f, statSync(join(data, f)).mode & 0o777]).toEqual([f, 0o600]);
      const second = await run(['serve', '--port', '0', '--data-dir', data]);
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(
        new RegExp(`another Trellis server \\(pid ${first.child.pid}\\) is using the data directory`),
      );
    } finally {
      first.child.kill('SIGKILL');
      await first.exited();
    }
    // A server killed with SIGKILL leaves no stale lock.
    const again = await serve(['--data-dir', data]);
    again.child.kill('SIGTERM');
    const ex = await again.exited();
    expect(ex, again.output()).toEqual({ code: 0, signal: null });
  });
});

describe('the control plane at scale', () => {
  it('applies 10,000 Triggers in one file, then takes load on 32 connections without dropping one', async () => {
    const data = join(dir, 'scale');
    const file = join(dir, 'scale.yaml');
    let yaml = 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n';
    for (let i = 0; i < 10_000; i++)
      yaml += `---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t-${i}\nspec:\n  broker: default\n  filter:\n    attributes:\n      type: demo.t${i}\n  subscriber:\n    uri: http://127.0.0.1:9/\n`;
    writeFileSync(file, yaml);
    const server = await serve(['--data-dir', data]);
    try {
      const t0 = Date.now();
      const r = await run(['apply', '-f', file], { env: { TRELLIS_SERVER: server.url } });
      const applyMs = Date.now() - t0;
      expect(r.code).toBe(0);
      expect(r.stdout.trim().split('\n')).toHaveLength(10_001);
      const port = Number(new URL(server.url).port);
      const results = await loadOn32(port, 5000);
      expect(results.errors).toEqual({});
      expect(results.accepted).toBe(5000);
      // 2,000 Brokers one request each, under that load's backlog: no writer ever waits for a lock.
      for (let i = 0; i < 2000; i++) {
        const res = await fetch(`${server.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            apiVersion: 'eventing.knative.dev/v1',
            kind: 'Broker',
            metadata: { name: `b-${i}` },
          }),
        });
        expect(res.status).toBe(201);
      }
      expect(server.output()).not.toMatch(/locked|failed/);
      console.log(
        `scale: 10,000 Triggers applied in ${applyMs} ms; 5,000 requests on 32 connections, all 202`,
      );
    } finally {
      server.child.kill('SIGTERM');
      await server.exited();
    }
  }, 120_000);
});

/** 5,000 binary-mode POSTs over 32 keep-alive connections; counts 202s and client-side errors (EPIPE...). */
async function loadOn32(
  port: number,
  total: number,
): Promise<{ accepted: number; errors: Record<string, number> }> {
  const { Agent } = await import('node:http');
  const agent = new Agent({ keepAlive: true, maxSockets: 32 });
  let next = 0;
  let accepted = 0;
  const errors: Record<string, number> = {};
  const one = (i: number) =>
    new Promise<void>((resolve) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path: '/default/default',
          method: 'POST',
          agent,
          headers: { ...ceHeaders(`l${i}`, `demo.t${i % 10_000}`) },
        },
        (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 202) accepted++;
            else errors[String(res.statusCode)] = (errors[String(res.statusCode)] ?? 0) + 1;
            resolve();
          });
        },
      );
      req.on('error', (e: NodeJS.ErrnoException) => {
        errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
        resolve();
      });
      req.end('{}');
    });
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < total) await one(next++);
    }),
  );
  agent.destroy();
  return { accepted, errors };
}
