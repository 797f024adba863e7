/** Sequence and Parallel (flows.knative.dev/v1) on the one delivery engine. */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { serve } from './helpers/process.js';
import { ceHeaders, testServer } from './helpers/server.js';
import { type Received, startSink } from './helpers/sink.js';

function flow(kind: 'Sequence' | 'Parallel', name: string, spec: Record<string, unknown>) {
  return { apiVersion: 'flows.knative.dev/v1', kind, metadata: { name }, spec };
}

/** A step that answers with the event, its data extended by `tag` (as a transforming function would). */
function appender(tag: string) {
  return (r: Received, res: ServerResponse) => {
    const data = JSON.parse(r.event.data?.toString() ?? '{}') as { path?: string[] };
    res
      .writeHead(200, {
        'ce-specversion': '1.0',
        'ce-id': String(r.event.attrs['id']),
        'ce-source': `/step/${tag}`,
        'ce-type': 'step.out',
        'content-type': 'application/json',
      })
      .end(JSON.stringify({ path: [...(data.path ?? []), tag] }));
  };
}

type Status = {
  status: Record<string, unknown> & { conditions: { type: string; status: string; reason?: string }[] };
};

describe('Sequence', () => {
  it('passes each event through three steps in order, and the last reply to spec.reply', async () => {
    await using a = await startSink(appender('a'));
    await using b = await startSink(appender('b'));
    await using c = await startSink(appender('c'));
    await using out = await startSink();
    await using s = await testServer();
    const res = await s.apply(
      flow('Sequence', 'pipeline', {
        steps: [{ uri: a.url }, { uri: b.url }, { uri: c.url }],
        reply: { uri: out.url },
      }),
    );
    expect(res.status).toBe(201);
    const seq = (await res.json()) as Status;
    expect(seq.status.conditions[0]).toMatchObject({ type: 'Ready', status: 'True' });
    expect((seq.status['address'] as { url: string }).url).toBe(`${s.url}/sequences/default/pipeline`);
    expect(seq.status['subscriptionStatuses']).toHaveLength(3);
    for (let i = 0; i < 10; i++)
      expect((await s.post('/sequences/default/pipeline', ceHeaders(`s${i}`), '{"path":[]}')).status).toBe(
        202,
      );
    await out.waitFor(10);
    for (const r of out.received)
      expect(JSON.parse(r.event.data!.toString())).toEqual({ path: ['a', 'b', 'c'] });
    expect(b.received.every((r) => r.event.attrs['source'] === '/step/a')).toBe(true);
  });

  it("dead-letters at the step that fails, with that step's delivery", async () => {
    await using a = await startSink(appender('a'));
    await using broken = await startSink((_r, res) => res.writeHead(500).end());
    await using dls = await startSink();
    await using out = await startSink();
    await using s = await testServer();
    await s.apply(
      flow('Sequence', 'p', {
        steps: [
          { uri: a.url },
          {
            uri: broken.url,
            delivery: { retry: 2, backoffDelay: 'PT0.01S', deadLetterSink: { uri: dls.url } },
          },
        ],
        reply: { uri: out.url },
      }),
    );
    expect((await s.post('/sequences/default/p', ceHeaders('x'), '{}')).status).toBe(202);
    const [dead] = await dls.waitFor(1);
    expect(dead!.event.attrs['source']).toBe('/step/a');
    expect(dead!.event.attrs['knativeerrorcode']).toBe('500');
    expect(broken.received).toHaveLength(3);
    expect(out.received).toHaveLength(0);
  });

  it('is not Ready while a step cannot be resolved, and says which', async () => {
    await using s = await testServer();
    const res = await s.apply(
      flow('Sequence', 'p', {
        steps: [{ ref: { apiVersion: 'serving.knative.dev/v1', kind: 'Service', name: 'first' } }],
      }),
    );
    const seq = (await res.json()) as Status;
    expect(seq.status.conditions[0]).toMatchObject({
      type: 'Ready',
      status: 'False',
      reason: 'Unresolvable',
    });
    const r = await s.post('/sequences/default/p', ceHeaders('x'), '{}');
    expect(r.status).toBe(404);
    expect(((await r.json()) as { code: string }).code).toBe('TRELLIS_ERR_DESTINATION_NOT_READY');
  });
});

