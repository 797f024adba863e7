/** A destination's CACerts: its https certificate is trusted when signed by them (and not otherwise). */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeCerts } from './helpers/certs.js';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';

describe('CACerts on a destination', () => {
  it('trusts an https subscriber signed by them; without them the delivery fails; bad PEM is refused', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-ca-'));
    const { ca, key, cert } = makeCerts(dir);
    const got: string[] = [];
    const server = createServer({ key, cert }, (req, res) => {
      got.push(String(req.headers['ce-id']));
      req.resume();
      req.on('end', () => res.writeHead(202).end());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    try {
      await using s = await testServer();
      expect((await s.apply(broker('default'))).status).toBe(201);
      const t = (name: string, subscriber: Record<string, unknown>) =>
        trigger(name, {
          broker: 'default',
          filter: { attributes: { type: name } },
          subscriber,
          delivery: { retry: 0 },
        });
      expect((await s.apply(t('trusted', { uri: url, CACerts: ca }))).status).toBe(201);
      expect((await s.apply(t('untrusted', { uri: url }))).status).toBe(201);
      expect((await s.post('/default/default', ceHeaders('t-1', 'trusted'), '{}')).status).toBe(202);
      expect((await s.post('/default/default', ceHeaders('u-1', 'untrusted'), '{}')).status).toBe(202);
      await expect.poll(() => got, { timeout: 15_000 }).toContain('t-1');
      type Stats = {
        subscriptions: { name: string; delivered: number; recentFailures: { answer: string }[] }[];
      };
      const stats = async () => ((await (await fetch(`${s.url}/apis/stats`)).json()) as Stats).subscriptions;
      await expect
        .poll(async () => (await stats()).find((x) => x.name === 'untrusted')?.recentFailures[0]?.answer, {
          timeout: 15_000,
        })
        .toMatch(/CERT|SIGNATURE|ISSUER|self.signed/i);
      expect(got).not.toContain('u-1');
      for (const [bad, msg] of [
        ['not a certificate', 'must hold PEM certificates'],
        ['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', 'certificate 1 does not parse'],
        ['-----BEGIN CERTIFICATE-----\nno end', 'certificate 1 has no -----END CERTIFICATE----- line'],
      ] as const) {
        const r = await s.apply(t('bad', { uri: url, CACerts: bad }));
        expect(r.status).toBe(400);
        expect(((await r.json()) as { message: string }).message).toContain(
          `spec.subscriber.CACerts: ${msg}`,
        );
      }
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
