/** Signed deliveries (Standard Webhooks): a plain webhook receiver can verify that Trellis sent an event. */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

/** A receiver's check, written from the Standard Webhooks spec (not from Trellis's code). */
function verify(
  secret: string,
  headers: Record<string, string | string[] | undefined>,
  body: string,
): boolean {
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret);
  const id = String(headers['webhook-id']);
  const ts = String(headers['webhook-timestamp']);
  if (Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  const want = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest();
  return String(headers['webhook-signature'])
    .split(' ')
    .some((sig) => {
      const [v, b64] = sig.split(',');
      const got = Buffer.from(b64 ?? '', 'base64');
      return v === 'v1' && got.length === want.length && timingSafeEqual(got, want);
    });
}

/** An HTTP receiver keeping each request's headers and exact body. */
async function receiver(failFirst: boolean) {
  const got: { headers: Record<string, string | string[] | undefined>; body: string }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ headers: req.headers, body: Buffer.concat(chunks).toString() });
      res.writeHead(failFirst && got.length === 1 ? 503 : 202).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/`,
    got,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const annotated = (name: string, uri: string, secret: string, extra: Record<string, unknown> = {}) => ({
  ...trigger(name, {
    broker: 'default',
    filter: { attributes: { type: name } },
    subscriber: { uri },
    ...extra,
  }),
  metadata: { name, namespace: 'default', annotations: { 'trellis.dev/webhook-secret': secret } },
});

describe('signed deliveries', () => {
  it('sign each delivery over the whole event (structured mode), with one webhook-id across retries', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-sign-'));
    const fileSecret = `whsec_${Buffer.from('a-32-byte-key-for-the-webhooks!!').toString('base64')}`;
    writeFileSync(join(dir, 'secret'), `${fileSecret}\n`);
    process.env['TRELLIS_TEST_WEBHOOK_SECRET'] = 'plain-secret-from-env';
    // Raw receivers: verifying needs the exact body. The first refuses its first request (a retry).
    const flaky = await receiver(true);
    const plain = await receiver(false);
    try {
      await using s = await testServer();
      expect((await s.apply(broker('default'))).status).toBe(201);
      const fast = { delivery: { retry: 2, backoffPolicy: 'linear', backoffDelay: 'PT0.01S' } };
      expect(
        (await s.apply(annotated('from-file', flaky.url, `file:${join(dir, 'secret')}`, fast))).status,
      ).toBe(201);
      expect(
        (await s.apply(annotated('from-env', plain.url, 'env:TRELLIS_TEST_WEBHOOK_SECRET'))).status,
      ).toBe(201);
      expect((await s.post('/default/default', ceHeaders('f-1', 'from-file'), '{"amount":42}')).status).toBe(
        202,
      );
      expect((await s.post('/default/default', ceHeaders('e-1', 'from-env'), '{"n":1}')).status).toBe(202);
      await expect.poll(() => flaky.got.length, { timeout: 10_000 }).toBe(2);
      for (const r of flaky.got) {
        expect(r.headers['content-type']).toContain('application/cloudevents+json');
        expect(verify(fileSecret, r.headers, r.body)).toBe(true);
        // The signature covers the attributes: change one and it no longer verifies.
        expect(verify(fileSecret, r.headers, r.body.replace('"from-file"', '"forged"'))).toBe(false);
        const ev = JSON.parse(r.body) as Record<string, unknown>;
        expect(ev).toMatchObject({ id: 'f-1', type: 'from-file', data: { amount: 42 } });
        expect(ev['knativebrokerttl']).toBeUndefined();
      }
      expect(flaky.got[0]!.headers['webhook-id']).toBe(flaky.got[1]!.headers['webhook-id']);
      expect(String(flaky.got[0]!.headers['webhook-id'])).toMatch(/^[0-9a-f-]{36}:\d+$/);
      expect(verify('whsec_d3Jvbmcta2V5', flaky.got[0]!.headers, flaky.got[0]!.body)).toBe(false);
      await expect.poll(() => plain.got.length, { timeout: 10_000 }).toBe(1);
      expect(verify('plain-secret-from-env', plain.got[0]!.headers, plain.got[0]!.body)).toBe(true);
      expect(verify(fileSecret, plain.got[0]!.headers, plain.got[0]!.body)).toBe(false);
    } finally {
      await flaky.close();
      await plain.close();
      delete process.env['TRELLIS_TEST_WEBHOOK_SECRET'];
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('never sends unsigned: a secret that cannot be read fails the delivery; bad annotations are refused', async () => {
    await using sink = await startSink();
    await using s = await testServer();
    expect((await s.apply(broker('default'))).status).toBe(201);
    expect(
      (
        await s.apply(
          annotated('missing', sink.url, 'env:TRELLIS_NO_SUCH_SECRET', { delivery: { retry: 0 } }),
        )
      ).status,
    ).toBe(201);
    expect((await s.post('/default/default', ceHeaders('m-1', 'missing'), '{}')).status).toBe(202);
    type Stats = { subscriptions: { name: string; recentFailures: { answer: string }[] }[] };
    await expect
      .poll(
        async () =>
          ((await (await fetch(`${s.url}/apis/stats`)).json()) as Stats).subscriptions.find(
            (x) => x.name === 'missing',
          )?.recentFailures[0]?.answer,
      )
      .toContain(
        'the signing secret at env:TRELLIS_NO_SUCH_SECRET is not set or empty: deliveries are not sent unsigned',
      );
    expect(sink.received.length).toBe(0);
    for (const bad of ['secret-in-the-annotation', 'file:relative/path', 'env:1BAD']) {
      const r = await s.apply(annotated('bad', sink.url, bad));
      expect(r.status).toBe(400);
      expect(((await r.json()) as { message: string }).message).toContain(
        'metadata.annotations.trellis.dev/webhook-secret: must name where the secret is',
      );
    }
  });
});
