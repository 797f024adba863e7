/**
 * The gRPC API, driven by a client made from proto/trellis/v1/trellis.proto with @grpc/proto-loader (so
 * the published .proto and the server agree): publish, batch, subscribe with acks and a window (sharing a
 * group with a WebSocket member), request-reply, and the statuses of bad input.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';
import { Agent } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { TrellisClient } from '../src/client/trellis.js';
import { makeCerts } from './helpers/certs.js';
import { broker, type TestServer, testServer } from './helpers/server.js';
import { ROOT } from './helpers/shared.js';

const def = loader.loadSync(join(ROOT, 'proto', 'trellis', 'v1', 'trellis.proto'), {
  longs: Number,
  bytes: Buffer,
  oneofs: true,
});
const pkg = grpc.loadPackageDefinition(def) as unknown as {
  trellis: { v1: { EventMesh: new (addr: string, creds: grpc.ChannelCredentials) => EventMeshClient } };
};

type Callback<T> = (err: grpc.ServiceError | null, res: T) => void;
/** A CloudEvent as proto-loader reads it. */
interface PbEvent {
  id: string;
  source: string;
  specVersion: string;
  type: string;
  textData?: string;
  attributes?: Record<string, unknown>;
}
interface PbDelivery {
  id: string;
  event: PbEvent;
  attempt: number;
  sequence: number;
}
interface PbResponse {
  subscribed?: Record<string, unknown>;
  delivery?: PbDelivery;
}
interface EventMeshClient extends grpc.Client {
  Publish(req: unknown, md: grpc.Metadata, cb: Callback<{ accepted: number }>): void;
  PublishBatch(req: unknown, md: grpc.Metadata, cb: Callback<{ accepted: number }>): void;
  Request(req: unknown, md: grpc.Metadata, cb: Callback<PbEvent>): void;
  Subscribe(md?: grpc.Metadata): grpc.ClientDuplexStream<unknown, PbResponse>;
}

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

async function setup(
  cfg: Parameters<typeof testServer>[0] = {},
): Promise<{ s: TestServer; c: EventMeshClient }> {
  const s = await testServer({ grpcPort: 0, ...cfg });
  expect((await s.apply(broker('default'))).ok).toBe(true);
  await s.settled();
  expect(s.grpcPort).toBeGreaterThan(0);
  const c = new pkg.trellis.v1.EventMesh(`127.0.0.1:${s.grpcPort}`, grpc.credentials.createInsecure());
  closers.push(() => c.close());
  return { s, c };
}

const ce = (id: string, type = 'grpc.type', extra: Record<string, unknown> = {}) => ({
  id,
  source: '/grpc',
  specVersion: '1.0',
  type,
  attributes: { datacontenttype: { ceString: 'application/json' } },
  textData: JSON.stringify({ id }),
  ...extra,
});

function call<T>(fn: (cb: Callback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));
}

/** A Subscribe stream: its deliveries, and whether it is subscribed. */
function subscribe(
  c: EventMeshClient,
  subscription: Record<string, unknown>,
  opts: { ack?: boolean; md?: grpc.Metadata } = {},
) {
  const stream = c.Subscribe(opts.md ?? new grpc.Metadata());
  const got: PbDelivery[] = [];
  const state: { subscribed?: Record<string, unknown>; error?: grpc.ServiceError } = {};
  stream.on('data', (m: PbResponse) => {
    if (m.subscribed) state.subscribed = m.subscribed;
    if (m.delivery) {
      got.push(m.delivery);
      if (opts.ack !== false) stream.write({ ack: { ids: [m['delivery'].id] } });
    }
  });
  stream.on('error', (e: grpc.ServiceError) => {
    state.error = e;
  });
  stream.write({ subscription });
  closers.push(() => stream.cancel());
  return { stream, got, state };
}

