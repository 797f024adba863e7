/** Prometheus metrics at /metrics and live counts at /apis/stats, from real traffic. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from './helpers/process.js';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { ROOT } from './helpers/shared.js';
import { startSink } from './helpers/sink.js';

/** The value of one series in an exposition text, undefined when the series is absent. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const body = line.slice(name.length + 1, line.lastIndexOf('}'));
    const have = new Map(
      [...body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!] as [string, string]),
    );
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v))
      return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

const ns = (name: string, kind = 'Trigger') => ({ namespace_name: 'default', kind, name });
const fast = { retry: 2, backoffPolicy: 'linear', backoffDelay: 'PT0.01S' };

describe('metrics', () => {
  it('count ingress, attempts by answer, outcomes, replies and lag per subscription; /apis/stats shows the failures', async () => {
    // flaky: 503 once, then 202. refuses: 400 'bad order' (not retried), to a dead-letter sink. replier:
    // 200 with a reply event.
    await using flaky = await startSink((_r, res, n) => res.writeHead(n === 1 ? 503 : 202).end());
    await using refuses = await startSink((_r, res) => res.writeHead(400).end('bad order 42'));
    await using dls = await startSink();
    await using replier = await startSink((_r, res) =>
      res
        .writeHead(200, {
          'ce-specversion': '1.0',
          'ce-id': 'r-1',
          'ce-source': '/replier',
          'ce-type': 'reply.type',
        })
        .end(),
    );
    await using s = await testServer();
    expect((await s.apply(broker('default'))).status).toBe(201);
    const only = { filter: { attributes: { type: 'demo.type' } } };
    for (const [name, sink, extra] of [
      ['flaky', flaky, { delivery: fast }],
      ['refuses', refuses, { delivery: { ...fast, deadLetterSink: { uri: dls.url } } }],
      ['replier', replier, {}],
      // Nothing listens on port 9: every attempt fails without an answer, and the retry waits an hour.
      ['stuck', { url: 'http://127.0.0.1:9/' }, { delivery: { retry: 3, backoffDelay: 'PT1H' } }],
    ] as const) {
      const t = trigger(name, { broker: 'default', ...only, subscriber: { uri: sink.url }, ...extra });
      expect((await s.apply(t)).status).toBe(201);
    }
    expect((await s.post('/default/default', ceHeaders('e-1'), '{"n":1}')).status).toBe(202);
    expect((await s.post('/default/nope', ceHeaders('e-2'), '{}')).status).toBe(404);
    const bad = { ...ceHeaders('e-3'), 'ce-specversion': '0.3' };
    expect((await s.post('/default/default', bad, '{}')).status).toBe(400);

    const scrape = async () => (await fetch(`${s.url}/metrics`)).text();
    await expect
      .poll(async () => sample(await scrape(), 'trellis_delivery_lag', ns('stuck')), { timeout: 10_000 })
      .toBe(1);
    await expect
      .poll(async () => {
        const t = await scrape();
        return [
          sample(t, 'trellis_delivery_outcomes_total', { ...ns('flaky'), outcome: 'delivered' }),
          sample(t, 'trellis_delivery_outcomes_total', { ...ns('refuses'), outcome: 'dead_lettered' }),
          sample(t, 'trellis_delivery_reply_events_total', ns('replier')),
        ];
      })
      .toEqual([1, 1, 1]);
    const text = await scrape();
    const broker1 = { namespace_name: 'default', kind: 'Broker', name: 'default' };
    expect(sample(text, 'trellis_ingress_event_count_total', { ...broker1, response_code: '202' })).toBe(1);
    expect(sample(text, 'trellis_ingress_event_count_total', { ...broker1, response_code: '400' })).toBe(1);
    // A Broker that does not exist is not named: a stranger cannot make a series per path.
    expect(
      sample(text, 'trellis_ingress_event_count_total', {
        namespace_name: '',
        name: '',
        response_code: '404',
      }),
    ).toBe(1);
    expect(text).not.toContain('name="nope"');
    expect(
      sample(text, 'trellis_ingress_request_latencies_seconds_count', {
        ...broker1,
        response_code_class: '2xx',
      }),
    ).toBe(1);
    expect(sample(text, 'trellis_delivery_event_count_total', { ...ns('flaky'), response_code: '503' })).toBe(
      1,
    );
    expect(sample(text, 'trellis_delivery_event_count_total', { ...ns('flaky'), response_code: '202' })).toBe(
      1,
    );
    expect(sample(text, 'trellis_delivery_outcomes_total', { ...ns('flaky'), outcome: 'retried' })).toBe(1);
    expect(
      sample(text, 'trellis_delivery_event_count_total', {
        ...ns('refuses'),
        response_code: '400',
        response_code_class: '4xx',
      }),
    ).toBe(1);
    expect(
      sample(text, 'trellis_delivery_event_count_total', {
        ...ns('stuck'),
        response_code: 'none',
        response_code_class: 'none',
      }),
    ).toBe(1);
    expect(
      sample(text, 'trellis_delivery_event_count_total', { ...ns('replier'), response_code: '200' }),
    ).toBe(1);
    // Lag is read from the store at most every 2 s: it follows.
    await expect
      .poll(async () => sample(await scrape(), 'trellis_delivery_lag', ns('flaky')), { timeout: 10_000 })
      .toBe(0);
    expect(sample(text, 'trellis_store_append_batch_events_count', {})).toBeUndefined(); // no labels: plain line
    expect(text).toMatch(/^trellis_store_append_batch_events_count [1-9]/m);
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
    await expect
      .poll(async () => sample(await scrape(), 'trellis_delivery_oldest_pending_age_seconds', ns('stuck')), {
        timeout: 10_000,
      })
      .toBeGreaterThan(0);

    const stats = (await (await fetch(`${s.url}/apis/stats`)).json()) as {
      subscriptions: {
        name: string;
        delivered: number;
        failedAttempts: number;
        deadLettered: number;
        lag: number;
        recentFailures: { code?: number; answer: string }[];
      }[];
      streams: { stream: string; accepted: number; rejected: number }[];
    };
    const byName = new Map(stats.subscriptions.map((x) => [x.name, x]));
    expect(byName.get('refuses')).toMatchObject({ deadLettered: 1, failedAttempts: 1 });
    expect(byName.get('refuses')!.recentFailures[0]).toMatchObject({ code: 400, answer: 'bad order 42' });
    expect(byName.get('stuck')!.lag).toBe(1);
    expect(byName.get('stuck')!.recentFailures[0]!.code).toBeUndefined();
    expect(byName.get('flaky')).toMatchObject({ delivered: 1, failedAttempts: 1 });
    expect(stats.streams).toEqual([{ kind: 'Broker', stream: 'default/default', accepted: 1, rejected: 1 }]);

    // What became of one event's deliveries, for its detail.
    const deliveries = (await (
      await fetch(`${s.url}/apis/deliveries?event=e-1&stream=default/default`)
    ).json()) as {
      items: { name: string; what: string; code?: number; answer?: string }[];
    };
    const of = (name: string) =>
      deliveries.items.filter((x) => x.name === name).map((x) => [x.what, x.code ?? null]);
    expect(of('flaky')).toEqual([
      ['failed', 503],
      ['delivered', null],
    ]);
    expect(of('refuses')).toEqual([
      ['failed', 400],
      ['dead_lettered', null],
    ]);
    expect(deliveries.items.find((x) => x.name === 'refuses')!.answer).toBe('bad order 42');
    expect((await fetch(`${s.url}/apis/deliveries`)).status).toBe(400);

    // The CLI's wide table: DELIVERED FAILED DEAD-LETTERED LAG, then the message.
    const wide = await run(['get', 'triggers', '-o', 'wide'], { env: { TRELLIS_SERVER: s.url } });
    expect(wide.stdout).toMatch(/DELIVERED\s+FAILED\s+DEAD-LETTERED\s+LAG\s+MESSAGE/);
    expect(wide.stdout).toMatch(/^refuses\s.*\s0\s+1\s+1\s+0\s*$/m);
    expect(wide.stdout).toMatch(/^stuck\s.*\s0\s+1\s+0\s+1\s*$/m);

    // trellis top: rates over one interval, lag, the last failure.
    const top = await run(['top', '--once', '--interval', '0.2'], { env: { TRELLIS_SERVER: s.url } });
    expect(top.code, top.stderr).toBe(0);
    expect(top.stdout).toMatch(/^default\/default\s+Broker\s+[\d.]+\s+[\d.]+\s+1\s+1\s*$/m);
    expect(top.stdout).toMatch(/^Trigger default\/stuck\s+0\.0\s+0\.0\s+0\s+0\s+1\s+\d+s\s+no answer: /m);
    expect(top.stdout).toMatch(/^Trigger default\/refuses\s.*400: bad order 42\s*$/m);

    // A deleted Trigger's series go.
    const del = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/refuses`, {
      method: 'DELETE',
    });
    expect(del.status).toBe(200);
    await expect.poll(async () => (await scrape()).includes('name="refuses"')).toBe(false);
  });

  it('are all documented, and the Grafana dashboard in docs/ asks only for metrics that exist', async () => {
    await using s = await testServer();
    const text = await (await fetch(`${s.url}/metrics`)).text();
    const served = new Set([...text.matchAll(/^# TYPE (trellis_\w+) /gm)].map((m) => m[1]!));
    expect(served.size).toBeGreaterThan(10);
    const ops = readFileSync(join(ROOT, 'docs', 'operations.md'), 'utf8');
    for (const name of served)
      expect(ops, `docs/operations.md does not list ${name}`).toContain(`\`${name}\``);
    const dashboard = readFileSync(join(ROOT, 'docs', 'grafana-dashboard.json'), 'utf8');
    const asked = new Set(
      [...dashboard.matchAll(/\b(trellis_\w+?)(?:_bucket|_sum|_count)?\b/g)].map((m) => m[1]!),
    );
    expect(asked.size).toBeGreaterThan(8);
    for (const name of asked) expect(served, `the dashboard asks for ${name}`).toContain(name);
  });

  it('are behind the admin token, and off with --no-metrics', async () => {
    await using guarded = await testServer({ adminToken: 'sekrit-token-123' });
    expect((await fetch(`${guarded.url}/metrics`)).status).toBe(401);
    const ok = await fetch(`${guarded.url}/metrics`, {
      headers: { authorization: 'Bearer sekrit-token-123' },
    });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toContain('text/plain');
    expect(await ok.text()).not.toContain('sekrit');
    await using off = await testServer({ metrics: false });
    const r = await fetch(`${off.url}/metrics`);
    expect(r.status).toBe(404);
    expect(((await r.json()) as { message: string }).message).toContain('--no-metrics');
    // Live stats stay: the CLI reads them.
    expect((await fetch(`${off.url}/apis/stats`)).status).toBe(200);
  });
});
