/** Who may drive the admin API, against the real `trellis serve`: Origin and Host checks, the admin token, protected mode. */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, type Served, serve } from './helpers/process.js';

const TRIGGERS = '/apis/eventing.knative.dev/v1/namespaces/default/triggers';
const TRIGGER_YAML = `apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: planted}
spec: {broker: default, subscriber: {uri: 'http://127.0.0.1:9/'}}
`;

/** A request with headers fetch would not let us set (Host). */
function raw(
  url: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; headers: Record<string, unknown>; json: Record<string, unknown> }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          json: text ? (JSON.parse(text) as Record<string, unknown>) : {},
        }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'trellis-sec-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function stop(s: Served): Promise<void> {
  s.child.kill('SIGTERM');
  await s.exited();
}

describe('the admin API without a token (loopback)', () => {
  let s: Served;
  let port: string;
  beforeAll(async () => {
    s = await serve([
      '--data-dir',
      join(dir, 'open'),
      '--allowed-hosts',
      'trellis.internal',
      '--public-url',
      'https://trellis.example.com',
    ]);
    port = new URL(s.url).port;
  });
  afterAll(() => stop(s));

  it('refuses a web page of another origin, even with a preflight-free content type', async () => {
    const r = await raw(
      s.url,
      'POST',
      TRIGGERS,
      { 'content-type': 'text/plain', origin: 'http://evil.example' },
      TRIGGER_YAML,
    );
    expect(r.status).toBe(403);
    expect(r.json['code']).toBe('TRELLIS_ERR_ORIGIN_FORBIDDEN');
    for (const origin of [
      'null',
      `http://127.0.0.1:${Number(port) + 1}`,
      `file://`,
      'http://localhost.evil.example',
    ]) {
      const x = await raw(s.url, 'GET', TRIGGERS, { origin });
      expect([origin, x.status]).toEqual([origin, 403]);
    }
    const site = await raw(s.url, 'GET', TRIGGERS, { 'sec-fetch-site': 'cross-site' });
    expect(site.status).toBe(403);
    // Nothing was created.
    expect((await raw(s.url, 'GET', `${TRIGGERS}/planted`, {})).status).toBe(404);
  });

  it('refuses a Host that is not one of its names (DNS rebinding)', async () => {
    const r = await raw(
      s.url,
      'POST',
      TRIGGERS,
      { host: `evil.example:${port}`, 'content-type': 'text/plain' },
      TRIGGER_YAML,
    );
    expect(r.status).toBe(403);
    expect(r.json['code']).toBe('TRELLIS_ERR_HOST_FORBIDDEN');
    expect((await raw(s.url, 'GET', TRIGGERS, { host: 'evil.example' })).status).toBe(403);
    // Kubernetes' core group (/api/v1: v1 Services) and bulk apply are the admin API too.
    expect(
      (await raw(s.url, 'GET', '/api/v1/namespaces/default/services', { host: 'evil.example' })).status,
    ).toBe(403);
    const bulk = await raw(
      s.url,
      'POST',
      '/apis/apply',
      { 'content-type': 'text/plain', origin: 'http://evil.example' },
      TRIGGER_YAML,
    );
    expect(bulk.status).toBe(403);
  });

  it('serves its own origin, loopback names and --allowed-hosts', async () => {
    const cases: Record<string, string>[] = [
      { origin: `http://127.0.0.1:${port}` },
      { host: `localhost:${port}`, origin: `http://localhost:${port}` },
      { host: `trellis.internal:${port}` },
      // Behind a TLS proxy: the public URL's origin and host.
      { host: 'trellis.example.com', origin: 'https://trellis.example.com' },
      { 'sec-fetch-site': 'same-origin' },
      {},
    ];
    for (const headers of cases) {
      const r = await raw(s.url, 'GET', TRIGGERS, headers);
      expect([headers, r.status]).toEqual([headers, 200]);
    }
  });

  it('leaves ingress and health alone: they are not the admin API', async () => {
    const r = await raw(s.url, 'GET', '/healthz', { host: 'evil.example', origin: 'http://evil.example' });
    expect(r.status).toBe(200);
  });
});

describe('the admin token', () => {
  const TOKEN = 's3cret-admin-token-0123456789';
  let s: Served;
  beforeAll(async () => {
    const file = join(dir, 'token');
    writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
    s = await serve(['--data-dir', join(dir, 'tok'), '--admin-token-file', file, '--log-level', 'info']);
  });
  afterAll(() => stop(s));

  it('401 without it or with a wrong one, 200 with it', async () => {
    const none = await raw(s.url, 'GET', TRIGGERS, {});
    expect(none.status).toBe(401);
    expect(none.json['code']).toBe('TRELLIS_ERR_UNAUTHORIZED');
    expect(none.headers['www-authenticate']).toBe('Bearer');
    expect((await raw(s.url, 'GET', TRIGGERS, { authorization: `Bearer ${TOKEN}x` })).status).toBe(401);
    expect((await raw(s.url, 'GET', TRIGGERS, { authorization: `Basic ${TOKEN}` })).status).toBe(401);
    expect((await raw(s.url, 'GET', TRIGGERS, { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
  });

  it('the CLI sends TRELLIS_ADMIN_TOKEN; without it, it says what is missing', async () => {
    const yaml = 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n';
    const env = { TRELLIS_SERVER: s.url };
    const denied = await run(['apply', '-f', '-'], { input: yaml, env: { ...env, TRELLIS_ADMIN_TOKEN: '' } });
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/TRELLIS_ERR_UNAUTHORIZED/);
    const ok = await run(['apply', '-f', '-'], { input: yaml, env: { ...env, TRELLIS_ADMIN_TOKEN: TOKEN } });
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toMatch(/broker.eventing.knative.dev\/default created/);
    const got = await run(['get', 'brokers'], { env: { ...env, TRELLIS_ADMIN_TOKEN: TOKEN } });
    expect(got.stdout).toMatch(/default/);
  });

  it('ingress is not behind the admin token, and the token never reaches the log', async () => {
    const r = await raw(s.url, 'POST', '/default/default', {
      'ce-specversion': '1.0',
      'ce-id': '1',
      'ce-source': '/t',
      'ce-type': 't',
    });
    expect(r.status).toBe(202);
    expect(s.output()).not.toContain(TOKEN);
  });
});

describe('protected mode', () => {
  it('refuses to serve on a non-loopback address without a token, and says how to set one', async () => {
    const r = await run(['serve', '--host', '0.0.0.0', '--port', '0', '--data-dir', join(dir, 'pm')], {
      env: { TRELLIS_ADMIN_TOKEN: '' },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refusing to serve on 0.0.0.0 without an admin token/);
    expect(r.stderr).toMatch(/TRELLIS_ADMIN_TOKEN/);
  });

  it('--insecure-admin overrides it, loudly', async () => {
    const s = await serve(['--host', '0.0.0.0', '--data-dir', join(dir, 'pm2'), '--insecure-admin'], {
      TRELLIS_ADMIN_TOKEN: '',
    });
    try {
      expect(s.output()).toMatch(/PROTECTED MODE IS OFF/);
    } finally {
      await stop(s);
    }
  });

  it('a short token is refused', async () => {
    const r = await run(['serve', '--port', '0', '--data-dir', join(dir, 'pm3')], {
      env: { TRELLIS_ADMIN_TOKEN: 'short' },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/at least 16 characters/);
  });
});
