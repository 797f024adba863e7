/** Rate limits at ingress: token buckets per Broker and per sender, answered 429 with Retry-After. */
import { describe, expect, it } from 'vitest';
import { TokenBuckets } from '../src/dataplane/rate-limit.js';
import { parseRate } from '../src/resources/rate.js';
import { run } from './helpers/process.js';
import { broker, ceHeaders, testServer } from './helpers/server.js';

describe('rate limits', () => {
  it('parse rates, and refill buckets with time', () => {
    expect(parseRate('100/s')).toEqual({ perSecond: 100, burst: 100 });
    expect(parseRate('6000/m,50')).toEqual({ perSecond: 100, burst: 50 });
    expect(parseRate('1/h')).toEqual({ perSecond: 1 / 3600, burst: 1 });
    for (const bad of ['', '0/s', '10', '10/d', '-1/s', '10/s,0', `${'9'.repeat(20)}/s`])
      expect(parseRate(bad)).toBeUndefined();
    const b = new TokenBuckets();
    const rate = { perSecond: 10, burst: 2 };
    expect(b.take('k', rate, 2, 0)).toBe(0);
    expect(b.take('k', rate, 1, 0)).toBe(1); // empty: a token comes in 0.1 s, said as 1 s
    expect(b.take('k', rate, 1, 100)).toBe(0); // 100 ms later, one token
    expect(b.take('k', rate, 5, 10_000)).toBe(1); // more than the burst never fits
    const few = new TokenBuckets(2);
    few.take('a', rate, 2, 0);
    few.take('b', rate, 2, 0);
    few.take('c', rate, 2, 0); // 'a' (least recently used) is forgotten: a full bucket again
    expect(few.take('a', rate, 2, 0)).toBe(0);
  });

  it('a Broker annotated with a limit answers 429 with Retry-After beyond it; others are not held', async () => {
    await using s = await testServer();
    const limited = {
      ...broker('limited'),
      metadata: { name: 'limited', namespace: 'default', annotations: { 'trellis.dev/rate-limit': '5/s,5' } },
    };
    expect((await s.apply(limited)).status).toBe(201);
    expect((await s.apply(broker('free'))).status).toBe(201);
    const codes: number[] = [];
    for (let i = 0; i < 5; i++)
      codes.push((await s.post('/default/limited', ceHeaders(`l-${i}`), '{}')).status);
    expect(codes).toEqual([202, 202, 202, 202, 202]);
    const over = await s.post('/default/limited', ceHeaders('l-over'), '{}');
    expect(over.status).toBe(429);
    expect(Number(over.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const body = (await over.json()) as { code: string; message: string };
    expect(body.code).toBe('TRELLIS_ERR_RATE_LIMITED');
    expect(body.message).toContain('/default/limited takes at most 5 events/s, bursts of 5');
    for (let i = 0; i < 20; i++)
      expect((await s.post('/default/free', ceHeaders(`f-${i}`), '{}')).status).toBe(202);
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    expect(metrics).toMatch(
      /trellis_ingress_event_count_total\{namespace_name="default",kind="Broker",name="limited",response_code="429",response_code_class="4xx"\} 1/,
    );
    expect(metrics).toMatch(
      /trellis_ingress_rate_limited_events_total\{namespace_name="default",kind="Broker",name="limited",limit="stream"\} 1\n/,
    );
    const bad = await s.apply({
      ...broker('bad'),
      metadata: { name: 'bad', namespace: 'default', annotations: { 'trellis.dev/rate-limit': 'lots' } },
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toContain(
      'metadata.annotations.trellis.dev/rate-limit: must be events per second',
    );
  });

  it('--rate-limit-per-sender limits each sender; a batch larger than the burst never fits; bad flags are refused', async () => {
    await using s = await testServer({ rateLimitPerSender: '3/s,3' });
    expect((await s.apply(broker('default'))).status).toBe(201);
    for (let i = 0; i < 3; i++)
      expect((await s.post('/default/default', ceHeaders(`s-${i}`), '{}')).status).toBe(202);
    const over = await s.post('/default/default', ceHeaders('s-over'), '{}');
    expect(over.status).toBe(429);
    expect(((await over.json()) as { message: string }).message).toContain('3 events/s from one sender');
    const batch = JSON.stringify(
      Array.from({ length: 4 }, (_, i) => ({ specversion: '1.0', id: `b-${i}`, source: '/t', type: 't' })),
    );
    const big = await s.post(
      '/default/default',
      { 'content-type': 'application/cloudevents-batch+json' },
      batch,
    );
    expect(big.status).toBe(429);
    expect(((await big.json()) as { message: string }).message).toContain('a batch of 4 never fits');
    // One refused event, then a refused batch of four, all by the per-sender limit.
    expect(await (await fetch(`${s.url}/metrics`)).text()).toMatch(
      /trellis_ingress_rate_limited_events_total\{namespace_name="default",kind="Broker",name="default",limit="sender"\} 5\n/,
    );
    const flag = await run(['serve', '--port', '0', '--rate-limit', 'fast']);
    expect(flag.code).not.toBe(0);
    expect(flag.stderr).toContain('--rate-limit: events per second, minute or hour');
  });
});
