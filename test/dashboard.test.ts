/**
 * The dashboard in a real browser (Debian's Chromium driven by playwright-core) against a running server
 * with traffic: what a person sees, with screenshots under test-results/.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { broker, ceHeaders, type TestServer, testServer, trigger } from './helpers/server.js';
import { ROOT } from './helpers/shared.js';
import { type Sink, startSink } from './helpers/sink.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const TOKEN = 'dashboard-token-1';
const SHOTS = join(ROOT, 'test-results');

const have = existsSync(CHROMIUM);
if (!have) {
  if (process.env['CI'] === 'true')
    throw new Error(`the dashboard tests need Chromium at ${CHROMIUM} (.ci/run installs it)`);
  console.warn(`SKIPPED: the dashboard tests need Chromium at ${CHROMIUM} (apt-get install chromium)`);
}

describe.skipIf(!have)('dashboard (/ui) in Chromium', () => {
  let s: TestServer;
  let ok: Sink;
  let failing: Sink;
  let browser: Browser;
  let page: Page;
  let pump: NodeJS.Timeout;
  let n = 0;

  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    ok = await startSink();
    failing = await startSink((_r, res) => res.writeHead(500).end('boom from billing'));
    s = await testServer({ adminToken: TOKEN, eventTypeFlushMs: 200 });
    const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const apply = (path: string, doc: unknown) =>
      fetch(`${s.url}${path}`, { method: 'POST', headers: auth, body: JSON.stringify(doc) });
    expect(
      (await apply('/apis/eventing.knative.dev/v1/namespaces/default/brokers', broker('default'))).status,
    ).toBe(201);
    const t = (name: string, type: string, uri: string, extra: Record<string, unknown> = {}) =>
      apply('/apis/eventing.knative.dev/v1/namespaces/default/triggers', {
        ...trigger(name, {
          broker: 'default',
          filter: { attributes: { type } },
          subscriber: { uri },
          ...extra,
        }),
        ...(name === 'billing'
          ? { metadata: { name, namespace: 'default', annotations: { 'trellis.dev/dead-letters': 'keep' } } }
          : {}),
      });
    expect((await t('orders', 'order.created', ok.url)).status).toBe(201);
    expect((await t('billing', 'order.paid', failing.url, { delivery: { retry: 0 } })).status).toBe(201);
    const seq = {
      apiVersion: 'flows.knative.dev/v1',
      kind: 'Sequence',
      metadata: { name: 'pipeline', namespace: 'default' },
      spec: { steps: [{ uri: ok.url }] },
    };
    expect((await apply('/apis/flows.knative.dev/v1/namespaces/default/sequences', seq)).status).toBe(201);
    // Traffic while the page is open: orders that go through, payments that fail.
    pump = setInterval(() => {
      n++;
      void s.post('/default/default', ceHeaders(`o-${n}`, 'order.created'), `{"n":${n}}`);
      if (n % 5 === 0) void s.post('/default/default', ceHeaders(`p-${n}`, 'order.paid'), `{"n":${n}}`);
    }, 40);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  }, 60_000);

  afterAll(async () => {
    clearInterval(pump);
    await browser?.close();
    await s?.close();
    await ok?.close();
    await failing?.close();
  });

  it('asks for the admin token, then shows the topology with live rates and failures', {
    timeout: 60_000,
  }, async () => {
    const res = await page.goto(`${s.url}/ui/`);
    expect(res!.status()).toBe(200);
    expect(res!.headers()['content-security-policy']).toContain("default-src 'none'");
    expect(res!.headers()['x-frame-options']).toBe('DENY');
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const topo = page.getByTestId('topology');
    await expect.poll(() => topo.textContent(), { timeout: 20_000 }).toContain('Trigger orders');
    expect(await topo.textContent()).toContain('Broker default');
    // Channels, Subscriptions, Sequences and Parallels are nodes too; a flow's steps are its edges.
    expect(await topo.textContent()).toContain('Sequence pipeline');
    expect(await topo.textContent()).toContain('step 0 of pipeline');
    // The rates come from two samples 2 s apart: wait until the orders edge shows events per second.
    await expect
      .poll(
        async () =>
          Math.max(
            0,
            ...[...((await topo.textContent()) ?? '').matchAll(/(\d+\.\d)\/s/g)].map((m) => Number(m[1])),
          ),
        {
          timeout: 20_000,
        },
      )
      .toBeGreaterThan(0);
    await expect.poll(async () => (await topo.textContent()) ?? '', { timeout: 20_000 }).toMatch(/failed/);
    expect(await page.locator('.edge.error').count()).toBeGreaterThan(0);
    await page.screenshot({ path: join(SHOTS, 'dashboard-topology.png'), fullPage: true });
  });

  it('lists Triggers with their state, counts and the subscriber’s last answer', {
    timeout: 30_000,
  }, async () => {
    await page.getByRole('link', { name: 'Triggers' }).click();
    const t = page.getByTestId('triggers');
    await expect.poll(() => t.textContent(), { timeout: 15_000 }).toContain('500: boom from billing');
    const row = page.locator('[data-testid=triggers] tr', { hasText: 'Trigger default/orders' });
    expect(await row.textContent()).toContain('Ready');
    await page.screenshot({ path: join(SHOTS, 'dashboard-triggers.png'), fullPage: true });
  });

  it('tails the Broker through a CESQL filter and shows an event’s detail', { timeout: 30_000 }, async () => {
    await page.getByRole('link', { name: 'Live tail' }).click();
    await page.getByTestId('tail-filter').fill("type = 'order.paid'");
    await page.getByTestId('tail-start').click();
    const items = page.locator('[data-testid=tail-events] li');
    await expect.poll(() => items.count(), { timeout: 15_000 }).toBeGreaterThan(0);
    const texts = await items.allTextContents();
    expect(texts.every((x) => x.includes('order.paid'))).toBe(true);
    // The detail says what became of the event's deliveries (clicked again until they are done).
    await expect
      .poll(
        async () => {
          await items.last().click();
          return page.getByTestId('event-detail').textContent();
        },
        { timeout: 15_000 },
      )
      .toMatch(
        /Trigger billing: attempt failed, 500: boom from billing[\s\S]*Trigger billing: dead-lettered/,
      );
    expect(await page.getByTestId('event-detail').textContent()).toContain('"type": "order.paid"');
    expect(await page.getByTestId('event-detail').textContent()).toContain('knativearrivaltime');
    await page.screenshot({ path: join(SHOTS, 'dashboard-tail.png'), fullPage: true });
  });

  it('shows dead letters and redrives them from the page; EventTypes with counts', {
    timeout: 30_000,
  }, async () => {
    await page.getByRole('link', { name: 'Dead letters' }).click();
    const dl = page.getByTestId('deadletters');
    await expect.poll(() => dl.textContent(), { timeout: 15_000 }).toContain('boom from billing');
    expect(await dl.textContent()).toContain('order.paid');
    await page.getByTestId('dl-redrive-all').click();
    await expect
      .poll(() => page.getByTestId('dl-note').textContent(), { timeout: 15_000 })
      .toMatch(/^[1-9]\d* redriven/);
    await page.screenshot({ path: join(SHOTS, 'dashboard-deadletters.png'), fullPage: true });
    await page.getByRole('link', { name: 'EventTypes' }).click();
    const et = page.getByTestId('eventtypes');
    await expect.poll(() => et.textContent(), { timeout: 15_000 }).toContain('order.created');
    const row = page.locator('[data-testid=eventtypes] tr', { hasText: 'order.created' });
    await expect
      .poll(async () => Number((await row.locator('td').nth(3).textContent()) ?? 0), { timeout: 15_000 })
      .toBeGreaterThan(0);
  });

  it('is not open to other origins', async () => {
    const r = await fetch(`${s.url}/apis/stats`, {
      headers: { authorization: `Bearer ${TOKEN}`, origin: 'http://evil.example' },
    });
    expect(r.status).toBe(403);
    expect(r.headers.get('access-control-allow-origin')).toBeNull();
    const traversal = await fetch(`${s.url}/ui/assets/..%2f..%2fpackage.json`);
    expect(traversal.status).toBe(404);
  });
});
