/** ContainerSource: Trellis runs the container's command as a supervised local process with K_SINK. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run, serve } from './helpers/process.js';
import { testServer } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

/** A heartbeat program: posts an event to K_SINK every 100 ms with the overrides, and logs each one. */
const HEARTBEAT = `
const ext = JSON.parse(process.env.K_CE_OVERRIDES || '{"extensions":{}}').extensions;
let n = 0;
setInterval(async () => {
  n++;
  const h = { 'ce-specversion': '1.0', 'ce-id': 'hb-' + n, 'ce-source': '/heartbeat', 'ce-type': 'dev.knative.eventing.samples.heartbeat', 'content-type': 'application/json' };
  for (const [k, v] of Object.entries(ext)) h['ce-' + k] = v;
  await fetch(process.env.K_SINK, { method: 'POST', headers: h, body: JSON.stringify({ n, label: process.env.LABEL, secret: process.env.TRELLIS_ADMIN_TOKEN ?? null }) }).catch(() => {});
  console.log('sent heartbeat ' + n);
}, 100);
process.on('SIGTERM', () => { console.log('bye'); process.exit(0); });
`;

const TOKEN = 'a-secret-the-child-must-not-see';

function containerSource(name: string, container: Record<string, unknown>, sink: Record<string, unknown>) {
  return `apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata: {name: ${name}}
spec:
  template:
    spec:
      containers:
        - ${JSON.stringify(container)}
  sink: ${JSON.stringify(sink)}
  ceOverrides: {extensions: {origin: heartbeat}}
`;
}

async function status(url: string, name: string, token?: string) {
  const r = await fetch(`${url}/apis/sources.knative.dev/v1/namespaces/default/containersources/${name}`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return ((await r.json()) as { status?: Record<string, unknown> }).status ?? {};
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('ContainerSource', () => {
  it('runs the command with K_SINK and K_CE_OVERRIDES, logs its output, reports it, and stops it on delete', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-cs-'));
    await using sink = await startSink();
    const t = await serve(['--data-dir', join(dir, 'd'), '--allow-commands', '--log-level', 'info'], {
      TRELLIS_ADMIN_TOKEN: TOKEN,
    });
    const env = { TRELLIS_SERVER: t.url, TRELLIS_ADMIN_TOKEN: TOKEN };
    try {
      const yaml = containerSource(
        'heartbeat',
        {
          name: 'hb',
          image: 'example/heartbeats',
          command: [process.execPath],
          args: ['-e', HEARTBEAT],
          env: [{ name: 'LABEL', value: 'local' }],
        },
        { uri: sink.url },
      );
      expect((await run(['apply', '-f', '-'], { input: yaml, env })).code).toBe(0);
      const got = await sink.waitFor(2, 15_000);
      expect(got[0]!.event.attrs['origin']).toBe('heartbeat');
      const data = JSON.parse(got[0]!.event.data!.toString()) as { label: string; secret: unknown };
      // Its own environment, and none of the server's secrets.
      expect(data).toMatchObject({ label: 'local', secret: null });
      await expect
        .poll(
          async () =>
            ((await status(t.url, 'heartbeat', TOKEN))['process'] as { state?: string } | undefined)?.state,
        )
        .toBe('Running');
      const st = await status(t.url, 'heartbeat', TOKEN);
      const pid = (st['process'] as { pid: number }).pid;
      expect(alive(pid)).toBe(true);
      expect(
        (st['conditions'] as { type: string; status: string }[]).find((c) => c.type === 'Ready')?.status,
      ).toBe('True');
      // Its output is in the server's log, a line at a time, with the source's name.
      await expect.poll(() => t.output().includes('sent heartbeat')).toBe(true);
      const line = JSON.parse(
        t
          .output()
          .split('\n')
          .find((l) => l.includes('sent heartbeat'))!,
      ) as Record<string, unknown>;
      expect(line).toMatchObject({ containersource: 'default/heartbeat', stream: 'stdout', pid });
      const table = await run(['get', 'containersources'], { env });
      expect(table.stdout).toMatch(/heartbeat\s+\S+\s+Running/);
      expect((await run(['delete', 'containersource', 'heartbeat'], { env })).code).toBe(0);
      await expect.poll(() => alive(pid), { timeout: 10_000 }).toBe(false);
    } finally {
      t.child.kill('SIGTERM');
      await t.exited();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('restarts a process that exits, with backoff, and says so in status', async () => {
    await using s = await testServer({ allowCommands: true });
    const yaml = containerSource(
      'flaky',
      { command: [process.execPath, '-e', 'process.exit(3)'] },
      { uri: 'http://127.0.0.1:9/' },
    );
    const r = await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: s.url } });
    expect(r.code, r.stderr).toBe(0);
    await expect
      .poll(
        async () =>
          ((await status(s.url, 'flaky'))['process'] as { restarts?: number } | undefined)?.restarts ?? 0,
        {
          timeout: 15_000,
        },
      )
      .toBeGreaterThanOrEqual(2);
    const st = await status(s.url, 'flaky');
    const p = st['process'] as { state: string; message: string; lastExit?: string };
    expect(p.state).toBe('BackOff');
    expect(p.message).toMatch(/exited with code 3; starting again in \d+ s/);
    const ready = (st['conditions'] as { type: string; status: string; reason?: string }[]).find(
      (c) => c.type === 'Ready',
    );
    expect(ready).toMatchObject({ status: 'False', reason: 'BackOff' });
  });

  it('runs commands, not images; runs nothing without --allow-commands; refuses Kubernetes secrets', async () => {
    await using s = await testServer();
    const env = { TRELLIS_SERVER: s.url };
    // Knative's docs example: an image and args, no command.
    const image = containerSource(
      'image-only',
      { image: 'gcr.io/knative-releases/heartbeats', args: ['--period=1'] },
      { uri: 'http://127.0.0.1:9/' },
    );
    expect((await run(['apply', '-f', '-'], { input: image, env })).code).toBe(0);
    await expect
      .poll(
        async () =>
          (
            (await status(s.url, 'image-only'))['conditions'] as
              | { type: string; message?: string }[]
              | undefined
          )?.find((c) => c.type === 'Ready')?.message,
      )
      .toContain('Trellis runs commands, not images');
    const cmd = containerSource(
      'disabled',
      { command: [process.execPath, '-e', ''] },
      { uri: 'http://127.0.0.1:9/' },
    );
    expect((await run(['apply', '-f', '-'], { input: cmd, env })).code).toBe(0);
    await expect
      .poll(
        async () =>
          ((await status(s.url, 'disabled'))['process'] as { state?: string; message?: string } | undefined)
            ?.message,
      )
      .toContain('start it with --allow-commands');
    const secret = containerSource(
      'secret',
      { command: ['x'], env: [{ name: 'TOKEN', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }] },
      { uri: 'http://127.0.0.1:9/' },
    );
    const bad = await run(['apply', '-f', '-'], { input: secret, env });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('spec.template.spec.containers[0].env[0].valueFrom');
    const two = `apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata: {name: two}\nspec:\n  template:\n    spec:\n      containers: [{command: [a]}, {command: [b]}]\n  sink: {uri: 'http://127.0.0.1:9/'}\n`;
    const r2 = await run(['apply', '-f', '-'], { input: two, env });
    expect(r2.stderr).toContain('list one container');
  });
});
