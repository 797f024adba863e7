/** Broker ingress over real HTTP: status codes, error bodies, the three modes, TTL and arrival time. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { broker, ceHeaders, type TestServer, testServer, trigger } from './helpers/server.js';
import { type Sink, startSink } from './helpers/sink.js';

let s: TestServer;
let sink: Sink;

beforeAll(async () => {
  sink = await startSink();
  s = await testServer({ maxBodyBytes: 64 * 1024 });
  expect((await s.apply(broker('b1'))).status).toBe(201);
  expect((await s.apply(trigger('all', { broker: 'b1', subscriber: { uri: sink.url } }))).status).toBe(201);
});
afterAll(async () => {
  await s.close();
  await sink.close();
});

async function errorOf(res: Response): Promise<{ code: string; message: string; attribute?: string }> {
  expect(res.headers.get('content-type')).toMatch(/application\/json/);
  return (await res.json()) as { code: string; message: string; attribute?: string };
}

describe('accepting events', () => {
  it('accepts binary mode with 202 and delivers it with knativearrivaltime', async () => {
    const before = sink.received.length;
    const res = await s.post('/default/b1', ceHeaders('bin-1'), '{"a":1}');
    expect(res.status).toBe(202);
    const got = (await sink.waitFor(before + 1)).find((r) => r.event.attrs['id'] === 'bin-1')!;
    expect(got.event.attrs['knativearrivaltime']).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(got.event.attrs['knativebrokerttl']).toBeUndefined();
    expect(got.headers['prefer']).toBe('reply');
    expect(got.event.data?.toString()).toBe('{"a":1}');
  });
  it('accepts structured mode and a trailing slash', async () => {
    const body = JSON.stringify({ specversion: '1.0', id: 'st-1', source: '/s', type: 't', data: { x: 1 } });
    const res = await s.post(
      '/default/b1/',
      { 'content-type': 'application/cloudevents+json; charset=UTF-8' },
      body,
    );
    expect(res.status).toBe(202);
    await expect.poll(() => sink.received.some((r) => r.event.attrs['id'] === 'st-1')).toBe(true);
  });
  it('accepts a batch, every member stored and delivered', async () => {
    const batch = [1, 2, 3].map((i) => ({ specversion: '1.0', id: `batch-${i}`, source: '/s', type: 't' }));
    const res = await s.post(
      '/default/b1',
      { 'content-type': 'application/cloudevents-batch+json' },
      JSON.stringify(batch),
    );
    expect(res.status).toBe(202);
    await expect
      .poll(() => sink.received.filter((r) => String(r.event.attrs['id']).startsWith('batch-')).length)
      .toBe(3);
  });
  it('accepts a 64 KiB event (the spec asks for at least that)', async () => {
    const res = await s.post(
      '/default/b1',
      ceHeaders('big-ok', 'demo.type', { 'content-type': 'text/plain' }),
      'x'.repeat(60 * 1024),
    );
    expect(res.status).toBe(202);
  });
});

describe('refusing bad requests', () => {
  it('400 names the attribute and the rule', async () => {
    const h = ceHeaders('bad-time', 'demo.type', { 'ce-time': 'lunchtime' });
    const res = await s.post('/default/b1', h, '{}');
    expect(res.status).toBe(400);
    const e = await errorOf(res);
    expect(e.code).toBe('TRELLIS_ERR_INVALID_EVENT');
    expect(e.attribute).toBe('time');
    expect(e.message).toMatch(/RFC 3339/);
  });
  it('400 for a missing required attribute, broken JSON, or no CloudEvent at all', async () => {
    const { 'ce-id': _id, ...noId } = ceHeaders('x');
    expect((await errorOf(await s.post('/default/b1', noId, '{}'))).attribute).toBe('id');
    const broken = await s.post(
      '/default/b1',
      { 'content-type': 'application/cloudevents+json' },
      '{"specversion":',
    );
    expect(broken.status).toBe(400);
    expect((await errorOf(broken)).code).toBe('TRELLIS_ERR_MALFORMED_EVENT');
    const plain = await s.post('/default/b1', { 'content-type': 'application/json' }, '{}');
    expect(plain.status).toBe(400);
    expect((await errorOf(plain)).message).toMatch(/ce-specversion/);
  });
  it('404 for an unknown broker, with the broker named', async () => {
    const res = await s.post('/default/nope', ceHeaders('x'), '{}');
    expect(res.status).toBe(404);
    const e = await errorOf(res);
    expect(e.code).toBe('TRELLIS_ERR_BROKER_NOT_FOUND');
    expect(e.message).toContain('default/nope');
  });
  it('405 with Allow for other methods', async () => {
    for (const method of ['GET', 'PUT', 'DELETE', 'PATCH']) {
      const res = await fetch(`${s.url}/default/b1`, { method });
      expect(res.status).toBe(405);
      expect(res.headers.get('allow')).toBe('POST, OPTIONS');
      expect((await errorOf(res)).code).toBe('TRELLIS_ERR_METHOD_NOT_ALLOWED');
    }
  });
  it('413 over the size limit', async () => {
    const res = await s.post('/default/b1', ceHeaders('too-big'), `"${'x'.repeat(70 * 1024)}"`);
    expect(res.status).toBe(413);
    expect((await errorOf(res)).code).toBe('TRELLIS_ERR_PAYLOAD_TOO_LARGE');
  });
  it('415 for an unsupported event format or charset', async () => {
    const res = await s.post('/default/b1', { 'content-type': 'application/cloudevents+xml' }, '<e/>');
    expect(res.status).toBe(415);
    expect((await errorOf(res)).code).toBe('TRELLIS_ERR_UNSUPPORTED_MEDIA_TYPE');
    const cs = await s.post(
      '/default/b1',
      { 'content-type': 'application/cloudevents+json; charset=iso-8859-1' },
      '{}',
    );
    expect(cs.status).toBe(415);
  });
  it('400 when knativebrokerttl is 0 or not an integer', async () => {
    const zero = await s.post(
      '/default/b1',
      ceHeaders('ttl0', 'demo.type', { 'ce-knativebrokerttl': '0' }),
      '{}',
    );
    expect(zero.status).toBe(400);
    expect((await errorOf(zero)).code).toBe('TRELLIS_ERR_TTL_EXHAUSTED');
    const nan = await s.post(
      '/default/b1',
      ceHeaders('ttlx', 'demo.type', { 'ce-knativebrokerttl': 'abc' }),
      '{}',
    );
    expect(nan.status).toBe(400);
  });
  it('stays up: valid events after bad ones are still accepted', async () => {
    const res = await s.post('/default/b1', ceHeaders('after-bad'), '{}');
    expect(res.status).toBe(202);
  });
});

describe('webhook handshake, health and readiness', () => {
  it('OPTIONS answers Allow and the webhook headers', async () => {
    const res = await fetch(`${s.url}/default/b1`, {
      method: 'OPTIONS',
      headers: { 'webhook-request-origin': 'producer.example.com' },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('allow')).toBe('POST, OPTIONS');
    expect(res.headers.get('webhook-allowed-origin')).toBe('producer.example.com');
  });
  it('/healthz and /readyz answer 200', async () => {
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
  });
  it('a Broker that is not Ready answers 404 with its own code', async () => {
    const bad = broker('unready', {
      delivery: {
        deadLetterSink: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'missing' } },
      },
    });
    const applied = await s.apply(bad);
    expect(applied.status, await applied.clone().text()).toBe(201);
    const res = await s.post('/default/unready', ceHeaders('x'), '{}');
    const text = await res.clone().text();
    expect(res.status, text).toBe(404);
    expect((await errorOf(res)).code, text).toBe('TRELLIS_ERR_BROKER_NOT_READY');
  });
  it('unknown paths answer JSON 404', async () => {
    const res = await fetch(`${s.url}/a/b/c`);
    expect(res.status).toBe(404);
    expect((await errorOf(res)).code).toBe('TRELLIS_ERR_ROUTE_NOT_FOUND');
  });
});
