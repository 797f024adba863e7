/** Serving https: ingress and the admin API over TLS, https addresses, a renewed certificate served without a restart. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { Agent } from 'undici';
import { describe, expect, it } from 'vitest';
import { makeCerts } from './helpers/certs.js';
import { run } from './helpers/process.js';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';

/** The fingerprint of the certificate a TLS server presents now. */
function served(url: string, ca: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: u.hostname, port: Number(u.port), ca, servername: undefined }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.end();
    });
    s.on('error', reject);
  });
}

describe('TLS', () => {
  it('serves ingress and the admin API over https, addresses are https, deliveries to itself work, a renewed certificate is served', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-tls-'));
    const first = makeCerts(dir, 'one');
    const certFile = join(dir, 'tls.crt');
    const keyFile = join(dir, 'tls.key');
    writeFileSync(certFile, first.cert);
    writeFileSync(keyFile, first.key);
    const dispatcher = new Agent({ connect: { ca: first.ca } });
    try {
      await using s = await testServer({ tlsCert: certFile, tlsKey: keyFile });
      expect(s.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const get = (path: string) => fetch(`${s.url}${path}`, { dispatcher } as unknown as RequestInit);
      const post = (path: string, headers: Record<string, string>, body: string) =>
        fetch(`${s.url}${path}`, { method: 'POST', headers, body, dispatcher } as unknown as RequestInit);
      expect((await get('/healthz')).status).toBe(200);
      const json = { 'content-type': 'application/json' };
      for (const [path, doc] of [
        ['/apis/eventing.knative.dev/v1/namespaces/default/brokers', broker('default')],
        ['/apis/eventing.knative.dev/v1/namespaces/default/brokers', broker('next')],
        [
          '/apis/eventing.knative.dev/v1/namespaces/default/triggers',
          trigger('chain', {
            broker: 'default',
            subscriber: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'next' } },
          }),
        ],
      ] as const)
        expect((await post(path, json, JSON.stringify(doc))).status).toBe(201);
      const b = (await (
        await get('/apis/eventing.knative.dev/v1/namespaces/default/brokers/default')
      ).json()) as {
        status: { address: { url: string } };
      };
      expect(b.status.address.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/default\/default$/);
      // An event into one Broker goes on, over https to this same server, into the other.
      expect((await post('/default/default', ceHeaders('e-1'), '{}')).status).toBe(202);
      type Stats = { streams: { stream: string; accepted: number }[] };
      await expect
        .poll(
          async () =>
            ((await (await get('/apis/stats')).json()) as Stats).streams.find(
              (x) => x.stream === 'default/next',
            )?.accepted,
        )
        .toBe(1);
      // Plain HTTP to the https port gets nowhere, and the server stays up.
      await expect(fetch(s.url.replace('https:', 'http:') + '/healthz')).rejects.toThrow();
      expect((await get('/healthz')).status).toBe(200);

      // Renewal: a new certificate in the same files is served without a restart.
      const before = await served(s.url, first.ca);
      const second = makeCerts(dir, 'two');
      writeFileSync(keyFile, second.key);
      writeFileSync(certFile, second.cert);
      await expect.poll(() => served(s.url, first.ca), { timeout: 20_000, interval: 250 }).not.toBe(before);
      // Deliveries to itself trust the renewed certificate too.
      expect((await post('/default/default', ceHeaders('e-2'), '{}')).status).toBe(202);
      await expect
        .poll(
          async () =>
            ((await (await get('/apis/stats')).json()) as Stats).streams.find(
              (x) => x.stream === 'default/next',
            )?.accepted,
          {
            timeout: 15_000,
          },
        )
        .toBe(2);
    } finally {
      await dispatcher.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a sender may identify with a client certificate signed by --tls-client-ca (its CN is the subject)', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-mtls-'));
    const server = makeCerts(dir, 'srv');
    const client = makeCerts(dir, 'sensor', 'sensor-7');
    writeFileSync(join(dir, 'tls.crt'), server.cert);
    writeFileSync(join(dir, 'tls.key'), server.key);
    writeFileSync(join(dir, 'ca.crt'), server.ca);
    const withCert = new Agent({ connect: { ca: server.ca, cert: client.cert, key: client.key } });
    const without = new Agent({ connect: { ca: server.ca } });
    try {
      await using s = await testServer({
        tlsCert: join(dir, 'tls.crt'),
        tlsKey: join(dir, 'tls.key'),
        tlsClientCa: join(dir, 'ca.crt'),
        authentication: 'oidc',
        defaultAuthorizationMode: 'deny-all',
      });
      const json = { 'content-type': 'application/json' };
      const admin = (path: string, body: unknown) =>
        fetch(`${s.url}${path}`, {
          method: 'POST',
          headers: json,
          body: JSON.stringify(body),
          dispatcher: without,
        } as unknown as RequestInit);
      expect(
        (await admin('/apis/eventing.knative.dev/v1/namespaces/default/brokers', broker('sensors'))).status,
      ).toBe(201);
      const policy = {
        apiVersion: 'eventing.knative.dev/v1alpha1',
        kind: 'EventPolicy',
        metadata: { name: 'sensors', namespace: 'default' },
        spec: { from: [{ sub: 'sensor-*' }] },
      };
      expect(
        (await admin('/apis/eventing.knative.dev/v1alpha1/namespaces/default/eventpolicies', policy)).status,
      ).toBe(201);
      const send = (dispatcher: Agent) =>
        fetch(`${s.url}/default/sensors`, {
          method: 'POST',
          headers: ceHeaders(`m-${Math.random()}`),
          body: '{}',
          dispatcher,
        } as unknown as RequestInit);
      await expect.poll(async () => (await send(withCert)).status).toBe(202);
      const anonymous = await send(without);
      expect(anonymous.status).toBe(401);
      expect(((await anonymous.json()) as { code: string }).code).toBe('TRELLIS_ERR_TOKEN_MISSING');
    } finally {
      await withCert.close();
      await without.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start with one of the two files, or a key that is not the certificate’s', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-tls-'));
    try {
      const a = makeCerts(dir, 'a');
      const b = makeCerts(dir, 'b');
      writeFileSync(join(dir, 'a.crt'), a.cert);
      writeFileSync(join(dir, 'b.key'), b.key);
      const one = await run([
        'serve',
        '--port',
        '0',
        '--data-dir',
        join(dir, 'd1'),
        '--tls-cert',
        join(dir, 'a.crt'),
      ]);
      expect(one.code).not.toBe(0);
      expect(one.stderr).toContain('--tls-cert and --tls-key go together');
      const mismatch = await run([
        'serve',
        '--port',
        '0',
        '--data-dir',
        join(dir, 'd2'),
        '--tls-cert',
        join(dir, 'a.crt'),
        '--tls-key',
        join(dir, 'b.key'),
      ]);
      expect(mismatch.code).not.toBe(0);
      expect(mismatch.stderr).toContain('is not the key of --tls-cert');
      expect(mismatch.stderr).not.toContain('PRIVATE KEY');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
