/** Logs: JSON or pretty, a request id per ingress request and per delivery, no event data. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { serve } from './helpers/process.js';
import { ceHeaders } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const SECRET = 'SECRET-DATA-4711';

describe('logs', () => {
  it('ingress answers carry a request id (the sender’s when plain), and log lines name it; deliveries have ids; no event data is logged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-logs-'));
    await using sink = await startSink((_r, res) => res.writeHead(400).end('no thanks'));
    const yaml = `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec: {broker: b, subscriber: {uri: "${sink.url}"}}\n`;
    const file = join(dir, 'r.yaml');
    (await import('node:fs')).writeFileSync(file, yaml);
    const t = await serve([
      '--data-dir',
      join(dir, 'd'),
      '-f',
      file,
      '--log-level',
      'debug',
      '--log-format',
      'json',
    ]);
    try {
      const given = await fetch(`${t.url}/default/nope`, {
        method: 'POST',
        headers: { ...ceHeaders('e-1'), 'x-request-id': 'client-req.42' },
        body: `{"x":"${SECRET}"}`,
      });
      expect(given.status).toBe(404);
      expect(given.headers.get('x-request-id')).toBe('client-req.42');
      expect(((await given.json()) as { requestId: string }).requestId).toBe('client-req.42');
      // An id that is not plain is replaced by the server's own.
      const odd = await fetch(`${t.url}/default/nope`, {
        method: 'POST',
        headers: { ...ceHeaders('e-2'), 'x-request-id': '<script>alert(1)</script>' },
        body: '{}',
      });
      const oddId = odd.headers.get('x-request-id')!;
      expect(oddId).toMatch(/^[A-Za-z0-9_-]+-[0-9a-z]+$/);
      const ok1 = await fetch(`${t.url}/default/b`, {
        method: 'POST',
        headers: ceHeaders('e-3'),
        body: `{"x":"${SECRET}"}`,
      });
      const ok2 = await fetch(`${t.url}/default/b`, {
        method: 'POST',
        headers: ceHeaders('e-4'),
        body: '{}',
      });
      expect(ok1.status).toBe(202);
      const [a, b] = [ok1.headers.get('x-request-id')!, ok2.headers.get('x-request-id')!];
      expect(a).not.toBe(b);
      expect(a.split('-')[0]).toBe(b.split('-')[0]); // one process, one prefix, a counter
      // The subscriber refuses (400, not retried, no dead-letter sink): dropped, with the delivery's id.
      await sink.waitFor(2);
      await expect.poll(() => t.output().split('event dropped').length - 1, { timeout: 10_000 }).toBe(2);
      const lines = t
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const refused = lines.find((l) => l['requestId'] === 'client-req.42');
      expect(refused).toMatchObject({
        level: 20,
        status: 404,
        code: 'TRELLIS_ERR_BROKER_NOT_FOUND',
        path: '/default/nope',
      });
      const dropped = lines.filter((l) => String(l['msg']).includes('event dropped'));
      expect(dropped.length).toBe(2);
      for (const d of dropped) expect(String(d['delivery'])).toMatch(/^[0-9a-f-]{36}:\d+#0$/);
      expect(dropped[0]!['delivery']).not.toBe(dropped[1]!['delivery']);
      expect(t.output()).not.toContain(SECRET);
    } finally {
      t.child.kill('SIGTERM');
      await t.exited();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--log-format pretty writes lines for people', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-logs-'));
    const t = await serve(['--data-dir', join(dir, 'd'), '--log-level', 'info', '--log-format', 'pretty']);
    try {
      await fetch(`${t.url}/readyz`);
      t.child.kill('SIGTERM');
      await t.exited();
      const out = t.output();
      expect(out).toMatch(/INFO.*: /);
      expect(out.split('\n').some((l) => l.startsWith('{"level"'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
