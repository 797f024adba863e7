import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCerts } from './helpers/certs.js';
import { natsServerAvailable, type PrivateNats, startPrivateNats } from './helpers/nats.js';
import { run, serve } from './helpers/process.js';
import { ceHeaders } from './helpers/server.js';

const haveBinary = natsServerAvailable();
const PASSWORD = 'pw-7f3a9c1e5b2d';
const TOKEN = 'tok-91be44d0c2a7';

async function servesEvents(url: string): Promise<void> {
  const yaml = 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: auth}\n';
  const r = await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: url } });
  expect(r.code, r.stderr).toBe(0);
  const res = await fetch(`${url}/default/auth`, { method: 'POST', headers: ceHeaders('a1'), body: '{}' });
  expect(res.status).toBe(202);
}

describe.runIf(haveBinary)('NATS credentials and TLS', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'trellis-natsauth-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('user and password: the password from NATS_PASSWORD; without it, a clear refusal that does not print it', async () => {
    const nats: PrivateNats = await startPrivateNats(['--user', 'trellis', '--pass', PASSWORD]);
    try {
      const base = ['--store', 'nats', '--nats-url', nats.url, '--data-dir', join(dir, 'u')];
      const t = await serve([...base, '--nats-user', 'trellis'], { NATS_PASSWORD: PASSWORD });
      try {
        await servesEvents(t.url);
        expect(t.output()).not.toContain(PASSWORD);
      } finally {
        t.child.kill('SIGTERM');
        await t.exited();
      }
      const bad = await run(['serve', '--port', '0', ...base, '--nats-user', 'trellis'], {
        env: { NATS_PASSWORD: 'wrong-password' },
      });
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/cannot use NATS at nats:\/\/127\.0\.0\.1:\d+: .*(auth|Authorization)/i);
      expect(bad.stderr).not.toContain('wrong-password');
    } finally {
      await nats.close();
    }
  });

  it('a token from --nats-token-file', async () => {
    const nats = await startPrivateNats(['--auth', TOKEN]);
    try {
      const file = join(dir, 'token');
      writeFileSync(file, `${TOKEN}\n`);
      const t = await serve([
        '--store',
        'nats',
        '--nats-url',
        nats.url,
        '--nats-token-file',
        file,
        '--data-dir',
        join(dir, 't'),
      ]);
      try {
        await servesEvents(t.url);
        expect(t.output()).not.toContain(TOKEN);
      } finally {
        t.child.kill('SIGTERM');
        await t.exited();
      }
    } finally {
      await nats.close();
    }
  });

  it('TLS: the server certificate is checked against --nats-tls-ca, and refused without it', async () => {
    const certs = makeCerts(dir).paths;
    const nats = await startPrivateNats(['--tls', '--tlscert', certs.cert, '--tlskey', certs.key]);
    try {
      const url = nats.url.replace('nats://', 'tls://');
      const base = ['--store', 'nats', '--nats-url', url, '--data-dir', join(dir, 's')];
      const t = await serve([...base, '--nats-tls-ca', certs.ca]);
      try {
        await servesEvents(t.url);
      } finally {
        t.child.kill('SIGTERM');
        await t.exited();
      }
      const untrusted = await run(['serve', '--port', '0', ...base]);
      expect(untrusted.code).not.toBe(0);
      expect(untrusted.stderr).toMatch(/cannot use NATS at tls:\/\/127\.0\.0\.1:\d+: /);
    } finally {
      await nats.close();
    }
  });
});
