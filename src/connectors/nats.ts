/**
 * The NATS connector's runtime: a connection per NatsSource and NatsSink (the client loaded only when one
 * exists). A source turns each message into a CloudEvent (the binding, or a wrapper), stores it in the
 * source's stream, and only then acknowledges it to JetStream; the delivery engine takes it to the sink.
 * A sink publishes each event it is given and answers once NATS (JetStream, when asked) confirmed.
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { CloudEvent } from '../cloudevents/event.js';
import { TrellisError } from '../errors.js';
import type { ConnectionState } from '../resources/connector-spec.js';
import type { NatsAuth, NatsSinkSpec, NatsSourceSpec } from '../resources/nats-connector.js';
import type { ResourceObject } from '../store/types.js';
import { decodeNats, encodeNats, type HeaderList, looksLikeCloudEvent, wrapNats } from './nats-binding.js';
import {
  type ConnectorDeps,
  ConnectorRunners,
  connectorKey,
  type Runner,
  refusedForGood,
  secretEnv,
  secretFile,
} from './runners.js';

type Nats = typeof import('@nats-io/transport-node');
type Js = typeof import('@nats-io/jetstream');
type Conn = import('@nats-io/transport-node').NatsConnection;

/** Messages a source works on at once (stored in parallel; acknowledged each when stored). */
const WINDOW = 64;
const RETRY_CONNECT_MS = 5000;

/** Reads credentials from the files and environment variables the resource names; errors name them, never their values. */
function authOptions(auth: NatsAuth | undefined, nats: Nats): Record<string, unknown> {
  if (auth === undefined) return {};
  const file = secretFile;
  const env = secretEnv;
  const authenticator = [];
  if (auth.credsFile !== undefined) {
    const f = auth.credsFile;
    authenticator.push(nats.credsAuthenticator(() => new TextEncoder().encode(file(f, 'credentials'))));
  }
  if (auth.user !== undefined) {
    const pass =
      auth.passwordFile !== undefined
        ? file(auth.passwordFile, 'password')
        : auth.passwordEnv !== undefined
          ? env(auth.passwordEnv, 'password')
          : undefined;
    authenticator.push(nats.usernamePasswordAuthenticator(auth.user, pass));
  }
  if (auth.tokenFile !== undefined || auth.tokenEnv !== undefined)
    authenticator.push(
      nats.tokenAuthenticator(
        auth.tokenFile !== undefined ? file(auth.tokenFile, 'token') : env(auth.tokenEnv!, 'token'),
      ),
    );
  const tls =
    auth.tlsCaFile || auth.tlsCertFile || auth.tlsKeyFile
      ? {
          ...(auth.tlsCaFile ? { caFile: auth.tlsCaFile } : {}),
          ...(auth.tlsCertFile ? { certFile: auth.tlsCertFile } : {}),
          ...(auth.tlsKeyFile ? { keyFile: auth.tlsKeyFile } : {}),
        }
      : undefined;
  return { ...(authenticator.length > 0 ? { authenticator } : {}), ...(tls ? { tls } : {}) };
}

function headerList(h: import('@nats-io/transport-node').MsgHdrs | undefined): HeaderList {
  const out: HeaderList = [];
  if (h === undefined) return out;
  for (const k of h.keys()) for (const v of h.values(k)) out.push([k, v]);
  return out;
}

/** A message as an event: decoded per the binding, or wrapped (with the reason when it claimed to be one). */
function toEvent(
  subject: string,
  id: string,
  headers: HeaderList,
  payload: Buffer,
  o: ResourceObject,
): CloudEvent {
  let e: CloudEvent;
  if (looksLikeCloudEvent(headers)) {
    try {
      e = decodeNats(headers, payload);
    } catch (err) {
      e = wrapNats(subject, id, headers, payload, (err as Error).message);
    }
  } else e = wrapNats(subject, id, headers, payload);
  const ext = (o.spec as unknown as NatsSourceSpec).ceOverrides?.extensions;
  if (ext !== undefined) e.attrs = { ...e.attrs, ...ext };
  return e;
}

export class NatsConnectors extends ConnectorRunners {
  protected readonly sinkKind = 'NatsSink';
  private libs: Promise<{ nats: Nats; js: Js }> | undefined;

  constructor(deps: ConnectorDeps) {
    super(deps);
  }

  private load(): Promise<{ nats: Nats; js: Js }> {
    this.libs ??= Promise.all([import('@nats-io/transport-node'), import('@nats-io/jetstream')]).then(
      ([nats, js]) => ({ nats, js }),
    );
    return this.libs;
  }

