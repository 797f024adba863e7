/** `trellis export` and `trellis import`: moving every resource from one server to another. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parseDocuments } from '../src/resources/registry.js';
import { run, serve } from './helpers/process.js';
import { ROOT } from './helpers/shared.js';

it('exports every resource as YAML that imports into another server unchanged', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-export-'));
  const a = await serve(['--data-dir', join(dir, 'a')]);
  const b = await serve(['--data-dir', join(dir, 'b')]);
  try {
    const on = (s: { url: string }) => ({ TRELLIS_SERVER: s.url });
    const examples = [
      'broker.yaml',
      'trigger-full.yaml',
      'channel.yaml',
      'sequence.yaml',
      'service-address.yaml',
      'eventtype.yaml',
    ];
    // The examples refer to Broker 'default'.
    const defaultBroker = 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n';
    expect((await run(['apply', '-f', '-'], { input: defaultBroker, env: on(a) })).code).toBe(0);
    for (const f of examples) {
      const r = await run(['apply', '-f', join(ROOT, 'docs', 'examples', f)], { env: on(a) });
      expect([f, r.code, r.stderr]).toEqual([f, 0, '']);
    }
    const file = join(dir, 'all.yaml');
    const exp = await run(['export', '--file', file], { env: on(a) });
    expect(exp.code).toBe(0);
    const docs = parseDocuments(readFileSync(file, 'utf8')) as {
      kind: string;
      metadata: Record<string, unknown>;
      status?: unknown;
    }[];
    expect(docs.length).toBeGreaterThan(8);
    for (const d of docs) {
      expect(d.status).toBeUndefined();
      expect(Object.keys(d.metadata).sort()).not.toContain('uid');
    }
    // Services and Brokers come before what refers to them.
    expect(docs.findIndex((d) => d.kind === 'Broker')).toBeLessThan(
      docs.findIndex((d) => d.kind === 'Trigger'),
    );
    const imp = await run(['import', '-f', file], { env: on(b) });
    expect(imp.stderr).toBe('');
    expect(imp.stdout).toMatch(new RegExp(`^${docs.length} resources imported`));
    // The second server holds the same resources: exporting it gives the same file.
    const again = await run(['export'], { env: on(b) });
    expect(again.stdout).toBe(readFileSync(file, 'utf8'));
    const triggers = await run(['get', 'triggers', '-A'], { env: on(b) });
    expect(triggers.stdout).not.toMatch(/False/);
  } finally {
    for (const s of [a, b]) {
      s.child.kill('SIGTERM');
      await s.exited();
    }
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);
