/**
 * Applications as real processes: `trellis subscribe` members of one group sharing 1,000 events (one
 * killed with SIGKILL mid-stream), `trellis request` against a responder, and a browser (Debian's
 * Chromium, through playwright-core) using the SDK over WebSocket.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TrellisClient } from '../src/client/trellis.js';
import { BIN, run, type Served, serve } from './helpers/process.js';
import { ROOT } from './helpers/shared.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  if (process.env['CI'] === 'true')
    throw new Error(`the browser test needs Chromium at ${CHROMIUM} (.ci/run installs it)`);
  console.warn(`SKIPPED: the browser SDK test needs Chromium at ${CHROMIUM} (apt-get install chromium)`);
}

interface Member {
  child: ChildProcess;
  ids: string[];
  exited: Promise<number | null>;
  stderr(): string;
}

/** Starts `trellis subscribe ... -o json` and collects the ids it prints. */
function member(server: string, args: string[]): Member {
  const child = spawn(
    process.execPath,
    [BIN, 'subscribe', 'default/default', '-o', 'json', '--server', server, ...args],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const ids: string[] = [];
  let buf = '';
  child.stdout!.on('data', (b: Buffer) => {
    buf += b.toString();
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      ids.push(String((JSON.parse(buf.slice(0, nl)) as { id: string }).id));
      buf = buf.slice(nl + 1);
      nl = buf.indexOf('\n');
    }
  });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, ids, exited, stderr: () => err };
}

