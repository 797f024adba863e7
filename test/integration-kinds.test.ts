/** IntegrationSource (timer) and IntegrationSink (log), as Knative writes them; other Kamelets not Ready. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run, serve } from './helpers/process.js';
import { ceHeaders, testServer } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const source = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'sources.knative.dev/v1alpha1',
  kind: 'IntegrationSource',
  metadata: { name, namespace: 'default' },
  spec,
});
const sinkDoc = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'sinks.knative.dev/v1alpha1',
  kind: 'IntegrationSink',
  metadata: { name, namespace: 'default' },
  spec,
});

async function conditions(url: string, path: string) {
  const o = (await (await fetch(`${url}${path}`)).json()) as {
    status: { conditions: { type: string; status: string; reason?: string; message?: string }[] };
  };
  return o.status.conditions;
}

describe('IntegrationSource', () => {
  it('timer: sends its message every period, repeatCount times in all, with Knative attributes', async () => {
    await using s = await testServer();
    await using sink = await startSink();
    const r = await s.apply(
      source('three', {
        timer: { period: 200, message: 'Hello, Eventing Core', repeatCount: 3 },
        sink: { uri: `${sink.url}three` },
      }),
    );
    expect(r.status, await r.text()).toBeLessThan(300);
    const got = await sink.waitFor(3, 10_000);
    const e = got[0]!.event;
    expect(e.attrs).toMatchObject({
      type: 'dev.knative.eventing.timer',
      source: 'dev.knative.eventing.timer-source',
      subject: 'three',
      datacontenttype: 'text/plain',
    });
    expect(e.data!.toString()).toBe('Hello, Eventing Core');
    // A second timer on the same boundaries: by the time it has fired twice, the first has had its
    // chance to fire a fourth time.
    await s.apply(
      source('two', {
        timer: { period: 200, message: 'x', repeatCount: 2 },
        sink: { uri: `${sink.url}two` },
      }),
    );
    await expect
      .poll(() => sink.received.filter((x) => x.path === '/two').length, { timeout: 10_000 })
      .toBe(2);
    expect(sink.received.filter((x) => x.path === '/three')).toHaveLength(3);
  });

  it('a Kamelet Trellis does not run is accepted as Knative writes it and is not Ready, saying why', async () => {
    await using s = await testServer();
    const r = await s.apply(
      source('s3', {
        aws: {
          s3: { arn: 'arn:aws:s3:::my-bucket', region: 'eu-north-1' },
          auth: { secret: { ref: { name: 'my-secret' } } },
        },
        sink: { uri: 'http://127.0.0.1:9/' },
      }),
    );
    expect(r.status, await r.text()).toBeLessThan(300);
    const c = await conditions(
      s.url,
      '/apis/sources.knative.dev/v1alpha1/namespaces/default/integrationsources/s3',
    );
    expect(c.find((x) => x.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'KameletNotAvailable',
    });
    expect(c.find((x) => x.type === 'Ready')?.message).toContain('Trellis runs the timer source');
  });

  it('refuses bad specs with the field and the rule', async () => {
    await using s = await testServer();
    const sink = { uri: 'http://127.0.0.1:9/' };
    const cases: [Record<string, unknown>, string][] = [
      [{ sink }, 'spec: names no source'],
      [{ timer: { message: 'x' }, aws: {}, sink }, 'spec: names timer and aws'],
      [{ timer: { period: 10, message: 'x' }, sink }, 'spec.timer.period: must be a whole number >= 100'],
      [{ timer: { period: 1000 }, sink }, 'spec.timer.message: is required'],
      [
        { timer: { message: 'x', repeatCount: 0 }, sink },
        'spec.timer.repeatCount: must be a whole number >= 1',
      ],
      [
        { timer: { message: 'x', contentType: 'text' }, sink },
        'spec.timer.contentType: must be a media type',
      ],
      [{ timer: { message: 'x' } }, 'spec.sink: is required'],
    ];
    for (const [spec, message] of cases) {
      const r = await s.apply(source('bad', spec));
      const body = (await r.json()) as { code: string; message: string };
      expect([r.status, body.code, body.message]).toEqual([
        400,
        'TRELLIS_ERR_RESOURCE_INVALID',
        expect.stringContaining(message),
      ]);
    }
  });
});

describe('IntegrationSink', () => {
  it('log: addressable; every event sent to it is written to the server log with its body', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-logsink-'));
    const t = await serve(['--data-dir', join(dir, 'd'), '--log-level', 'info']);
    try {
      const on = { TRELLIS_SERVER: t.url };
      const yaml = `apiVersion: sinks.knative.dev/v1alpha1
kind: IntegrationSink
metadata: {name: audit-log}
spec:
  log:
    loggerName: audit
    level: info
    showHeaders: true
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: to-log}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: sinks.knative.dev/v1alpha1, kind: IntegrationSink, name: audit-log}
`;
      const r = await run(['apply', '-f', '-'], { input: yaml, env: on });
      expect(r.code, r.stderr).toBe(0);
      const o = (await (
        await fetch(`${t.url}/apis/sinks.knative.dev/v1alpha1/namespaces/default/integrationsinks/audit-log`)
      ).json()) as { status: { address: { url: string } } };
      expect(o.status.address.url).toBe(`${t.url}/integrationsinks/default/audit-log`);
      const res = await fetch(`${t.url}/default/default`, {
        method: 'POST',
        headers: { ...ceHeaders('logged-1'), 'ce-orderid': '42' },
        body: '{"total": 12.5}',
      });
      expect(res.status).toBe(202);
      await expect.poll(() => t.output().includes('"logged-1"'), { timeout: 10_000 }).toBe(true);
      const line = t
        .output()
        .split('\n')
        .find((l) => l.includes('"logged-1"'))!;
      const log = JSON.parse(line) as Record<string, unknown>;
      expect(log).toMatchObject({
        logger: 'audit',
        integrationsink: 'default/audit-log',
        msg: 'event received',
      });
      expect((log['event'] as Record<string, unknown>)['orderid']).toBe('42');
      expect(log['body']).toBe('{"total": 12.5}');
      // Straight to its address, and a wrong method.
      const direct = await fetch(`${t.url}/integrationsinks/default/audit-log`, {
        method: 'POST',
        headers: ceHeaders('logged-2'),
        body: '{}',
      });
      expect(direct.status).toBe(202);
      expect((await fetch(`${t.url}/integrationsinks/default/audit-log`)).status).toBe(405);
      expect(
        (
          await fetch(`${t.url}/integrationsinks/default/nope`, {
            method: 'POST',
            headers: ceHeaders('x'),
            body: '{}',
          })
        ).status,
      ).toBe(404);
    } finally {
      t.child.kill('SIGTERM');
      await t.exited();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an aws sink is not Ready, saying why; a bad level is refused', async () => {
    await using s = await testServer();
    const r = await s.apply(sinkDoc('sqs', { aws: { sqs: { arn: 'arn:aws:sqs:eu-north-1:1:q' } } }));
    expect(r.status, await r.text()).toBeLessThan(300);
    const c = await conditions(
      s.url,
      '/apis/sinks.knative.dev/v1alpha1/namespaces/default/integrationsinks/sqs',
    );
    expect(c.find((x) => x.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'KameletNotAvailable',
    });
    const bad = await s.apply(sinkDoc('bad', { log: { level: 'LOUD' } }));
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toContain('spec.log.level: must be one of');
  });
});
