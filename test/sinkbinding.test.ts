/** SinkBinding and `trellis run`: a local command gets K_SINK and K_CE_OVERRIDES, as a bound pod would. */
import { describe, expect, it } from 'vitest';
import { run } from './helpers/process.js';
import { broker, testServer } from './helpers/server.js';

const binding = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'sources.knative.dev/v1',
  kind: 'SinkBinding',
  metadata: { name, namespace: 'default' },
  spec,
});
const printEnv = [
  'node',
  '-e',
  'console.log(JSON.stringify({s: process.env.K_SINK, o: process.env.K_CE_OVERRIDES}))',
];

describe('SinkBinding and trellis run', () => {
  it('resolves the sink in status, and trellis run gives it (and the overrides) to the command', async () => {
    await using s = await testServer();
    await s.apply(broker('default'));
    const r = await s.apply(
      binding('bind-heartbeat', {
        subject: {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          selector: { matchLabels: { app: 'heartbeat-cron' } },
        },
        sink: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'default' } },
        ceOverrides: { extensions: { sink: 'bound' } },
      }),
    );
    expect(r.status, await r.text()).toBeLessThan(300);
    const o = (await (
      await fetch(`${s.url}/apis/sources.knative.dev/v1/namespaces/default/sinkbindings/bind-heartbeat`)
    ).json()) as { status: { sinkUri: string } };
    expect(o.status.sinkUri).toBe(`${s.url}/default/default`);
    const env = { TRELLIS_SERVER: s.url };
    const out = await run(['run', '--sink', 'sinkbinding/bind-heartbeat', '--', ...printEnv], { env });
    expect(out.code, out.stderr).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual({
      s: `${s.url}/default/default`,
      o: '{"extensions":{"sink":"bound"}}',
    });
    // An addressable resource directly, and a URL.
    const direct = await run(['run', '--sink', 'broker/default', '--', ...printEnv], { env });
    expect(JSON.parse(direct.stdout)).toEqual({ s: `${s.url}/default/default` });
    const url = await run(['run', '--sink', 'http://example.test/x', '--', ...printEnv], { env });
    expect(JSON.parse(url.stdout)).toEqual({ s: 'http://example.test/x' });
    // The command's exit code is trellis run's.
    const exit = await run(['run', '--sink', 'broker/default', '--', 'node', '-e', 'process.exit(3)'], {
      env,
    });
    expect(exit.code).toBe(3);
  });

  it('refuses what it cannot run with: a binding that is not Ready, a kind with no address, a bad spec', async () => {
    await using s = await testServer();
    await s.apply(
      binding('dangling', {
        subject: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'x' },
        sink: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'missing' } },
      }),
    );
    const env = { TRELLIS_SERVER: s.url };
    const notReady = await run(['run', '--sink', 'sinkbinding/dangling', '--', ...printEnv], { env });
    expect(notReady.code).toBe(1);
    expect(notReady.stderr).toContain('SinkBinding default/dangling is not Ready');
    const missing = await run(['run', '--sink', 'sinkbinding/none', '--', ...printEnv], { env });
    expect(missing.code).toBe(1);
    const noKind = await run(['run', '--sink', 'gadget/x', '--', ...printEnv], { env });
    expect(noKind.stderr).toContain("no kind 'gadget'");
    const noCommand = await run(['run', '--sink', 'http://x.test/', '--', 'no-such-command-xyz'], { env });
    expect(noCommand.code).toBe(127);
    for (const [spec, message] of [
      [{ sink: { uri: 'http://x.test/' } }, 'spec.subject: is required'],
      [
        { subject: { apiVersion: 'v1', kind: 'Pod' }, sink: { uri: 'http://x.test/' } },
        'spec.subject: needs a name or a selector',
      ],
      [
        {
          subject: { apiVersion: 'v1', kind: 'Pod', name: 'a', selector: {} },
          sink: { uri: 'http://x.test/' },
        },
        'spec.subject: set name or selector, not both',
      ],
    ] as [Record<string, unknown>, string][]) {
      const r = await s.apply(binding('bad', spec));
      expect([r.status, ((await r.json()) as { message: string }).message]).toEqual([
        400,
        expect.stringContaining(message),
      ]);
    }
  });
});
