/** Live tails: the events a Broker stores, as Server-Sent Events, filtered on the server. */
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AdminClient, type TailMessage } from '../src/client/admin-client.js';
import { findKind } from '../src/resources/kinds.js';
import { broker, ceHeaders, testServer } from './helpers/server.js';
import { ROOT } from './helpers/shared.js';

const BROKER = findKind('broker')!;

/** Collects what a tail yields until `n` messages came; the tail is then stopped. */
async function collect(it: AsyncGenerator<TailMessage>, n: number, abort: AbortController) {
  const got: TailMessage[] = [];
  for await (const m of it) {
    got.push(m);
    if (got.length >= n) break;
  }
  abort.abort();
  return got;
}

describe('trellis tail', () => {
  it('streams the events a Broker stores from now on, through a CESQL filter evaluated by the server', async () => {
    await using s = await testServer();
    expect((await s.apply(broker('default'))).status).toBe(201);
    // Stored before the tail opens: not shown.
    expect((await s.post('/default/default', ceHeaders('before', 'order.created'), '{}')).status).toBe(202);
    const client = new AdminClient(s.url);
    const abort = new AbortController();
    const tail = client.tail(BROKER, 'default', 'default', "type LIKE 'order.%'", abort.signal);
    // The stream opens a moment after the request: send until two events show (no sleep).
    let n = 0;
    const sent: string[] = [];
    const pump = setInterval(() => {
      const id = `o-${n++}`;
      sent.push(id);
      void s.post('/default/default', ceHeaders(id, 'order.created'), `{"n":${n}}`);
      void s.post('/default/default', ceHeaders(`x-${n}`, 'other.thing'), '{}');
    }, 20);
    const got = await collect(tail, 2, abort);
    clearInterval(pump);
    const events = got.map((m) => (m.type === 'event' ? m : undefined));
    expect(events.every((e) => e !== undefined)).toBe(true);
    for (const e of events) expect(String(e!.event['type'])).toMatch(/^order\./);
    expect(events.map((e) => e!.event['id'])).not.toContain('before');
    expect(sent).toContain(events[0]!.event['id']);
    expect(events[1]!.seq).toBeGreaterThan(events[0]!.seq);
    expect(events[0]!.event['knativearrivaltime']).toBeDefined();
  });

  it('the CLI prints them as JSON lines, and stops on Ctrl-C', async () => {
    await using s = await testServer();
    expect((await s.apply(broker('orders'))).status).toBe(201);
    const child = spawn(
      process.execPath,
      [
        join(ROOT, 'dist', 'cli', 'main.js'),
        'tail',
        'default/orders',
        '-o',
        'json',
        '--filter',
        "subject = 'vip'",
      ],
      { env: { ...process.env, TRELLIS_SERVER: s.url }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString();
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await expect.poll(() => err, { timeout: 15_000 }).toContain('following Broker default/orders');
    // Events until one shows on stdout (the stream opens a moment after the line above).
    await expect
      .poll(
        async () => {
          await s.post('/default/orders', { ...ceHeaders('vip-1'), 'ce-subject': 'vip' }, '{"big":true}');
          await s.post('/default/orders', { ...ceHeaders('plain-1'), 'ce-subject': 'plain' }, '{}');
          return out;
        },
        { timeout: 15_000 },
      )
      .toContain('"id":"vip-1"');
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    const lines = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.every((l) => l['subject'] === 'vip')).toBe(true);
    expect(lines[0]!['data']).toEqual({ big: true });
  });

  it('refuses a bad filter, a missing Broker, a caller without the token, and more than 64 tails', async () => {
    await using s = await testServer({ adminToken: 'tail-token-1' });
    const auth = { authorization: 'Bearer tail-token-1' };
    const path = '/apis/eventing.knative.dev/v1/namespaces/default/brokers/default/tail';
    expect((await fetch(`${s.url}${path}`)).status).toBe(401);
    const missing = await fetch(`${s.url}${path}`, { headers: auth });
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { message: string }).message).toContain(
      'Broker default/default does not exist',
    );
    const created = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify(broker('default')),
    });
    expect(created.status).toBe(201);
    const bad = await fetch(`${s.url}${path}?filter=${encodeURIComponent("type = 'a' AND (")}`, {
      headers: auth,
    });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { code: string; message: string };
    expect(body.code).toBe('TRELLIS_ERR_BAD_REQUEST');
    expect(body.message).toContain('filter: CESQL does not parse');
    // Bounded like a Trigger's CESQL: nesting over 64 is refused; a URL over 16 KiB never gets in.
    const nested = encodeURIComponent(`${'('.repeat(100)}true${')'.repeat(100)}`);
    expect((await fetch(`${s.url}${path}?filter=${nested}`, { headers: auth })).status).toBe(400);
    const long = await fetch(
      `${s.url}${path}?filter=${encodeURIComponent(`'${'a'.repeat(20_000)}' = type`)}`,
      {
        headers: auth,
      },
    );
    expect(long.status).toBe(431);

    const aborts: AbortController[] = [];
    try {
      for (let i = 0; i < 64; i++) {
        const a = new AbortController();
        aborts.push(a);
        const r = await fetch(`${s.url}${path}`, { headers: auth, signal: a.signal });
        expect(r.status).toBe(200);
        expect(r.headers.get('content-type')).toContain('text/event-stream');
      }
      const over = await fetch(`${s.url}${path}`, { headers: auth });
      expect(over.status).toBe(429);
      expect(over.headers.get('retry-after')).toBe('5');
      expect(((await over.json()) as { code: string }).code).toBe('TRELLIS_ERR_TOO_MANY_TAILS');
      // A closed tail frees its place.
      aborts.pop()!.abort();
      await expect
        .poll(async () => {
          const r = await fetch(`${s.url}${path}`, { headers: auth });
          if (r.status === 200) await r.body?.cancel();
          return r.status;
        })
        .toBe(200);
    } finally {
      for (const a of aborts) a.abort();
    }
  });

  it('a reader that falls more than 1 MiB behind loses events, is told how many, and ingress is not held up', {
    timeout: 60_000,
  }, async () => {
    await using s = await testServer();
    expect((await s.apply(broker('default'))).status).toBe(201);
    // A reader that reads nothing until it has been sent 25 MiB.
    const chunks: string[] = [];
    const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
      const req = request(
        `${s.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/default/tail`,
        resolve,
      );
      req.on('error', reject);
      req.end();
    });
    expect(res.statusCode).toBe(200);
    res.pause();
    res.on('data', (c: Buffer) => chunks.push(c.toString()));
    // The socket's buffers (a few MiB on loopback) fill first, then the server's own passes 1 MiB. Every
    // send is still accepted at once.
    const data = JSON.stringify({ pad: 'x'.repeat(64 * 1024) });
    const sent = 400;
    for (let i = 0; i < sent; i++) {
      const r = await s.post('/default/default', ceHeaders(`big-${i}`), data);
      expect(r.status).toBe(202);
    }
    res.resume();
    await expect.poll(() => chunks.join('').includes('event: dropped'), { timeout: 20_000 }).toBe(true);
    const text = chunks.join('');
    const dropped = Number(/event: dropped\ndata: \{"dropped":(\d+)\}/.exec(text)![1]);
    const shown = text.split('event: cloudevent').length - 1;
    expect(dropped).toBeGreaterThan(0);
    expect(shown + dropped).toBeLessThanOrEqual(sent);
    res.destroy();
  });
});
