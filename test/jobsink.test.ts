/** JobSink: a job (a local command) per event, with the event as a JSON file, as Knative's JobSink. */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { broker, ceHeaders, testServer } from './helpers/server.js';

const jobSink = (name: string, container: Record<string, unknown>) => ({
  apiVersion: 'sinks.knative.dev/v1alpha1',
  kind: 'JobSink',
  metadata: { name, namespace: 'default' },
  spec: {
    job: {
      spec: {
        completions: 1,
        parallelism: 1,
        template: { spec: { restartPolicy: 'Never', containers: [container] } },
      },
    },
  },
});

/** A job that copies the event file to DIR/ID.json and appends the id to DIR/runs.log. */
const COPY = `const fs = require('fs'); const [file, dir] = process.argv.slice(1);
const e = JSON.parse(fs.readFileSync(file, 'utf8'));
fs.writeFileSync(dir + '/' + e.id + '.json', JSON.stringify({ e, envPath: process.env.K_EVENT_PATH === file }));
fs.appendFileSync(dir + '/runs.log', e.id + '\\n');`;

async function ready(url: string, name: string) {
  const o = (await (
    await fetch(`${url}/apis/sinks.knative.dev/v1alpha1/namespaces/default/jobsinks/${name}`)
  ).json()) as {
    status?: {
      conditions?: { type: string; status: string; reason?: string; message?: string }[];
      address?: { url: string };
    };
  };
  return { cond: o.status?.conditions?.find((c) => c.type === 'Ready'), address: o.status?.address?.url };
}

describe('JobSink', () => {
  it('runs its job once per event with the event as a file where Knative mounts it, from a Trigger or directly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-jobs-test-'));
    try {
      await using s = await testServer({ allowCommands: true });
      await s.apply(broker('default'));
      const r = await s.apply(
        jobSink('copier', {
          name: 'main',
          image: 'docker.io/library/node:20',
          command: [process.execPath, '-e', COPY],
          args: ['/etc/jobsink-event/event', dir],
        }),
      );
      expect(r.status, await r.text()).toBeLessThan(300);
      await expect.poll(async () => (await ready(s.url, 'copier')).cond?.status).toBe('True');
      expect((await ready(s.url, 'copier')).address).toBe(`${s.url}/jobsinks/default/copier`);
      await s.apply({
        apiVersion: 'eventing.knative.dev/v1',
        kind: 'Trigger',
        metadata: { name: 'to-job', namespace: 'default' },
        spec: {
          broker: 'default',
          subscriber: { ref: { apiVersion: 'sinks.knative.dev/v1alpha1', kind: 'JobSink', name: 'copier' } },
        },
      });
      await s.settled();
      const res = await fetch(`${s.url}/default/default`, {
        method: 'POST',
        headers: ceHeaders('job-1'),
        body: '{"work":"resize"}',
      });
      expect(res.status).toBe(202);
      await expect.poll(() => existsSync(join(dir, 'job-1.json')), { timeout: 15_000 }).toBe(true);
      const out = JSON.parse(readFileSync(join(dir, 'job-1.json'), 'utf8')) as {
        e: Record<string, unknown>;
        envPath: boolean;
      };
      expect(out.e).toMatchObject({ id: 'job-1', specversion: '1.0', data: { work: 'resize' } });
      expect(out.envPath).toBe(true);
      // The same event again starts no second job; another event does.
      for (const id of ['job-1', 'job-2']) {
        const d = await fetch(`${s.url}/jobsinks/default/copier`, {
          method: 'POST',
          headers: ceHeaders(id),
          body: '{}',
        });
        expect(d.status).toBe(202);
      }
      await expect.poll(() => existsSync(join(dir, 'job-2.json')), { timeout: 15_000 }).toBe(true);
      expect(readFileSync(join(dir, 'runs.log'), 'utf8').trim().split('\n')).toEqual(['job-1', 'job-2']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is not Ready with an image and no command, or without --allow-commands; events to it get 404 saying why', async () => {
    await using s = await testServer();
    await s.apply(jobSink('image-only', { name: 'main', image: 'docker.io/library/bash:5' }));
    await s.apply(
      jobSink('not-allowed', {
        name: 'main',
        image: 'bash',
        command: ['cat'],
        args: ['/etc/jobsink-event/event'],
      }),
    );
    await expect
      .poll(async () => (await ready(s.url, 'image-only')).cond)
      .toMatchObject({ status: 'False', reason: 'NoCommand' });
    expect((await ready(s.url, 'image-only')).cond?.message).toContain('Trellis runs commands, not images');
    await expect
      .poll(async () => (await ready(s.url, 'not-allowed')).cond)
      .toMatchObject({ status: 'False', reason: 'Disabled' });
    const r = await fetch(`${s.url}/jobsinks/default/not-allowed`, {
      method: 'POST',
      headers: ceHeaders('x'),
      body: '{}',
    });
    expect(r.status).toBe(404);
    expect(((await r.json()) as { message: string }).message).toContain('--allow-commands');
    const bad = await s.apply({ ...jobSink('bad', {}), spec: { job: { spec: {} } } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toContain('spec.job.spec.template.spec');
  });
});