  protected start(o: ResourceObject, signature: string): Runner {
    const label = { [o.kind.toLowerCase()]: `${o.metadata.namespace}/${o.metadata.name}` };
    let stopped = false;
    let nc: Conn | undefined;
    let retry: NodeJS.Timeout | undefined;
    const stops: (() => Promise<void> | void)[] = [];
    const report = (state: ConnectionState) => this.report(runner, state);
    const runner: Runner = {
      signature,
      o,
      stop: async () => {
        stopped = true;
        clearTimeout(retry);
        for (const s of stops.splice(0)) await s();
        await nc?.drain().catch(() => undefined);
      },
    };
    const connect = async (): Promise<void> => {
      if (stopped || this.closed) return;
      const spec = runner.o.spec as unknown as NatsSourceSpec | NatsSinkSpec;
      try {
        const { nats } = await this.load();
        nc = await nats.connect({
          servers: spec.servers,
          name: `trellis ${o.kind} ${o.metadata.namespace}/${o.metadata.name}`,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 1000,
          noAsyncTraces: true,
          ...authOptions(spec.auth, nats),
        });
      } catch (err) {
        const message = `cannot connect to ${spec.servers.join(', ')}: ${(err as Error).message}; trying again in ${RETRY_CONNECT_MS / 1000} s`;
        this.deps.logger.warn({ ...label }, message);
        void report({ state: 'Failed', message });
        retry = setTimeout(() => void connect(), RETRY_CONNECT_MS);
        return;
      }
      if (stopped) {
        await nc.close();
        return;
      }
      const conn = nc;
      void (async () => {
        for await (const s of conn.status()) {
          if (s.type === 'disconnect')
            void report({ state: 'Disconnected', message: 'NATS is unreachable; reconnecting' });
          else if (s.type === 'reconnect') void report({ state: 'Connected' });
        }
      })();
      try {
        if (o.kind === 'NatsSource') await this.runSource(runner, conn, stops, () => stopped);
        else this.runSink(runner, conn);
        void report({ state: 'Connected' });
        this.deps.logger.info({ ...label }, 'connected to NATS');
      } catch (err) {
        const message = `${(err as Error).message}; trying again in ${RETRY_CONNECT_MS / 1000} s`;
        this.deps.logger.warn({ ...label }, message);
        void report({ state: 'Failed', message });
        for (const s of stops.splice(0)) await s();
        await conn.close().catch(() => undefined);
        nc = undefined;
        retry = setTimeout(() => void connect(), RETRY_CONNECT_MS);
      }
    };
    void connect();
    return runner;
  }

  private async runSource(
    runner: Runner,
    nc: Conn,
    stops: (() => Promise<void> | void)[],
    stopped: () => boolean,
  ): Promise<void> {
    const o = runner.o;
    const spec = o.spec as unknown as NatsSourceSpec;
    const stream = connectorKey(o);
    const label = { natssource: `${o.metadata.namespace}/${o.metadata.name}` };
    const store = (e: CloudEvent) => this.deps.accept(stream, [e]);
    if (spec.jetstream === undefined) {
      // Core NATS: no acknowledgement exists; a queue group shares the subject among Trellis processes.
      const sub = nc.subscribe(spec.subject, {
        queue: spec.queueGroup ?? `trellis-${o.metadata.namespace}-${o.metadata.name}`,
        callback: (_err, m) => {
          const e = toEvent(m.subject, randomUUID(), headerList(m.headers), Buffer.from(m.data), runner.o);
          store(e).catch((err: unknown) =>
            this.deps.logger.error(
              { ...label, err, subject: m.subject },
              'a core NATS message could not be stored and is lost',
            ),
          );
        },
      });
      stops.push(() => sub.unsubscribe());
      return;
    }
    const { js: jsLib } = await this.load();
    const jsm = await jsLib.jetstreamManager(nc);
    const durable = spec.jetstream.consumer ?? `trellis-${o.metadata.namespace}-${o.metadata.name}`;
    const exists = await jsm.consumers.info(spec.jetstream.stream, durable).catch(() => undefined);
    if (exists === undefined)
      await jsm.consumers.add(spec.jetstream.stream, {
        durable_name: durable,
        ack_policy: jsLib.AckPolicy.Explicit,
        deliver_policy:
          spec.jetstream.deliverPolicy === 'new' ? jsLib.DeliverPolicy.New : jsLib.DeliverPolicy.All,
        filter_subject: spec.subject,
        ack_wait: spec.jetstream.ackWaitMs * 1_000_000,
      });
    else if (exists.config.ack_wait !== spec.jetstream.ackWaitMs * 1_000_000)
      await jsm.consumers.update(spec.jetstream.stream, durable, {
        ack_wait: spec.jetstream.ackWaitMs * 1_000_000,
      });
    const c = await jsLib.jetstream(nc).consumers.get(spec.jetstream.stream, durable);
    const messages = await c.consume({ max_messages: WINDOW });
    stops.push(() => messages.stop());
    const inflight = new Set<Promise<void>>();
    void (async () => {
      for await (const m of messages) {
        if (stopped()) break;
        const id = `${spec.jetstream!.stream}-${m.seq}`;
        const e = toEvent(m.subject, id, headerList(m.headers), Buffer.from(m.data), runner.o);
        const p = store(e).then(
          () => m.ack(),
          (err: unknown) => {
            if (!refusedForGood(err)) {
              // Trellis is behind, its store is away, or the source's stream is not ready yet: JetStream
              // keeps the message and gives it again later.
              m.nak(err instanceof TrellisError && err.status === 404 ? 1000 : 5000);
              return;
            }
            this.deps.logger.error(
              { ...label, err, subject: m.subject, seq: m.seq },
              'a message was refused and is dropped',
            );
            m.term();
          },
        );
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
        if (inflight.size >= WINDOW) await Promise.race(inflight);
      }
    })();
  }

  private runSink(runner: Runner, nc: Conn): void {
    let js: import('@nats-io/jetstream').JetStreamClient | undefined;
    runner.publish = async (events) => {
      const spec = runner.o.spec as unknown as NatsSinkSpec;
      const { nats, js: jsLib } = await this.load();
      for (const e of events) {
        const { headers, payload } = encodeNats(e, spec.mode);
        const h = nats.headers();
        for (const [k, v] of headers) h.append(k, v);
        try {
          if (spec.jetstream) {
            js ??= jsLib.jetstream(nc);
            await js.publish(spec.subject, payload, { headers: h });
          } else {
            nc.publish(spec.subject, payload, { headers: h });
            await nc.flush();
          }
        } catch (err) {
          throw new TrellisError(
            'TRELLIS_ERR_CONNECTOR_FAILED',
            `NATS did not take the event on ${spec.subject}: ${(err as Error).message}`,
          );
        }
      }
    };
  }
}