describe('applications as processes', () => {
  let srv: Served;
  beforeAll(async () => {
    srv = await serve(['--data-dir', ':memory:']);
    const r = await run(['apply', '-f', '-'], {
      input: 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n',
      env: { TRELLIS_SERVER: srv.url },
    });
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(() => {
    srv?.child.kill('SIGTERM');
  });

  it('two members of a group share 1,000 events; one killed mid-stream loses nothing', {
    timeout: 120_000,
  }, async () => {
    const a = member(srv.url, ['--group', 'shared', '--window', '20']);
    const b = member(srv.url, ['--group', 'shared', '--window', '20']);
    const c = new TrellisClient({ url: srv.url });
    // Both are members before the events come (each says so on stderr once subscribed).
    await expect
      .poll(
        () => [a, b].every((m) => m.stderr().includes('subscribed to /default/default as group shared')),
        {
          timeout: 20_000,
        },
      )
      .toBe(true);
    const all = Array.from({ length: 1000 }, (_, i) => ({ id: `m${i}`, source: '/load', type: 'load.type' }));
    for (let i = 0; i < 1000; i += 100) await c.publish('default/default', all.slice(i, i + 100));
    await expect.poll(() => a.ids.length + b.ids.length, { timeout: 30_000 }).toBeGreaterThan(200);
    a.child.kill('SIGKILL');
    await a.exited;
    const got = () => new Set([...a.ids, ...b.ids]);
    await expect.poll(() => got().size, { timeout: 60_000 }).toBe(1000);
    const dupes = a.ids.length + b.ids.length - 1000;
    console.log(
      `group of two, one killed: 1000 events, ${a.ids.length} by the killed member, ${b.ids.length} by the other, ${dupes} repeated`,
    );
    expect(a.ids.length).toBeGreaterThan(0);
    // At least once: only what the killed member held unacknowledged (its window) may come twice.
    expect(dupes).toBeLessThanOrEqual(20);
    b.child.kill('SIGTERM');
    await b.exited;
    // The group takes every event: it goes, so that the next test's requests have only their responder.
    await c.delete('consumergroup', 'shared');
  });

  it('trellis request prints the reply a responder gives; without a responder it fails with the code', async () => {
    const c = new TrellisClient({ url: srv.url });
    const responder = c.respond(
      'default/default',
      { group: 'pricing', filter: "type = 'price.asked'" },
      (e) => ({
        source: '/pricing',
        type: 'price.given',
        data: { for: e.id, price: 3 },
      }),
    );
    try {
      // Subscribed: its group is in the data plane, so requests from now on reach it.
      await responder.ready;
      const r = await run(
        [
          'request',
          'default/default',
          '--type',
          'price.asked',
          '--source',
          '/cli',
          '--id',
          'ask-1',
          '-o',
          'json',
          '--timeout',
          '10000',
        ],
        {
          env: { TRELLIS_SERVER: srv.url },
        },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ type: 'price.given', data: { for: 'ask-1', price: 3 } });
      const none = await run(['request', 'default/default', '--type', 'nobody.answers', '--source', '/cli'], {
        env: { TRELLIS_SERVER: srv.url },
      });
      expect(none.code).not.toBe(0);
      expect(none.stderr).toContain('TRELLIS_ERR_NO_RESPONDER');
    } finally {
      responder.close();
      c.close();
    }
  });

  it('the SDK reconnects by itself: a group member gets what was stored after a kill -9 and a restart; trellis replay', {
    timeout: 120_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-sdk-restart-'));
    // A fixed port: the restarted server must be where the client reconnects.
    const port = await new Promise<number>((resolve) => {
      const probe = createServer();
      probe.listen(0, '127.0.0.1', () => {
        const p = (probe.address() as AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    const args = ['--port', String(port), '--data-dir', dir, '--retention', 'PT1H'];
    let server = await serve(args);
    const c = new TrellisClient({ url: server.url, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    try {
      const r = await run(['apply', '-f', '-'], {
        input: 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n',
        env: { TRELLIS_SERVER: server.url },
      });
      expect(r.code, r.stderr).toBe(0);
      const sub = c.subscribe('default/default', { group: 'survivor' });
      await sub.ready;
      const got: string[] = [];
      void (async () => {
        for await (const d of sub) {
          got.push(d.event.id);
          d.ack();
        }
      })();
      const batch = (prefix: string) =>
        Array.from({ length: 5 }, (_, i) => ({ id: `${prefix}${i}`, source: '/t', type: 't' }));
      await c.publish('default/default', batch('before'));
      await expect.poll(() => got.length).toBe(5);
      server.child.kill('SIGKILL');
      await server.exited();
      server = await serve(args);
      await c.publish('default/default', batch('after'));
      await expect.poll(() => new Set(got).size, { timeout: 30_000 }).toBe(10);
      // trellis replay: the group gets the Broker's retained events again.
      const replay = await run(
        ['replay', '--broker', 'default/default', '--from', 'earliest', '--to', 'consumergroup/survivor'],
        {
          env: { TRELLIS_SERVER: server.url },
        },
      );
      expect(replay.code, replay.stderr).toBe(0);
      expect(replay.stdout).toContain(
        '10 events of broker default/default replayed to consumergroup survivor',
      );
      await expect.poll(() => got.length, { timeout: 30_000 }).toBeGreaterThanOrEqual(20);
      const bad = await run(
        ['replay', '--broker', 'default/default', '--from', 'yesterday', '--to', 'survivor'],
        {
          env: { TRELLIS_SERVER: server.url },
        },
      );
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain('from:');
      sub.close();
    } finally {
      c.close();
      server.child.kill('SIGTERM');
      await server.exited();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!haveChromium)(
    'a browser subscribes and publishes with the SDK over WebSocket',
    { timeout: 60_000 },
    async () => {
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
      try {
        const page = await browser.newPage();
        // A page of the server's own origin (a page of another origin is refused by the server).
        await page.goto(`${srv.url}/healthz`);
        const sdk = readFileSync(join(ROOT, 'dist', 'client', 'trellis.js'), 'utf8');
        await page.addScriptTag({ type: 'module', content: `${sdk}\nwindow.TrellisClient = TrellisClient;` });
        await page.waitForFunction(() => 'TrellisClient' in globalThis);
        const group = await page.evaluate(async () => {
          // The SDK's own types, as the page sees them (this code runs in the browser).
          const w = globalThis as unknown as {
            TrellisClient: typeof TrellisClient;
            location: { origin: string };
            got: string[];
            answer: unknown;
          };
          const c = new w.TrellisClient({ url: w.location.origin });
          const sub = c.subscribe('default/default', { group: 'browser', filter: "type = 'to.browser'" });
          w.got = [];
          void (async () => {
            for await (const d of sub) {
              w.got.push(d.event.id);
              d.ack();
            }
          })();
          await sub.ready;
          w.answer = await c.send('default/default', {
            source: '/browser',
            type: 'from.browser',
            data: { hi: true },
          });
          return sub.group;
        });
        expect(group).toBe('browser');
        expect(
          await page.evaluate(() => (globalThis as unknown as { answer: { status: number } }).answer.status),
        ).toBe(202);
        const c = new TrellisClient({ url: srv.url });
        await c.publish(
          'default/default',
          Array.from({ length: 20 }, (_, i) => ({ id: `b${i}`, source: '/node', type: 'to.browser' })),
        );
        await expect
          .poll(() => page.evaluate(() => (globalThis as unknown as { got: string[] }).got.length), {
            timeout: 20_000,
          })
          .toBe(20);
      } finally {
        await browser.close();
      }
    },
  );
});