describe('gRPC (trellis.v1.EventMesh)', () => {
  it('publishes, publishes a batch, and subscribes with acks; a group is shared with WebSocket members', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const sub = subscribe(c, { target: 'default/default', group: 'mixed', window: 5 });
    await expect
      .poll(() => sub.state.subscribed)
      .toMatchObject({ group: 'mixed', namespace: 'default', window: 5 });
    const sdk = new TrellisClient({ url: s.url });
    const ws = sdk.subscribe('default/default', { group: 'mixed' });
    await ws.ready;
    const wsGot: string[] = [];
    void (async () => {
      for await (const d of ws) {
        wsGot.push(d.event.id);
        d.ack();
      }
    })();
    closers.push(() => ws.close());
    expect(
      await call<{ accepted: number }>((cb) =>
        c.Publish({ target: 'default/default', event: ce('one') }, new grpc.Metadata(), cb),
      ),
    ).toEqual({ accepted: 1 });
    const batch = Array.from({ length: 39 }, (_, i) => ce(`b${i}`));
    expect(
      await call<{ accepted: number }>((cb) =>
        c.PublishBatch({ target: 'default/default', events: batch }, new grpc.Metadata(), cb),
      ),
    ).toEqual({ accepted: 39 });
    await expect.poll(() => new Set([...sub.got.map((d) => d.event.id), ...wsGot]).size).toBe(40);
    expect(sub.got.length).toBeGreaterThan(0);
    expect(wsGot.length).toBeGreaterThan(0);
    const first = sub.got[0]!;
    expect(first.event).toMatchObject({ source: '/grpc', type: 'grpc.type', specVersion: '1.0' });
    expect(JSON.parse(first.event.textData ?? '')).toHaveProperty('id');
    expect(first.event.attributes).not.toHaveProperty('knativebrokerttl');
    expect(first.sequence).toBeGreaterThan(0);
  });

  it('never sends a member more than its window; nack with drop dead-letters, window grows on request', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const sub = subscribe(c, { target: 'default/default', group: 'slow', window: 2 }, { ack: false });
    await expect.poll(() => sub.state.subscribed).toBeDefined();
    await call((cb) =>
      c.PublishBatch(
        { target: 'default/default', events: Array.from({ length: 6 }, (_, i) => ce(`w${i}`)) },
        new grpc.Metadata(),
        cb,
      ),
    );
    await expect.poll(() => sub.got.length).toBe(2);
    sub.stream.write({ window: { size: 6 } });
    await expect.poll(() => sub.got.length).toBe(6);
    sub.stream.write({ nack: { id: sub.got[0]!.id, drop: true, reason: 'no' } });
    sub.stream.write({ ack: { ids: sub.got.slice(1).map((d) => d.id) } });
    // Nothing comes back: the dropped one had no dead-letter sink and the rest were acknowledged.
    await expect
      .poll(
        async () =>
          (await (await fetch(`${s.url}/apis/stats`)).json()) as {
            subscriptions: { kind: string; name: string; lag: number }[];
          },
      )
      .toMatchObject({
        subscriptions: expect.arrayContaining([
          expect.objectContaining({ kind: 'ConsumerGroup', name: 'slow', lag: 0 }),
        ]),
      });
  });

  it('request-reply over gRPC; no responder is NOT_FOUND', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const sdk = new TrellisClient({ url: s.url });
    const responder = sdk.respond(
      'default/default',
      { group: 'echo', filter: "type = 'echo.request'" },
      (e) => ({
        source: '/echo',
        type: 'echo.reply',
        data: { echoed: e.id },
      }),
    );
    closers.push(() => responder.close());
    await responder.ready;
    const reply = await call<PbEvent>((cb) =>
      c.Request(
        { target: 'default/default', event: ce('r1', 'echo.request'), timeoutMs: 10_000 },
        new grpc.Metadata(),
        cb,
      ),
    );
    expect(reply).toMatchObject({ type: 'echo.reply', source: '/echo' });
    expect(JSON.parse(reply.textData ?? '')).toEqual({ echoed: 'r1' });
    const none = await call((cb) =>
      c.Request(
        { target: 'default/default', event: ce('r2', 'nobody'), timeoutMs: 1000 },
        new grpc.Metadata(),
        cb,
      ),
    ).catch((e: grpc.ServiceError) => e);
    expect(none).toMatchObject({ code: grpc.status.NOT_FOUND });
    expect((none as grpc.ServiceError).metadata.get('trellis-error-code')).toEqual([
      'TRELLIS_ERR_NO_RESPONDER',
    ]);
  });

  it('answers bad input with a status, the Trellis code and a message naming the field', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const fail = (method: 'Publish' | 'PublishBatch' | 'Request', req: unknown) =>
      call((cb) => c[method](req, new grpc.Metadata(), cb)).then(
        () => undefined,
        (e: grpc.ServiceError) => ({
          code: e.code,
          trellis: e.metadata.get('trellis-error-code')[0],
          details: e.details,
        }),
      );
    expect(await fail('Publish', { target: 'not an address', event: ce('x') })).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining('target'),
    });
    expect(await fail('Publish', { target: 'default/default' })).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining('event'),
    });
    expect(
      await fail('Publish', {
        target: 'default/default',
        event: { id: 'x', source: '/s', specVersion: '1.0' },
      }),
    ).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      trellis: 'TRELLIS_ERR_INVALID_EVENT',
      details: expect.stringContaining("'type'"),
    });
    expect(await fail('Publish', { target: 'default/nope', event: ce('x') })).toMatchObject({
      code: grpc.status.NOT_FOUND,
      trellis: 'TRELLIS_ERR_BROKER_NOT_FOUND',
    });
    expect(await fail('PublishBatch', { target: 'default/default', events: [] })).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining('events'),
    });
    expect(
      await fail('PublishBatch', {
        target: 'default/default',
        events: [
          ce('ok'),
          {
            id: 'bad',
            source: '/s',
            specVersion: '1.0',
            type: 't',
            attributes: { 'Bad-Name': { ceString: 'x' } },
          },
        ],
      }),
    ).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining('events[1]'),
    });
    // A subscription that does not start with Subscription, or names a group that reads another stream.
    const early = subscribe(c, {} as Record<string, unknown>);
    early.stream.write({ ack: { ids: ['1'] } });
    const noTarget = subscribe(c, { target: '' });
    await expect.poll(() => noTarget.state.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    const bad = c.Subscribe();
    let err: grpc.ServiceError | undefined;
    bad.on('error', (e: grpc.ServiceError) => {
      err = e;
    });
    bad.on('data', () => undefined);
    bad.write({ ack: { ids: ['1'] } });
    await expect.poll(() => err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err!.details).toContain('Subscription');
  });

  it('with an admin token set, subscribing needs it in the authorization metadata', async () => {
    const { s, c } = await setup({ adminToken: 'grpc-secret' });
    await using _s = s;
    const denied = subscribe(c, { target: 'default/default', group: 'g' });
    await expect.poll(() => denied.state.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    const md = new grpc.Metadata();
    md.set('authorization', 'Bearer grpc-secret');
    const ok = subscribe(c, { target: 'default/default', group: 'g' }, { md });
    await expect.poll(() => ok.state.subscribed).toMatchObject({ group: 'g' });
  });

  it('over TLS: the server’s certificate, renewed without a restart; a client certificate signed by --tls-client-ca identifies the sender', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-grpc-tls-'));
    const srv = makeCerts(dir, 'srv');
    const client = makeCerts(dir, 'sensor', 'sensor-7');
    const certFile = join(dir, 'tls.crt');
    const keyFile = join(dir, 'tls.key');
    writeFileSync(certFile, srv.cert);
    writeFileSync(keyFile, srv.key);
    writeFileSync(join(dir, 'client-ca.crt'), srv.ca);
    const dispatcher = new Agent({ connect: { ca: srv.ca } });
    try {
      await using s = await testServer({
        grpcPort: 0,
        tlsCert: certFile,
        tlsKey: keyFile,
        tlsClientCa: join(dir, 'client-ca.crt'),
        authentication: 'oidc',
        defaultAuthorizationMode: 'deny-all',
      });
      const admin = async (path: string, doc: unknown) =>
        (
          await fetch(`${s.url}${path}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify(doc),
            dispatcher,
          } as unknown as RequestInit)
        ).status;
      expect(await admin('/apis/eventing.knative.dev/v1/namespaces/default/brokers', broker('sensors'))).toBe(
        201,
      );
      expect(
        await admin('/apis/eventing.knative.dev/v1alpha1/namespaces/default/eventpolicies', {
          apiVersion: 'eventing.knative.dev/v1alpha1',
          kind: 'EventPolicy',
          metadata: { name: 'sensors', namespace: 'default' },
          spec: { from: [{ sub: 'sensor-*' }] },
        }),
      ).toBe(201);
      const addr = `127.0.0.1:${s.grpcPort}`;
      const ca = Buffer.from(srv.ca);
      const withCert = new pkg.trellis.v1.EventMesh(
        addr,
        grpc.credentials.createSsl(ca, Buffer.from(client.key), Buffer.from(client.cert)),
      );
      const without = new pkg.trellis.v1.EventMesh(addr, grpc.credentials.createSsl(ca));
      const plain = new pkg.trellis.v1.EventMesh(addr, grpc.credentials.createInsecure());
      closers.push(
        () => withCert.close(),
        () => without.close(),
        () => plain.close(),
      );
      const publish = (c: EventMeshClient, id: string) =>
        call<{ accepted: number }>((cb) =>
          c.Publish({ target: 'default/sensors', event: ce(id) }, new grpc.Metadata(), cb),
        );
      // The certificate's CN is the sender, which the policy allows (once it is in force).
      await expect
        .poll(() => publish(withCert, `m-${Math.random()}`).catch((e) => e.code))
        .toEqual({
          accepted: 1,
        });
      await expect(publish(without, 'anonymous')).rejects.toMatchObject({
        code: grpc.status.UNAUTHENTICATED,
      });
      await expect(publish(plain, 'plaintext')).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });

      // Renewal: new files are served on the gRPC port without a restart, and clients still publish.
      const served = () =>
        new Promise<string>((resolve, reject) => {
          const t = connect(
            { host: '127.0.0.1', port: s.grpcPort!, ca: srv.ca, ALPNProtocols: ['h2'] },
            () => {
              resolve(t.getPeerCertificate().fingerprint256);
              t.end();
            },
          );
          t.on('error', reject);
        });
      const before = await served();
      const renewed = makeCerts(dir, 'srv2');
      writeFileSync(keyFile, renewed.key);
      writeFileSync(certFile, renewed.cert);
      await expect.poll(served, { timeout: 20_000, interval: 250 }).not.toBe(before);
      const fresh = new pkg.trellis.v1.EventMesh(
        addr,
        grpc.credentials.createSsl(ca, Buffer.from(client.key), Buffer.from(client.cert)),
      );
      closers.push(() => fresh.close());
      expect(await publish(fresh, 'after-renewal')).toEqual({ accepted: 1 });
    } finally {
      await dispatcher.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
