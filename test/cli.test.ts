/** The `trellis` command end to end, against a real `trellis serve` process. */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, run, type Served, serve } from './helpers/process.js';
import { type Sink, startSink } from './helpers/sink.js';

let dir: string;
let server: Served;
let sink: Sink;
let cli: (args: string[], input?: string) => ReturnType<typeof run>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'trellis-cli-'));
  sink = await startSink();
  server = await serve(['--data-dir', join(dir, 'data')]);
  cli = (args, input) =>
    run(args, { env: { TRELLIS_SERVER: server.url }, ...(input !== undefined ? { input } : {}) });
});
afterAll(async () => {
  server.child.kill('SIGTERM');
  await server.exited();
  await sink.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('apply, get, describe, delete', () => {
  it('applies a multi-document file', async () => {
    const file = join(dir, 'all.yaml');
    writeFileSync(
      file,
      `apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: shop
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
spec:
  broker: shop
  filter:
    attributes:
      type: order.created
  subscriber:
    uri: ${sink.url}
`,
    );
    const r = await cli(['apply', '-f', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      'broker.eventing.knative.dev/shop created\ntrigger.eventing.knative.dev/orders created\n',
    );
    expect((await cli(['apply', '-f', file])).stdout).toContain('broker.eventing.knative.dev/shop unchanged');
  });

  it('reads standard input with -f -', async () => {
    const r = await cli(
      ['apply', '-f', '-'],
      'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: piped\n  namespace: team\n',
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('broker.eventing.knative.dev/piped created');
  });

  it('lists like kubectl, in every output format', async () => {
    const table = await cli(['get', 'brokers']);
    expect(table.stdout).toMatch(/^NAME\s+URL\s+AGE\s+READY\s+REASON\n/);
    expect(table.stdout).toMatch(/shop\s+http:\/\/\S+\/default\/shop\s+\S+\s+True/);
    const wide = await cli(['get', 'trigger', '-o', 'wide']);
    expect(wide.stdout).toMatch(/orders\s+shop\s+http:\/\/127\.0\.0\.1/);
    const yaml = await cli(['get', 'trigger', 'orders', '-o', 'yaml']);
    expect(yaml.stdout).toContain('kind: Trigger');
    expect(yaml.stdout).toContain('subscriberUri:');
    const json = JSON.parse((await cli(['get', 'brokers', '-o', 'json'])).stdout) as { items: unknown[] };
    expect(json.items).toHaveLength(1);
    const all = await cli(['get', 'broker', '-A']);
    expect(all.stdout).toMatch(/NAMESPACE\s+NAME/);
    expect(all.stdout).toContain('team');
    const other = await cli(['get', 'brokers', '-n', 'team']);
    expect(other.stdout).toContain('piped');
  });

  it('describes a resource with its conditions', async () => {
    const r = await cli(['describe', 'trigger', 'orders']);
    expect(r.stdout).toMatch(/Name:\s+orders/);
    expect(r.stdout).toMatch(/Conditions:\n\s+TYPE\s+STATUS/);
    expect(r.stdout).toMatch(/Ready\s+True/);
  });

  it('sends an event that reaches the subscriber', async () => {
    const r = await cli([
      'send',
      '--broker',
      'default/shop',
      '--type',
      'order.created',
      '--source',
      '/cli',
      '--id',
      'cli-1',
      '--data',
      '{"n":1}',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('event cli-1 accepted by broker default/shop');
    const [got] = await sink.waitFor(1);
    expect(got!.event.attrs['id']).toBe('cli-1');
    expect(got!.event.data?.toString()).toBe('{"n":1}');
  });

  it('explain says whether a Trigger gets an event, and which clause rejects it', async () => {
    const yes = await cli(['explain', 'trigger', 'orders', '--type', 'order.created']);
    expect(yes.code).toBe(0);
    expect(yes.stdout).toContain('filter: spec.filter.attributes');
    expect(yes.stdout).toContain('MATCH');
    const no = await cli(['explain', 'trigger', 'orders', '--type', 'order.cancelled']);
    expect(no.code).toBe(2);
    expect(no.stdout).toContain(
      "NO MATCH: spec.filter.attributes: attribute 'type' is 'order.cancelled', the filter wants 'order.created'",
    );
    const file = join(dir, 'event.json');
    writeFileSync(file, JSON.stringify({ specversion: '1.0', id: 'x', source: '/s', type: 'order.created' }));
    expect((await cli(['explain', 'trigger', 'orders', '--event-file', file])).code).toBe(0);
    // An event the Broker still holds (a Trigger whose subscriber is down keeps it pending).
    const stuck = `apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: stuck\nspec:\n  broker: shop\n  subscriber:\n    uri: http://127.0.0.1:1/\n  delivery:\n    retry: 100\n    backoffDelay: PT10S\n`;
    expect((await cli(['apply', '-f', '-'], stuck)).code).toBe(0);
    expect(
      (
        await cli([
          'send',
          '--broker',
          'shop',
          '--type',
          'order.cancelled',
          '--source',
          '/cli',
          '--id',
          'held-1',
        ])
      ).code,
    ).toBe(0);
    const held = await cli(['explain', 'trigger', 'orders', '--event-id', 'held-1']);
    expect(held.code).toBe(2);
    expect(held.stdout).toContain("attribute 'type' is 'order.cancelled'");
    const gone = await cli(['explain', 'trigger', 'orders', '--event-id', 'no-such-id']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('TRELLIS_ERR_EVENT_NOT_FOUND');
    expect((await cli(['delete', 'trigger', 'stuck'])).code).toBe(0);
  });

  it('explains errors and exits 1', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      'apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: shop\n  subscriber:\n    uri: not-a-url\n',
    );
    const r = await cli(['apply', '-f', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /bad\.yaml document 1: spec\.subscriber\.uri: 'not-a-url' is not an absolute URL/,
    );
    const kind = await cli(['get', 'widgets']);
    expect(kind.code).toBe(1);
    expect(kind.stderr).toMatch(/unknown kind 'widgets'/);
    const missing = await cli(['get', 'broker', 'nope']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/broker 'nope' not found/);
    const nodata = await cli([
      'send',
      '--broker',
      'shop',
      '--type',
      't',
      '--source',
      's',
      '--data',
      'not json',
    ]);
    expect(nodata.code).toBe(1);
    expect(nodata.stderr).toMatch(/--data must be JSON/);
    const down = await run(['get', 'brokers', '--server', 'http://127.0.0.1:1']);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot reach the Trellis server/);
  });

  it('deletes by name and by file', async () => {
    expect((await cli(['delete', 'trigger', 'orders'])).stdout).toBe(
      'trigger.eventing.knative.dev "orders" deleted\n',
    );
    const file = join(dir, 'b.yaml');
    writeFileSync(file, 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: shop\n');
    expect((await cli(['delete', '-f', file])).stdout).toContain('"shop" deleted');
    expect((await cli(['get', 'brokers'])).stderr).toContain('No resources found');
  });

  it('has --help with examples on every command', async () => {
    for (const cmd of ['serve', 'apply', 'get', 'describe', 'delete', 'send', 'display', 'explain']) {
      const r = await run([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/Example/);
    }
  });
});

describe('display and serve -f', () => {
  it('trellis display prints events a Trigger delivers; serve -f loads resources at start', async () => {
    const child = spawn(process.execPath, [BIN, 'display', '--port', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    await expect.poll(() => /listening on (\S+)/.exec(err)?.[1]).toBeTruthy();
    const displayUrl = /listening on (\S+)/.exec(err)![1]!;
    const file = join(dir, 'display.yaml');
    writeFileSync(
      file,
      `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: show\nspec:\n  broker: default\n  subscriber:\n    uri: ${displayUrl}\n`,
    );
    const second = await serve(['--data-dir', join(dir, 'data2'), '-f', file]);
    try {
      const r = await run([
        'send',
        '--broker',
        'default',
        '--type',
        'demo.hello',
        '--source',
        'cli',
        '--data',
        '{"hello":"world"}',
        '--server',
        second.url,
      ]);
      expect(r.code).toBe(0);
      await expect.poll(() => out, { timeout: 5000 }).toContain('"hello": "world"');
      expect(out).toContain('☁️  cloudevents.Event');
      expect(out).toContain('type: demo.hello');
    } finally {
      second.child.kill('SIGTERM');
      const { code } = await second.exited();
      expect(code).toBe(0);
      child.kill('SIGTERM');
    }
  });
});
