/**
 * Knative Serving's Service: Trellis runs the container's command with PORT set, and refs to the
 * Service resolve to where it listens.
 */
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { run } from './helpers/process.js';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

/** A subscriber: forwards each event it gets to FORWARD, saying which port and revision served it. */
const DISPLAY = `
const http = require('node:http');
http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const h = {};
    for (const [k, v] of Object.entries(req.headers)) if (k.startsWith('ce-') || k === 'content-type') h[k] = v;
    h['ce-servedport'] = process.env.PORT;
    h['ce-revision'] = process.env.K_REVISION;
    await fetch(process.env.FORWARD, { method: 'POST', headers: h, body: Buffer.concat(chunks) });
    res.writeHead(202).end();
  });
}).listen(Number(process.env.PORT));
console.log('listening on ' + process.env.PORT);
`;

function ksvc(name: string, container: Record<string, unknown>, extra = '') {
  return `apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: ${name}}
spec:
  template:
    spec:
      containers:
        - ${JSON.stringify(container)}
${extra}`;
}

interface Status {
  url?: string;
  process?: { state: string; pid?: number; port?: number; restarts: number; listening?: boolean };
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
}

async function ksvcStatus(url: string, name: string): Promise<Status> {
  const r = await fetch(`${url}/apis/serving.knative.dev/v1/namespaces/default/services/${name}`);
  return r.status === 200 ? (((await r.json()) as { status?: Status }).status ?? {}) : {};
}

const readyOf = (s: Status) => s.conditions?.find((c) => c.type === 'Ready');