describe('Parallel', () => {
  it('gives each event to every branch whose filter lets it through, replies to spec.reply', async () => {
    // The filter lets through events whose type is order.created: it answers with the event, or 202.
    await using filter = await startSink((r, res) => {
      if (r.event.attrs['type'] !== 'order.created') return void res.writeHead(202).end();
      res
        .writeHead(200, {
          'ce-specversion': '1.0',
          'ce-id': String(r.event.attrs['id']),
          'ce-source': '/f',
          'ce-type': 'order.created',
        })
        .end();
    });
    await using all = await startSink(appender('all'));
    await using created = await startSink(appender('created'));
    await using out = await startSink();
    await using s = await testServer();
    const res = await s.apply(
      flow('Parallel', 'fan', {
        branches: [
          { subscriber: { uri: all.url } },
          { filter: { uri: filter.url }, subscriber: { uri: created.url } },
        ],
        reply: { uri: out.url },
      }),
    );
    const par = (await res.json()) as Status;
    expect(par.status.conditions[0]).toMatchObject({ type: 'Ready', status: 'True' });
    expect(par.status['branchStatuses']).toHaveLength(2);
    expect((await s.post('/parallels/default/fan', ceHeaders('o1', 'order.created'), '{}')).status).toBe(202);
    expect((await s.post('/parallels/default/fan', ceHeaders('o2', 'order.shipped'), '{}')).status).toBe(202);
    await out.waitFor(3);
    await expect.poll(() => s.dispatcher.inflight()).toBe(0);
    expect(all.received.map((r) => r.event.attrs['id']).sort()).toEqual(['o1', 'o2']);
    expect(created.received.map((r) => r.event.attrs['id'])).toEqual(['o1']);
    expect(out.received).toHaveLength(3);
  });
});

describe('a crash in the middle of a Sequence', () => {
  it('loses nothing: every event acknowledged reaches the end after kill -9 and a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-flow-'));
    // Step b is down at first: events wait between the steps when the server is killed.
    let bUp = false;
    await using a = await startSink(appender('a'));
    await using b = await startSink((r, res) =>
      bUp ? appender('b')(r, res) : void res.writeHead(503).end(),
    );
    await using out = await startSink();
    const file = join(dir, 'seq.yaml');
    writeFileSync(
      file,
      `apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata:\n  name: p\nspec:\n  steps:\n    - uri: ${a.url}\n    - uri: ${b.url}\n      delivery:\n        retry: 1000\n        backoffDelay: PT0.05S\n        backoffPolicy: linear\n        backoffMax: PT0.2S\n  reply:\n    uri: ${out.url}\n`,
    );
    const args = ['--data-dir', join(dir, 'data'), '-f', file];
    try {
      const first = await serve(args);
      for (let i = 0; i < 50; i++) {
        const r = await fetch(`${first.url}/sequences/default/p`, {
          method: 'POST',
          headers: ceHeaders(`c${i}`),
          body: '{"path":[]}',
        });
        expect(r.status).toBe(202);
      }
      await a.waitFor(50);
      await expect.poll(() => b.received.length).toBeGreaterThan(0);
      first.child.kill('SIGKILL');
      await first.exited();
      bUp = true;
      const second = await serve(args);
      try {
        await expect
          .poll(() => new Set(out.received.map((r) => r.event.attrs['id'])).size, { timeout: 30_000 })
          .toBe(50);
        for (const r of out.received)
          expect(JSON.parse(r.event.data!.toString())).toEqual({ path: ['a', 'b'] });
      } finally {
        second.child.kill('SIGTERM');
        await second.exited();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
