/** `trellis export` and `trellis import`: moving every resource from one server to another. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parseDocuments } from '../src/resources/registry.js';
import { destroyNatsStore } from '../src/store/nats/nats-store.js';
import { NATS_URL, natsUp } from './helpers/nats.js';
import { run, serve } from './helpers/process.js';
import { ceHeaders } from './helpers/server.js';
import { ROOT } from './helpers/shared.js';
import { startSink } from './helpers/sink.js';

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

it('moves retained events from the embedded store to NATS as history, delivering none of them again', async () => {
  const useNats = await natsUp();
  const dir = mkdtempSync(join(tmpdir(), 'trellis-export-events-'));
  const prefix = `x${randomBytes(5).toString('hex')}`;
  await using sink = await startSink();
  const a = await serve(['--data-dir', join(dir, 'a'), '--retention', 'PT1H']);
  const b = await serve(
    useNats
      ? ['--store', 'nats', '--nats-url', NATS_URL, '--nats-prefix', prefix, '--data-dir', join(dir, 'b')]
      : ['--data-dir', join(dir, 'b')],
  );
  try {
    const on = (s: { url: string }) => ({ TRELLIS_SERVER: s.url });
    const yaml = `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: orders}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: all}\nspec:\n  broker: orders\n  subscriber: {uri: '${sink.url}'}\n`;
    expect((await run(['apply', '-f', '-'], { input: yaml, env: on(a) })).code).toBe(0);
    for (let i = 0; i < 7; i++) {
      const r = await fetch(`${a.url}/default/orders`, {
        method: 'POST',
        headers: { ...ceHeaders(`h${i}`), 'content-type': 'application/json' },
        body: JSON.stringify({ n: i }),
      });
      expect(r.status).toBe(202);
    }
    await sink.waitFor(7);
    const res = join(dir, 'mesh.yaml');
    const evs = join(dir, 'events.jsonl');
    const exp = await run(['export', '--file', res, '--events', evs], { env: on(a) });
    expect(exp.code, exp.stderr).toBe(0);
    expect(exp.stderr).toContain('7 events exported');
    expect(readFileSync(evs, 'utf8').trim().split('\n')).toHaveLength(7);
    const imp = await run(['import', '-f', res, '--events', evs], { env: on(b) });
    expect(imp.code, imp.stderr).toBe(0);
    expect(imp.stdout).toContain('7 events imported');
    const page = (await (
      await fetch(`${b.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/orders/history`)
    ).json()) as { items: { event: { id: string; data: unknown } }[] };
    expect(page.items.map((x) => x.event.id)).toEqual(Array.from({ length: 7 }, (_, i) => `h${i}`));
    expect(page.items[3]!.event.data).toEqual({ n: 3 });
    // History is not traffic: the Trigger on the new server sends none of it again.
    const more = await fetch(`${b.url}/default/orders`, {
      method: 'POST',
      headers: ceHeaders('after'),
      body: '{}',
    });
    expect(more.status).toBe(202);
    await sink.waitFor(8);
    expect(sink.received.map((r) => r.event.attrs['id'])).toEqual([
      ...Array.from({ length: 7 }, (_, i) => `h${i}`),
      'after',
    ]);
    // Bad input: a line that is not an event of a Broker, and a Broker that does not exist.
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"kind":"Trigger","namespace":"default","name":"x","event":{}}\n');
    const r1 = await run(['import', '-f', res, '--events', bad], { env: on(b) });
    expect(r1.code).not.toBe(0);
    expect(r1.stderr).toContain('line 1');
    writeFileSync(
      bad,
      '{"kind":"Broker","namespace":"default","name":"nope","event":{"specversion":"1.0","id":"1","source":"/s","type":"t"}}\n',
    );
    const r2 = await run(['import', '-f', res, '--events', bad], { env: on(b) });
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toContain('Broker default/nope does not exist');
    const r3 = await fetch(
      `${b.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/orders/history`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents-batch+json' },
        body: '[{"specversion":"1.0","id":"","source":"/s","type":"t"}]',
      },
    );
    expect(r3.status).toBe(400);
  } finally {
    for (const s of [a, b]) {
      s.child.kill('SIGTERM');
      await s.exited();
    }
    if (useNats) await destroyNatsStore(NATS_URL, prefix);
    rmSync(dir, { recursive: true, force: true });
  }
});