async function subscriberUri(url: string, name: string): Promise<string | undefined> {
  const r = await fetch(`${url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/${name}`);
  return ((await r.json()) as { status?: { subscriberUri?: string } }).status?.subscriberUri;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

describe('Knative Service (serving.knative.dev/v1)', () => {
  it('runs the command with PORT, becomes the address refs resolve to, restarts on the same port, and stops on delete', {
    timeout: 120_000,
  }, async () => {
    await using sink = await startSink();
    await using s = await testServer({ allowCommands: true });
    const env = { TRELLIS_SERVER: s.url };
    const sinkPort = new URL(sink.url).port;
    // Before the Knative Service exists, a v1 Service of the same name says where 'display' is.
    expect(
      (
        await s.apply({
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'display' },
          spec: { type: 'ExternalName', externalName: '127.0.0.1', ports: [{ port: Number(sinkPort) }] },
        })
      ).status,
    ).toBe(201);
    expect((await s.apply(broker('default'))).status).toBe(201);
    const ref = { apiVersion: 'serving.knative.dev/v1', kind: 'Service', name: 'display' };
    expect((await s.apply(trigger('all', { broker: 'default', subscriber: { ref } }))).status).toBe(201);
    await expect.poll(() => subscriberUri(s.url, 'all')).toBe(`http://127.0.0.1:${sinkPort}/`);

    const applied = await run(['apply', '-f', '-'], {
      input: ksvc('display', {
        image: 'gcr.io/knative-releases/knative.dev/eventing/cmd/event_display',
        command: [process.execPath, '-e', DISPLAY],
        env: [{ name: 'FORWARD', value: sink.url }],
      }),
      env,
    });
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toContain('service.serving.knative.dev/display created');
    await expect
      .poll(async () => readyOf(await ksvcStatus(s.url, 'display'))?.status, { timeout: 20_000 })
      .toBe('True');
    const st = await ksvcStatus(s.url, 'display');
    const port = st.process!.port!;
    expect(st.url).toBe(`http://127.0.0.1:${port}/`);
    expect(st.conditions!.map((c) => c.type)).toEqual(['Ready', 'ConfigurationsReady', 'RoutesReady']);
    // The ref now resolves to the program Trellis runs.
    await expect.poll(() => subscriberUri(s.url, 'all')).toBe(st.url);

    const sent = await s.post('/default/default', ceHeaders('e-1'), '{"n":1}');
    expect(sent.status).toBe(202);
    const [got] = await sink.waitFor(1, 15_000);
    expect(got!.event.attrs['id']).toBe('e-1');
    expect(got!.event.attrs['servedport']).toBe(String(port));
    expect(got!.event.attrs['revision']).toBe('display-00001');

    // The CLI tells the two Services apart, as kubectl does.
    const table = await run(['get', 'ksvc'], { env });
    expect(table.stdout).toMatch(/display\s+http:\/\/127\.0\.0\.1:\d+\/\s+Running/);
    const yaml = await run(['get', 'ksvc', 'display', '-o', 'yaml'], { env });
    expect(yaml.stdout).toContain('apiVersion: serving.knative.dev/v1');
    expect(yaml.stdout).toContain('kind: Service');
    const core = await run(['get', 'services', '-o', 'json'], { env });
    const items = (JSON.parse(core.stdout) as { items: { apiVersion: string }[] }).items;
    expect(items.map((i) => i.apiVersion)).toEqual(['v1']);

    // Killed: restarted with backoff on the same port, and Ready again.
    const pid = st.process!.pid!;
    process.kill(pid, 'SIGKILL');
    await expect
      .poll(
        async () => {
          const x = await ksvcStatus(s.url, 'display');
          return x.process!.restarts >= 1 && x.process!.pid !== pid && readyOf(x)?.status === 'True';
        },
        { timeout: 30_000 },
      )
      .toBe(true);
    const after = await ksvcStatus(s.url, 'display');
    expect(after.url).toBe(st.url);
    expect(alive(pid)).toBe(false);

    // Deleted: the process stops and the ref falls back to the v1 Service.
    const del = await run(['delete', 'ksvc', 'display'], { env });
    expect(del.code, del.stderr).toBe(0);
    await expect.poll(() => alive(after.process!.pid!), { timeout: 15_000 }).toBe(false);
    await expect.poll(() => subscriberUri(s.url, 'all')).toBe(`http://127.0.0.1:${sinkPort}/`);
  });

  it('honours containerPort; a program that does not listen is not Ready and says why', async () => {
    await using s = await testServer({ allowCommands: true });
    const env = { TRELLIS_SERVER: s.url };
    const port = await freePort();
    // A program that never listens: the address is known, the Service is not Ready and says why.
    const r = await run(['apply', '-f', '-'], {
      input: ksvc('quiet', {
        command: [process.execPath, '-e', 'console.log(process.env.PORT); setInterval(() => {}, 1000)'],
        ports: [{ containerPort: port }],
      }),
      env,
    });
    expect(r.code, r.stderr).toBe(0);
    await expect
      .poll(async () => readyOf(await ksvcStatus(s.url, 'quiet'))?.reason, { timeout: 15_000 })
      .toBe('NotListening');
    const st = await ksvcStatus(s.url, 'quiet');
    expect(st.process!.port).toBe(port);
    expect(readyOf(st)!.message).toContain(`port ${port}`);
    expect(st.url).toBe(`http://127.0.0.1:${port}/`);
  });

  it('runs commands, not images; runs nothing without --allow-commands; refuses what it cannot do', async () => {
    await using s = await testServer();
    const env = { TRELLIS_SERVER: s.url };
    // Knative's hello-world: an image, no command.
    expect(
      (
        await run(['apply', '-f', '-'], {
          input: ksvc('hello', {
            image: 'ghcr.io/knative/helloworld-go:latest',
            ports: [{ containerPort: 8080 }],
            env: [{ name: 'TARGET', value: 'World' }],
          }),
          env,
        })
      ).code,
    ).toBe(0);
    await expect
      .poll(async () => readyOf(await ksvcStatus(s.url, 'hello'))?.message)
      .toContain('Trellis runs commands, not images');
    // A Trigger whose subscriber is that Service is not Ready, and says why.
    expect((await s.apply(broker('default'))).status).toBe(201);
    const ref = { apiVersion: 'serving.knative.dev/v1', kind: 'Service', name: 'hello' };
    expect((await s.apply(trigger('t', { broker: 'default', subscriber: { ref } }))).status).toBe(201);
    const tr = async () =>
      (
        (await (
          await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/t`)
        ).json()) as {
          status: Status;
        }
      ).status;
    await expect.poll(async () => readyOf(await tr())?.message).toContain('has no address yet');

    expect(
      (
        await run(['apply', '-f', '-'], {
          input: ksvc('off', { command: [process.execPath, '-e', ''] }),
          env,
        })
      ).code,
    ).toBe(0);
    await expect.poll(async () => (await ksvcStatus(s.url, 'off')).process?.state).toBe('Disabled');
    expect(readyOf(await ksvcStatus(s.url, 'off'))!.message).toContain('--allow-commands');

    const port = await run(['apply', '-f', '-'], {
      input: ksvc('p', { command: ['x'], env: [{ name: 'PORT', value: '1' }] }),
      env,
    });
    expect(port.code).not.toBe(0);
    expect(port.stderr).toContain('spec.template.spec.containers[0].env');
    expect(port.stderr).toContain('PORT is set by Trellis');
    const two = await run(['apply', '-f', '-'], {
      input: `apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: two}\nspec:\n  template:\n    spec:\n      containers: [{command: [a]}, {command: [b]}]\n`,
      env,
    });
    expect(two.stderr).toContain('list one container');
    const badPort = await run(['apply', '-f', '-'], {
      input: ksvc('bp', { command: ['x'], ports: [{ containerPort: 70000 }] }),
      env,
    });
    expect(badPort.stderr).toContain('spec.template.spec.containers[0].ports[0].containerPort');
    const version = await run(['apply', '-f', '-'], {
      input: 'apiVersion: serving.knative.dev/v2\nkind: Service\nmetadata: {name: v}\nspec: {}\n',
      env,
    });
    expect(version.stderr).toContain("apiVersion: must be 'v1' or 'serving.knative.dev/v1' for kind Service");
    const split = await run(['apply', '-f', '-'], {
      input: ksvc(
        'split',
        { command: ['x'] },
        '  traffic:\n    - {revisionName: split-00001, percent: 50}\n    - {latestRevision: true, percent: 50}\n',
      ),
      env,
    });
    expect(split.code, split.stderr).toBe(0);
    expect(split.stderr).toContain('Trellis runs the latest revision only');
  });
});
