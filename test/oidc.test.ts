/** OIDC: senders need a token for the addressable's audience; Trellis mints tokens and signs its own deliveries' tokens. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRemoteJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { run } from './helpers/process.js';
import { broker, ceHeaders, mintToken, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const EXTERNAL = 'https://issuer.example';

describe('OIDC authentication of senders', () => {
  it('ingress needs a valid token for the audience; every failed check has its code; Trellis’s own deliveries carry tokens', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-oidc-'));
    // An external issuer whose keys the test makes.
    const ext = await generateKeyPair('ES256', { extractable: true });
    const other = await generateKeyPair('ES256', { extractable: true });
    writeFileSync(
      join(dir, 'jwks.json'),
      JSON.stringify({ keys: [{ ...(await exportJWK(ext.publicKey)), kid: 'ext-1', alg: 'ES256' }] }),
    );
    const sign = (key: Parameters<SignJWT['sign']>[0], claims: { aud: string; exp: number; iss?: string }) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: 'ext-1' })
        .setIssuer(claims.iss ?? EXTERNAL)
        .setSubject('billing-service')
        .setAudience(claims.aud)
        .setExpirationTime(claims.exp)
        .sign(key);
    await using sink = await startSink();
    await using s = await testServer({
      authentication: 'oidc',
      oidcIssuers: [{ issuer: EXTERNAL, jwks: join(dir, 'jwks.json') }],
    });
    try {
      expect((await s.apply(broker('default'))).status).toBe(201);
      expect((await s.apply(broker('next'))).status).toBe(201);
      const toNext = trigger('chain', {
        broker: 'default',
        filter: { attributes: { type: 'go.next' } },
        subscriber: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'next' } },
      });
      const toSink = trigger('out', {
        broker: 'next',
        subscriber: { uri: sink.url, audience: 'my-subscriber' },
      });
      expect((await s.apply(toNext)).status).toBe(201);
      expect((await s.apply(toSink)).status).toBe(201);
      const addr = async () =>
        (
          (await (
            await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/default`)
          ).json()) as {
            status: { address?: { url: string; audience?: string } };
          }
        ).status.address;
      await expect
        .poll(async () => (await addr())?.audience)
        .toBe('eventing.knative.dev/broker/default/default');
      const audience = 'eventing.knative.dev/broker/default/default';
      const send = (token?: string) =>
        s.post(
          '/default/default',
          {
            ...ceHeaders(`e-${Math.random()}`, 'go.next'),
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          },
          '{}',
        );
      const code = async (r: Response) => ((await r.json()) as { code: string }).code;
      const now = Math.floor(Date.now() / 1000);

      expect(await code(await send())).toBe('TRELLIS_ERR_TOKEN_MISSING');
      expect(await code(await send('not.a.jwt'))).toBe('TRELLIS_ERR_TOKEN_INVALID');
      expect(await code(await send(await sign(ext.privateKey, { aud: audience, exp: now - 120 })))).toBe(
        'TRELLIS_ERR_TOKEN_EXPIRED',
      );
      expect(
        await code(
          await send(
            await sign(ext.privateKey, { aud: 'eventing.knative.dev/broker/default/next', exp: now + 600 }),
          ),
        ),
      ).toBe('TRELLIS_ERR_TOKEN_AUDIENCE');
      expect(
        await code(
          await send(
            await sign(ext.privateKey, { aud: audience, exp: now + 600, iss: 'https://stranger.example' }),
          ),
        ),
      ).toBe('TRELLIS_ERR_TOKEN_ISSUER');
      expect(await code(await send(await sign(other.privateKey, { aud: audience, exp: now + 600 })))).toBe(
        'TRELLIS_ERR_TOKEN_SIGNATURE',
      );
      const refused = await send();
      expect(refused.status).toBe(401);

      // The external issuer's valid token, and one Trellis mints (trellis token).
      expect((await send(await sign(ext.privateKey, { aud: audience, exp: now + 600 }))).status).toBe(202);
      const minted = await run(['token', '--audience', audience, '--subject', 'shop'], {
        env: { TRELLIS_SERVER: s.url },
      });
      expect(minted.code, minted.stderr).toBe(0);
      expect((await send(minted.stdout.trim())).status).toBe(202);

      // Both events went on to Broker 'next' (a delivery to this server, with a token Trellis minted), and
      // on to the subscriber with a token for its audience, which it verifies against Trellis's JWKS.
      await sink.waitFor(2, 15_000);
      const jwks = createRemoteJWKSet(new URL(`${s.url}/.well-known/jwks.json`));
      for (const r of sink.received) {
        const token = String(r.headers['authorization']).replace(/^Bearer /, '');
        const { payload } = await jwtVerify(token, jwks, { issuer: s.url, audience: 'my-subscriber' });
        expect(payload.sub).toBe('system:serviceaccount:default:trellis-trigger-out');
      }
      const conf = (await (await fetch(`${s.url}/.well-known/openid-configuration`)).json()) as {
        issuer: string;
        jwks_uri: string;
      };
      expect(conf).toMatchObject({ issuer: s.url, jwks_uri: `${s.url}/.well-known/jwks.json` });
      const keys = (await (await fetch(`${s.url}/.well-known/jwks.json`)).json()) as {
        keys: Record<string, unknown>[];
      };
      expect(keys.keys[0]!['d']).toBeUndefined(); // public keys only
      // Minting needs the admin API's rules; bad requests say which field.
      const bad = await fetch(`${s.url}/apis/tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"audience":"a"}',
      });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { message: string }).message).toContain('subject:');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('EventPolicy: only the senders and events a policy allows; deny-all elsewhere; status lists the policies', {
    timeout: 60_000,
  }, async () => {
    await using s = await testServer({ authentication: 'oidc', defaultAuthorizationMode: 'deny-all' });
    const policy = (name: string, spec: Record<string, unknown>) => ({
      apiVersion: 'eventing.knative.dev/v1alpha1',
      kind: 'EventPolicy',
      metadata: { name, namespace: 'default' },
      spec,
    });
    const ref = (name: string) => ({ apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name });
    for (const b of ['orders', 'audit', 'open']) expect((await s.apply(broker(b))).status).toBe(201);
    expect(
      (
        await s.apply(
          policy('shop-only', {
            to: [{ ref: ref('orders') }],
            from: [{ sub: 'shop' }, { sub: 'team-a-*' }],
            filters: [{ prefix: { type: 'order.' } }],
          }),
        )
      ).status,
    ).toBe(201);
    // The audit Broker takes what the Trigger 'forward' (on orders) delivers, as Trellis's identity for it.
    expect(
      (
        await s.apply(
          policy('from-forward', {
            to: [{ ref: ref('audit') }],
            from: [{ ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Trigger', name: 'forward' } }],
          }),
        )
      ).status,
    ).toBe(201);
    expect(
      (await s.apply(trigger('forward', { broker: 'orders', subscriber: { ref: ref('audit') } }))).status,
    ).toBe(201);
    const token = (audience: string, subject: string) => mintToken(s.url, audience, subject);
    const ORDERS = 'eventing.knative.dev/broker/default/orders';
    const send = async (path: string, sub: string, audience: string, type: string) =>
      s.post(
        path,
        { ...ceHeaders(`e-${Math.random()}`, type), authorization: `Bearer ${await token(audience, sub)}` },
        '{}',
      );
    await expect
      .poll(async () =>
        (
          (await (
            await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/orders`)
          ).json()) as { status: { policies?: { name: string }[] } }
        ).status.policies?.map((p) => p.name),
      )
      .toEqual(['shop-only']);
    expect((await send('/default/orders', 'shop', ORDERS, 'order.created')).status).toBe(202);
    expect((await send('/default/orders', 'team-a-billing', ORDERS, 'order.paid')).status).toBe(202);
    const wrongType = await send('/default/orders', 'shop', ORDERS, 'admin.reset');
    expect(wrongType.status).toBe(403);
    const stranger = await send('/default/orders', 'mallory', ORDERS, 'order.created');
    expect(stranger.status).toBe(403);
    const body = (await stranger.json()) as { code: string; message: string };
    expect(body.code).toBe('TRELLIS_ERR_FORBIDDEN');
    expect(body.message).not.toContain('shop');
    // No policy, deny-all: nobody.
    expect(
      (await send('/default/open', 'shop', 'eventing.knative.dev/broker/default/open', 'order.created'))
        .status,
    ).toBe(403);
    // The two accepted events went on to audit, delivered by the Trigger with its own token.
    type Stats = { streams: { stream: string; accepted: number }[] };
    await expect
      .poll(
        async () =>
          ((await (await fetch(`${s.url}/apis/stats`)).json()) as Stats).streams.find(
            (x) => x.stream === 'default/audit',
          )?.accepted,
      )
      .toBe(2);
    for (const [spec, msg] of [
      [{ from: [{ sub: 'a*b' }] }, "spec.from[0].sub: may end with '*'"],
      [
        {
          to: [{ ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Trigger', name: 'x' } }],
          from: [{ sub: 'a' }],
        },
        "spec.to[0].ref.kind: 'Trigger' takes no events",
      ],
      [{ from: [{ sub: 'a', ref: ref('x') }] }, 'spec.from[0]: needs a ref or a sub (one of them)'],
    ] as const) {
      const r = await s.apply(policy('bad', spec as Record<string, unknown>));
      expect(r.status).toBe(400);
      expect(((await r.json()) as { message: string }).message).toContain(msg);
    }
  });

  it('per-sender rate limits count each authenticated sender apart', async () => {
    await using s = await testServer({ authentication: 'oidc', rateLimitPerSender: '2/s,2' });
    expect((await s.apply(broker('default'))).status).toBe(201);
    const token = (subject: string) =>
      mintToken(s.url, 'eventing.knative.dev/broker/default/default', subject);
    const [a, b] = [await token('sender-a'), await token('sender-b')];
    const send = (t: string) =>
      s.post('/default/default', { ...ceHeaders(`x-${Math.random()}`), authorization: `Bearer ${t}` }, '{}');
    const codes = [];
    for (const t of [a, a, a, b, b]) codes.push((await send(t)).status);
    // One address, two identities: each has its own bucket.
    expect(codes).toEqual([202, 202, 429, 202, 202]);
  });

  it('a program Trellis runs gets a token file for its K_SINK, as its own identity', {
    timeout: 60_000,
  }, async () => {
    await using s = await testServer({
      authentication: 'oidc',
      allowCommands: true,
      defaultAuthorizationMode: 'deny-all',
    });
    expect((await s.apply(broker('default'))).status).toBe(201);
    const policy = {
      apiVersion: 'eventing.knative.dev/v1alpha1',
      kind: 'EventPolicy',
      metadata: { name: 'heartbeats', namespace: 'default' },
      spec: {
        from: [{ ref: { apiVersion: 'sources.knative.dev/v1', kind: 'ContainerSource', name: 'beat' } }],
      },
    };
    expect((await s.apply(policy)).status).toBe(201);
    const program = `
const { readFileSync } = require('node:fs');
setInterval(() => {
  const token = readFileSync(process.env.K_OIDC_TOKEN_FILE, 'utf8');
  fetch(process.env.K_SINK, { method: 'POST', headers: { authorization: 'Bearer ' + token, 'ce-specversion': '1.0', 'ce-id': String(Date.now()), 'ce-source': '/beat', 'ce-type': 'beat', 'content-type': 'application/json' }, body: '{}' })
    .then((r) => console.log('sent ' + r.status), (e) => console.error(e.message));
}, 100);`;
    const source = {
      apiVersion: 'sources.knative.dev/v1',
      kind: 'ContainerSource',
      metadata: { name: 'beat', namespace: 'default' },
      spec: {
        template: { spec: { containers: [{ command: [process.execPath, '-e', program] }] } },
        sink: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'default' } },
      },
    };
    expect((await s.apply(source)).status).toBe(201);
    type Stats = { streams: { stream: string; accepted: number; rejected: number }[] };
    await expect
      .poll(
        async () =>
          ((await (await fetch(`${s.url}/apis/stats`)).json()) as Stats).streams.find(
            (x) => x.stream === 'default/default',
          )?.accepted ?? 0,
        {
          timeout: 20_000,
        },
      )
      .toBeGreaterThan(0);
    const st = ((await (await fetch(`${s.url}/apis/stats`)).json()) as Stats).streams.find(
      (x) => x.stream === 'default/default',
    )!;
    expect(st.rejected).toBe(0);
  });

  it('sinks Fastify serves check tokens too; with authentication off nothing is asked and no audience is shown', async () => {
    await using on = await testServer({ authentication: 'oidc' });
    const sinkDoc = {
      apiVersion: 'sinks.knative.dev/v1alpha1',
      kind: 'IntegrationSink',
      metadata: { name: 'log', namespace: 'default' },
      spec: { log: { level: 'info' } },
    };
    expect((await on.apply(sinkDoc)).status).toBe(201);
    const r = await on.post('/integrationsinks/default/log', ceHeaders('x'), '{}');
    expect(r.status).toBe(401);
    expect(((await r.json()) as { code: string }).code).toBe('TRELLIS_ERR_TOKEN_MISSING');
    await using off = await testServer();
    expect((await off.apply(broker('default'))).status).toBe(201);
    expect((await off.post('/default/default', ceHeaders('y'), '{}')).status).toBe(202);
    const b = (await (
      await fetch(`${off.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/default`)
    ).json()) as {
      status: { address: Record<string, unknown> };
    };
    expect(b.status.address['audience']).toBeUndefined();
  });
});
