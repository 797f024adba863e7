/** Dead letters kept in Trellis: browsed with CESQL, redriven, purged, audited; retries listed. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run, serve } from './helpers/process.js';
import { ceHeaders, testServer } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const DL = '/apis/eventing.knative.dev/v1/namespaces/default/brokers/b/deadletters';

interface Listed {
  items: {
    seq: number;
    subscription: { id: string; kind?: string; name?: string };
    errorCode?: number;
    errorData?: string;
    attempts?: number;
    event: Record<string, unknown>;
  }[];
}

describe('dead letters', () => {
  it('are kept with the error, listed with a CESQL filter, redriven to their Trigger or a URL, purged, and audited', {
    timeout: 60_000,
  }, async () => {
    let broken = true;
    await using sub = await startSink((_r, res) =>
      broken ? res.writeHead(500).end('boom') : res.writeHead(202).end(),
    );
    await using elsewhere = await startSink();
    const dir = mkdtempSync(join(tmpdir(), 'trellis-dl-'));
    const file = join(dir, 'r.yaml');
    writeFileSync(
      file,
      `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n---\n` +
        `apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: fails, annotations: {trellis.dev/dead-letters: keep}}\n` +
        `spec: {broker: b, subscriber: {uri: "${sub.url}"}, delivery: {retry: 1, backoffPolicy: linear, backoffDelay: PT0.01S}}\n`,
    );
    const t = await serve([
      '--data-dir',
      join(dir, 'd'),
      '-f',
      file,
      '--log-level',
      'info',
      '--log-format',
      'json',
    ]);
    const env = { TRELLIS_SERVER: t.url };
    const list = async (q = '') => ((await (await fetch(`${t.url}${DL}${q}`)).json()) as Listed).items;
    try {
      for (const [id, type] of [
        ['e-1', 'a.one'],
        ['e-2', 'a.two'],
        ['e-3', 'b.one'],
      ])
        expect(
          (
            await fetch(`${t.url}/default/b`, {
              method: 'POST',
              headers: ceHeaders(id!, type),
              body: `{"id":"${id}"}`,
            })
          ).status,
        ).toBe(202);
      await expect.poll(async () => (await list()).length, { timeout: 20_000 }).toBe(3);
      // Kept in the order their last attempts failed (concurrent deliveries: not always the order sent).
      const items = await list();
      const byId = (id: string) => items.find((x) => x.event['id'] === id)!;
      expect(byId('e-1')).toMatchObject({
        errorCode: 500,
        errorData: 'boom',
        attempts: 2,
        subscription: { kind: 'Trigger', name: 'fails' },
      });
      // The event as it was sent, without the error extensions.
      expect(byId('e-1').event['knativeerrorcode']).toBeUndefined();
      expect(byId('e-1').event['data']).toEqual({ id: 'e-1' });
      expect(
        (await list(`?filter=${encodeURIComponent("type LIKE 'a.%'")}`)).map((x) => x.event['id']).sort(),
      ).toEqual(['e-1', 'e-2']);
      expect((await list(`?filter=${encodeURIComponent("knativeerrorcode = '500'")}`)).length).toBe(3);
      expect((await list('?limit=1')).length).toBe(1);

      const table = await run(['deadletters', 'list', 'default/b', '--filter', "type = 'b.one'"], { env });
      expect(table.code, table.stderr).toBe(0);
      expect(table.stdout).toMatch(/^\d+\s+\S+\s+Trigger default\/fails\s+b\.one\s+e-3\s+500\s+boom\s*$/m);
      expect(table.stdout).not.toContain('a.one');
      const show = await run(['deadletters', 'show', 'default/b', String(byId('e-2').seq)], { env });
      expect(JSON.parse(show.stdout)).toMatchObject({ errorData: 'boom', event: { id: 'e-2' } });

      // The subscriber is fixed: redrive one to its Trigger, another to somewhere else.
      broken = false;
      const before = sub.received.length;
      const re = await run(['deadletters', 'redrive', 'default/b', '--filter', "type = 'a.one'"], { env });
      expect(re.code, re.stderr).toBe(0);
      expect(re.stdout).toContain('1 dead letter redriven');
      await sub.waitFor(before + 1);
      const again = sub.received.at(-1)!;
      expect(again.event.attrs['id']).toBe('e-1');
      expect(again.event.attrs['knativeerrorcode']).toBeUndefined();
      expect(again.event.attrs['trellissubscription']).toBeUndefined();
      const to = await run(
        ['deadletters', 'redrive', 'default/b', '--seq', String(byId('e-2').seq), '--to', elsewhere.url],
        { env },
      );
      expect(to.code, to.stderr).toBe(0);
      expect((await elsewhere.waitFor(1))[0]!.event.attrs['id']).toBe('e-2');
      expect((await list()).map((x) => x.event['id'])).toEqual(['e-3']);

      const purge = await run(['deadletters', 'purge', 'default/b', '--all'], { env });
      expect(purge.stdout).toContain('1 dead letter purged');
      expect(await list()).toEqual([]);
      const audit = t
        .output()
        .split('\n')
        .filter((l) => l.includes('"audit"'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(audit.map((a) => [a['audit'], a['redriven'] ?? a['purged']])).toEqual([
        ['deadletters.redrive', 1],
        ['deadletters.redrive', 1],
        ['deadletters.purge', 1],
      ]);
      expect(audit[1]!['to']).toBe(elsewhere.url);
    } finally {
      t.child.kill('SIGTERM');
      await t.exited();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a Sequence step and a Channel Subscription keep theirs too, under their flow and Channel', async () => {
    await using s = await testServer();
    const keep = { 'trellis.dev/dead-letters': 'keep' };
    const docs = [
      {
        apiVersion: 'flows.knative.dev/v1',
        kind: 'Sequence',
        metadata: { name: 'pipe', namespace: 'default', annotations: keep },
        spec: { steps: [{ uri: 'http://127.0.0.1:9/', delivery: { retry: 0 } }] },
      },
      {
        apiVersion: 'messaging.knative.dev/v1',
        kind: 'InMemoryChannel',
        metadata: { name: 'ch', namespace: 'default' },
        spec: {},
      },
      {
        apiVersion: 'messaging.knative.dev/v1',
        kind: 'Subscription',
        metadata: { name: 'sub', namespace: 'default', annotations: keep },
        spec: {
          channel: { apiVersion: 'messaging.knative.dev/v1', kind: 'InMemoryChannel', name: 'ch' },
          subscriber: { uri: 'http://127.0.0.1:9/' },
          delivery: { retry: 0 },
        },
      },
    ];
    for (const d of docs) expect((await s.apply(d)).status).toBe(201);
    expect((await s.post('/sequences/default/pipe', ceHeaders('q-1'), '{}')).status).toBe(202);
    expect((await s.post('/inmemorychannels/default/ch', ceHeaders('c-1'), '{}')).status).toBe(202);
    const kept = async (path: string) =>
      ((await (await fetch(`${s.url}${path}/deadletters`)).json()) as Listed).items.map((x) => [
        x.event['id'],
        x.subscription.kind,
        x.subscription.name,
      ]);
    await expect
      .poll(() => kept('/apis/flows.knative.dev/v1/namespaces/default/sequences/pipe'), { timeout: 15_000 })
      .toEqual([['q-1', 'Sequence', 'pipe step 0']]);
    await expect
      .poll(() => kept('/apis/messaging.knative.dev/v1/namespaces/default/inmemorychannels/ch'), {
        timeout: 15_000,
      })
      .toEqual([['c-1', 'Subscription', 'sub']]);
  });

  it('lists pending retries with the last answer; refuses unclear selections; a gone Trigger needs --to', {
    timeout: 60_000,
  }, async () => {
    await using busy = await startSink((_r, res) => res.writeHead(503).end('busy, try later'));
    await using elsewhere = await startSink();
    const dir = mkdtempSync(join(tmpdir(), 'trellis-dl-'));
    const file = join(dir, 'r.yaml');
    writeFileSync(
      file,
      `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b, annotations: {trellis.dev/dead-letters: keep}}\n---\n` +
        `apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: slow}\nspec: {broker: b, filter: {attributes: {type: slow}}, subscriber: {uri: "${busy.url}"}, delivery: {retry: 5, backoffDelay: PT1H}}\n---\n` +
        `apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: gone}\nspec: {broker: b, filter: {attributes: {type: gone}}, subscriber: {uri: "http://127.0.0.1:9/"}, delivery: {retry: 0}}\n`,
    );
    const t = await serve(['--data-dir', join(dir, 'd'), '-f', file]);
    const env = { TRELLIS_SERVER: t.url };
    try {
      expect(
        (await fetch(`${t.url}/default/b`, { method: 'POST', headers: ceHeaders('s-1', 'slow'), body: '{}' }))
          .status,
      ).toBe(202);
      expect(
        (await fetch(`${t.url}/default/b`, { method: 'POST', headers: ceHeaders('g-1', 'gone'), body: '{}' }))
          .status,
      ).toBe(202);
      await expect
        .poll(async () => (await run(['retries'], { env })).stdout, { timeout: 20_000 })
        .toMatch(/Trigger default\/slow\s+\d+\s+s-1\s+1\s+\S+\s+503: busy, try later/);
      // The Broker's annotation keeps the dead letters of all its Triggers.
      await expect
        .poll(async () => ((await (await fetch(`${t.url}${DL}`)).json()) as Listed).items.length)
        .toBe(1);

      const post = (path: string, body: unknown) =>
        fetch(`${t.url}${DL}/${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      for (const [body, field] of [
        [{}, 'exactly one of'],
        [{ all: true, filter: "type = 'x'" }, 'exactly one of'],
        [{ filter: 'type = (' }, 'filter: CESQL does not parse'],
        [{ all: true, to: 'ftp://x/' }, 'to: an absolute http(s) URL'],
        [{ seqs: [0] }, 'seqs:'],
        [{ all: true, purge: 1 }, 'purge: not a field here'],
      ] as const) {
        const r = await post('redrive', body);
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(((await r.json()) as { message: string }).message).toContain(field);
      }
      expect(
        (await fetch(`${t.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/nope/deadletters`))
          .status,
      ).toBe(404);
      const cli = await run(['deadletters', 'purge', 'default/b'], { env });
      expect(cli.code).not.toBe(0);
      expect(cli.stderr).toContain('exactly one of --seq');
      const bad = await run(['apply', '-f', '-'], {
        env,
        input:
          'apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: x, annotations: {trellis.dev/dead-letters: yes}}\nspec: {broker: b, subscriber: {uri: "http://127.0.0.1:9/"}}\n',
      });
      expect(bad.stderr).toContain("metadata.annotations.trellis.dev/dead-letters: must be 'keep' or 'none'");

      // Its Trigger deleted, a dead letter can only go somewhere else.
      expect((await run(['delete', 'trigger', 'gone'], { env })).code).toBe(0);
      const r = await post('redrive', { all: true });
      const res = (await r.json()) as { redriven: number; failed: { reason: string }[] };
      expect(res.redriven).toBe(0);
      expect(res.failed[0]!.reason).toContain('no longer exists');
      expect(
        ((await (await post('redrive', { all: true, to: elsewhere.url })).json()) as { redriven: number })
          .redriven,
      ).toBe(1);
      expect((await elsewhere.waitFor(1))[0]!.event.attrs['id']).toBe('g-1');
    } finally {
      t.child.kill('SIGTERM');
      await t.exited();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
