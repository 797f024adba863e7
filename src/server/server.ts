/**
 * The composition root: opens the store, wires ingress, dispatcher, reconciler and HTTP routes, and shuts
 * everything down in order.
 * @module
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import Fastify, { type FastifyInstance } from 'fastify';
import { type Logger, pino } from 'pino';
import { TokenVerifier, TrellisIssuer } from '../auth/oidc.js';
import { PolicyIndex } from '../auth/policies.js';
import { formatEvent } from '../cloudevents/display.js';
import type { CloudEvent } from '../cloudevents/event.js';
import { decodeHttp } from '../cloudevents/http.js';
import { eventFromJson, eventToJson } from '../cloudevents/json-format.js';
import { AmqpConnectors } from '../connectors/amqp.js';
import { KafkaConnectors } from '../connectors/kafka.js';
import { MqttConnectors } from '../connectors/mqtt.js';
import { NatsConnectors } from '../connectors/nats.js';
import { RedisConnectors } from '../connectors/redis.js';
import type { ConnectorRunners } from '../connectors/runners.js';
import { DEFAULT_DENIED_NETWORKS, DestinationRules } from '../dataplane/destinations.js';
import { Dispatcher } from '../dataplane/dispatcher.js';
import { ConsumerGroups } from '../dataplane/groups.js';
import { Ingress, type Senders } from '../dataplane/ingress.js';
import { LagCounter } from '../dataplane/lag.js';
import { observers } from '../dataplane/observer.js';
import { ReplyWaiters } from '../dataplane/replies.js';
import type { StreamRoute, SubscriptionRoute } from '../dataplane/routes.js';
import { Sender } from '../dataplane/sender.js';
import { Transformer } from '../dataplane/transform.js';
import { type ErrorCode, TrellisError } from '../errors.js';
import { Metrics } from '../observability/metrics.js';
import { LiveStats } from '../observability/stats.js';
import { TailHub } from '../observability/tail.js';
import { startTracing } from '../observability/tracing.js';
import { GrpcIngress } from '../protocols/grpc/grpc.js';
import { adminGuard, bearerCheck, isLoopback } from '../protocols/http/admin-guard.js';
import { registerAdminRoutes } from '../protocols/http/admin-routes.js';
import { registerAuthRoutes } from '../protocols/http/auth-routes.js';
import { registerConnectorSinkRoutes } from '../protocols/http/connector-routes.js';
import { registerDeadLetterRoutes } from '../protocols/http/deadletter-routes.js';
import { sendError } from '../protocols/http/errors.js';
import { registerHistoryRoutes } from '../protocols/http/history-routes.js';
import { ingressHandler, rateLimiter, registerIngressRoutes } from '../protocols/http/ingress-routes.js';
import { type LogSinks, registerLogSinkRoutes } from '../protocols/http/log-sink-routes.js';
import { registerReplayRoutes } from '../protocols/http/replay-routes.js';
import { serveEventStream } from '../protocols/http/sse-routes.js';
import { registerStatsRoutes } from '../protocols/http/stats-routes.js';
import { registerTailRoutes } from '../protocols/http/tail-routes.js';
import { registerTransformRoutes } from '../protocols/http/transform-routes.js';
import { registerUiRoutes } from '../protocols/http/ui-routes.js';
import { Streaming } from '../protocols/streaming.js';
import { Subscriptions } from '../protocols/subscriptions.js';
import { WebSocketIngress } from '../protocols/ws/websocket.js';
import {
  CONNECTOR_SINK_PREFIXES,
  INTEGRATION_SINK_PREFIX,
  pathAudience,
  TRANSFORM_PREFIX,
} from '../resources/addressing.js';
import { type Cond, isReady, ready } from '../resources/conditions.js';
import { type ConnectionState, connectedCondition } from '../resources/connector-spec.js';
import { type ContainerSourceSpec, deployedCondition, processOf } from '../resources/containersource.js';
import type { IntegrationSinkSpec } from '../resources/integration.js';
import { SUBSCRIBING_KINDS } from '../resources/kinds.js';
import {
  configurationsReady,
  type KnativeServiceSpec,
  serviceProcessOf,
} from '../resources/knative-service.js';
import { parseRate } from '../resources/rate.js';
import { StatusReconciler } from '../resources/reconciler.js';
import { parseDocuments, ResourceRegistry } from '../resources/registry.js';
import { ApiServerSources } from '../sources/apiserver.js';
import { JobRunner } from '../sources/jobs.js';
import { ScheduledSources } from '../sources/scheduler.js';
import { containerSourceWorkload, knativeServiceWorkload, ProcessSupervisor } from '../sources/supervisor.js';
import { openSqliteStore } from '../store/sqlite/sqlite-store.js';
import { DEAD_LETTER_PREFIX, type ResourceObject, type Store, type StreamRetention } from '../store/types.js';
import { DEFAULT_CONFIG, type ServerConfig } from './config.js';
import { EventTypeRecorder } from './eventtype-recorder.js';
import { GrpcCertificates, TlsCertificate } from './tls.js';
import { RouteTable, subscriptionOwner } from './wiring.js';

/**
 * pino: JSON lines, or pino-pretty's lines for people (on a terminal unless `--log-format json`), written
 * synchronously so that nothing is lost when the process exits.
 */
async function makeLogger(cfg: ServerConfig) {
  const opts = { level: cfg.logLevel, base: { name: 'trellis' } };
  const pretty = cfg.logFormat === 'pretty' || (cfg.logFormat === undefined && process.stdout.isTTY === true);
  if (!pretty) return pino(opts);
  const { default: prettyStream } = await import('pino-pretty');
  return pino(opts, prettyStream({ colorize: process.stdout.isTTY === true, sync: true, ignore: 'name' }));
}

/** Path prefixes of the addressables Fastify serves (the others go through the ingress handler). */
const FASTIFY_ADDRESSABLES: ReadonlySet<string> = new Set([
  ...CONNECTOR_SINK_PREFIXES,
  INTEGRATION_SINK_PREFIX,
  TRANSFORM_PREFIX,
]);

/** This package's version, for `trellis_build_info`. */
const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/** A running Trellis server. */
export interface TrellisServer {
  /** The base URL it listens on, e.g. http://127.0.0.1:8080 */
  url: string;
  app: FastifyInstance;
  store: Store;
  registry: ResourceRegistry;
  ingress: Ingress;
  dispatcher: Dispatcher;
  /** The port of the gRPC API, when it is served (`grpcPort`). */
  grpcPort?: number | undefined;
  /** Resolves when every resource change so far has reached the data plane. */
  settled(): Promise<void>;
  /** Writes the event types ingress saw since the last flush as EventTypes (it also runs on a timer). */
  flushEventTypes(): Promise<void>;
  /** Stops accepting, finishes or hands back deliveries in flight, closes the store. */
  close(): Promise<void>;
}

/** The path of the built-in event display used by the quickstart Trigger. */
export const DISPLAY_PATH = '/_display';

/**
 * Starts a server.
 *
 * @example
 * const server = await startServer({ port: 0, dataDir: ':memory:' });
 * console.log(server.url);
 * await server.close();
 */
export async function startServer(partial: Partial<ServerConfig> = {}): Promise<TrellisServer> {
  const cfg: ServerConfig = { ...DEFAULT_CONFIG, ...partial };
  if (cfg.maxBodyBytes < 64 * 1024)
    throw new Error('maxBodyBytes must be at least 65536 (the CloudEvents HTTP binding asks for 64 KiB)');
  const logger = await makeLogger(cfg);
  checkProtectedMode(cfg, logger);
  const store = await openStore(cfg, logger);
  await store.ready();
  const registry = new ResourceRegistry(store.resources);
  // TLS when a certificate is given: https for ingress and the admin API; read now, so a bad pair stops the start.
  const tls =
    cfg.tlsCert !== undefined && cfg.tlsKey !== undefined
      ? new TlsCertificate(cfg.tlsCert, cfg.tlsKey)
      : undefined;
  const tlsFiles = tls?.files();
  const clientCa = cfg.tlsClientCa === undefined ? undefined : readFileSync(cfg.tlsClientCa, 'utf8');
  // gRPC serves the same pair, renewed with it.
  const grpcCerts = tlsFiles === undefined ? undefined : new GrpcCertificates(tlsFiles, clientCa);
  // Which addresses deliveries may connect to; the server's own URLs (known once it listens) always.
  let isSelfUrl: (url: string) => boolean = () => false;
  const rules = new DestinationRules(
    {
      deny: cfg.denyNetworks ?? DEFAULT_DENIED_NETWORKS,
      allow: cfg.allowNetworks ?? [],
      denyLoopback: cfg.denyLoopback === true,
    },
    (u) => isSelfUrl(u),
  );
  const sender = new Sender({
    rules,
    // Deliveries to this server itself trust its own certificate.
    selfCa: tlsFiles?.cert,
    connections: Math.max(16, cfg.concurrency),
    maxResponseBytes: cfg.maxBodyBytes,
  });
  let dispatcher: Dispatcher;
  const lag = new LagCounter();
  const transformSender = new Sender({ connections: 16, maxResponseBytes: cfg.maxBodyBytes, rules });
  const transformer = new Transformer(transformSender, { evalTimeoutMs: 1000, maxDepth: 500 });
  let recorder: EventTypeRecorder | undefined;
  const tails = new TailHub();
  const replies = new ReplyWaiters();
  // In a mesh of several processes, a reply stored here to a request made on another goes to that one.
  const stopNotices =
    store.notify !== undefined && store.onNotice !== undefined
      ? (() => {
          const notify = store.notify.bind(store);
          replies.forward = (owner, reply) =>
            notify(`replies.${owner}`, Buffer.from(JSON.stringify(eventToJson(reply))));
          return store.onNotice(`replies.${replies.id}`, (payload) => {
            try {
              replies.observe([eventFromJson(JSON.parse(Buffer.from(payload).toString('utf8')))]);
            } catch (err) {
              logger.warn({ err }, 'a forwarded reply could not be read');
            }
          });
        })()
      : undefined;
  const ingress = new Ingress(
    store.events,
    {
      notify: (sub, seq, ev) => dispatcher.notify(sub, seq, ev),
      stored: (st, evs, seqs) => {
        if (cfg.eventTypeAutoCreate) recorder?.stored(st, evs);
        tails.publish(st.key, evs, seqs);
        replies.observe(evs);
      },
    },
    lag,
    {
      maxPendingWrites: cfg.maxPendingWrites,
    },
  );
  dispatcher = new Dispatcher(
    store.events,
    store.deliveries,
    sender,
    async (b, evs, trace) => {
      await ingress.accept(b, evs, trace);
    },
    logger,
    {
      concurrency: cfg.concurrency,
      bufferSize: cfg.deliveryBufferSize,
      errorDataBytes: 1024,
    },
    lag,
  );
  // What the data plane does, counted: live stats always, Prometheus metrics unless switched off.
  const liveStats = new LiveStats();
  const metrics =
    cfg.metrics === false
      ? undefined
      : new Metrics({
          routes: () => table.subscriptions(),
          backlog: () => store.deliveries.backlog(),
          pendingWrites: () => store.events.pendingWrites(),
          inflight: () => dispatcher.inflight(),
          store: cfg.store,
          version: VERSION,
        });
  ingress.observer = observers(liveStats, metrics);
  dispatcher.observer = ingress.observer;
  // Tracing only when an OTLP endpoint is configured: otherwise nothing is loaded.
  const tracing = await startTracing(VERSION);
  ingress.tracer = tracing?.tracer;
  dispatcher.tracer = tracing?.tracer;
  if (tracing !== undefined) logger.info({}, 'tracing: spans are exported over OTLP/HTTP');

  const limiter = rateLimiter(ingress);
  const ingest = ingressHandler(ingress, cfg.maxBodyBytes, logger, limiter);
  // Consumer groups' members connected here; a group's subscription is drained here only while it has some.
  const groups = new ConsumerGroups(() => scheduleDispatch());
  // The routes the dispatcher drains: a consumer group's only where it has members, with them attached.
  const dispatchRoutes = (subs: readonly SubscriptionRoute[]) =>
    subs.flatMap((r) => {
      if (r.kind !== 'ConsumerGroup') return [r];
      const g = groups.get(r.id);
      return g === undefined ? [] : [{ ...r, local: g }];
    });
  let scheduleDispatch: () => void = () => undefined;
  // WebSocket upgrades on the same port (set once the server listens).
  let websockets: WebSocketIngress | undefined;
  const app = Fastify({
    logger: false,
    bodyLimit: cfg.maxBodyBytes,
    // Names are up to 253 characters (DNS-1123 subdomains); Fastify's default limit on a path part is 100.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 512 },
    forceCloseConnections: 'idle',
    // Kubernetes' core group lives at /api/v1 (v1 Service): served by the /apis routes as group 'core'.
    rewriteUrl: (req) => (req.url?.startsWith('/api/') ? `/apis/core/${req.url.slice(5)}` : (req.url ?? '/')),
    // Broker ingress is served before Fastify's routing: it is the hot path.
    serverFactory: (handler) => {
      const options = {
        // A request must arrive whole within these bounds (slow-loris senders are cut off).
        headersTimeout: Math.min(cfg.requestTimeoutMs, 60_000),
        requestTimeout: cfg.requestTimeoutMs,
        connectionsCheckingInterval: Math.min(1000, cfg.requestTimeoutMs),
      };
      const serve = (req: IncomingMessage, res: ServerResponse) => {
        let mine: boolean;
        try {
          mine = ingest(req, res);
        } catch (err) {
          // A bug must cost one request, never the process.
          logger.error({ err, url: req.url }, 'ingress failed on a request');
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({
              code: 'TRELLIS_ERR_INTERNAL',
              message: `internal error: ${(err as Error).message}`,
            }),
          );
          return;
        }
        if (!mine) handler(req, res);
      };
      const server =
        tlsFiles === undefined
          ? createServer(options, serve)
          : createHttpsServer(
              {
                ...options,
                ...tlsFiles,
                // Senders may present a certificate signed by --tls-client-ca; others still connect
                // (the admin API, senders with tokens), and the request decides.
                ...(clientCa !== undefined
                  ? { ca: clientCa, requestCert: true, rejectUnauthorized: false }
                  : {}),
              },
              serve,
            );
      server.on('clientError', (err: NodeJS.ErrnoException, socket) => answerClientError(err, socket));
      server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
        socket.on('error', () => undefined);
        if (websockets?.upgrade(req, socket, head) === true) return;
        const body = JSON.stringify({
          code: 'TRELLIS_ERR_ROUTE_NOT_FOUND',
          message: `no WebSocket at ${String(req.url).split('?')[0]!.slice(0, 200)}; connect to an address (/namespace/broker, /channels/namespace/name)`,
        });
        socket.end(
          `HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      });
      if (tls !== undefined) {
        // A handshake that fails (a plain-HTTP client, an old TLS) costs the connection only.
        server.on('tlsClientError', (_err, socket) => socket.destroy());
        tls.watch(
          (files) => {
            // The client CA stays: a renewal replaces the server's own pair only.
            (server as HttpsServer).setSecureContext({
              ...files,
              ...(clientCa !== undefined ? { ca: clientCa } : {}),
            });
            sender.trustSelf(files.cert);
            grpcCerts?.update(files);
            logger.info({ cert: cfg.tlsCert }, 'TLS certificate and key reloaded');
          },
          (err) =>
            logger.warn(
              { err: err.message },
              'the TLS files changed and do not load; the previous pair is kept',
            ),
        );
      }
      return server;
    },
  });
  // The admin API answers only the server's own names and pages, and the admin token when one is set.
  let guard: ReturnType<typeof adminGuard> | undefined;
  app.addHook('onRequest', async (req, reply) => {
    if (!req.url.startsWith('/apis') && !req.url.startsWith('/metrics')) return;
    try {
      guard?.(req.headers);
    } catch (err) {
      if (err instanceof TrellisError && err.status === 401) reply.header('www-authenticate', 'Bearer');
      return sendError(reply, err);
    }
  });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.setErrorHandler((err, _req, reply) => sendError(reply, err));
  app.setNotFoundHandler((req, reply) =>
    sendError(
      reply,
      new TrellisError('TRELLIS_ERR_ROUTE_NOT_FOUND', `no route for ${req.method} ${req.url}`),
    ),
  );
  let loaded = false;
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    try {
      await store.ready();
    } catch (err) {
      return reply.code(503).send({ status: 'not ready', reason: `store: ${(err as Error).message}` });
    }
    if (!loaded) return reply.code(503).send({ status: 'not ready', reason: 'resources are still loading' });
    return { status: 'ready' };
  });
  app.post(DISPLAY_PATH, async (req, reply) => {
    try {
      const { events } = decodeHttp(
        req.raw.rawHeaders,
        Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0),
      );
      for (const e of events) process.stdout.write(`${formatEvent(e)}\n`);
      return reply.code(202).send();
    } catch (err) {
      return sendError(reply, err);
    }
  });

  let reconciler: StatusReconciler | undefined;
  const settled = async () => {
    await reconciler?.settled();
    await pendingUpdate;
  };
  registerAdminRoutes(app, registry, settled, (stream, id, source) =>
    store.events.findEvent(stream, id, source),
  );
  registerHistoryRoutes(app, store.events, store.resources);
  registerTailRoutes(app, tails, store.resources);
  // Consumer groups and replay: made once resources are loaded (the routes exist from the start).
  let subscriptions: Subscriptions | undefined;
  registerReplayRoutes(app, {
    registry,
    route: (id) => table.route(id),
    replay: (route, from, untilMs) => {
      if (subscriptions === undefined)
        throw new TrellisError('TRELLIS_ERR_SHUTTING_DOWN', 'the server is starting');
      return subscriptions.replay(route, from, untilMs);
    },
  });
  registerUiRoutes(app);
  // OIDC: Trellis's issuer (made once the server knows its public URL) and the verification of senders.
  let issuer: TrellisIssuer | undefined;
  let verifier: TokenVerifier | undefined;
  registerAuthRoutes(app, () => issuer);
  const authenticating = cfg.authentication === 'oidc';
  const senders: Senders = {
    check: (authorization, audience, socket) => {
      const token = /^Bearer +([^\s]{1,16384})$/i.exec(authorization ?? '')?.[1];
      // Without a token, a client certificate signed by --tls-client-ca: its subject's CN is the sender.
      if (token === undefined && clientCa !== undefined) {
        const tlsSocket = socket as TLSSocket | undefined;
        const cn = tlsSocket?.authorized === true ? tlsSocket.getPeerCertificate()?.subject?.CN : undefined;
        if (typeof cn === 'string' && cn !== '') return { sub: cn, iss: 'tls-client-certificate' };
      }
      if (token === undefined)
        throw new TrellisError(
          'TRELLIS_ERR_TOKEN_MISSING',
          `sending here needs Authorization: Bearer <token> with audience ${audience}`,
        );
      if (verifier === undefined)
        throw new TrellisError('TRELLIS_ERR_SHUTTING_DOWN', 'the server is starting');
      return verifier.cached(token, audience) ?? verifier.verify(token, audience);
    },
    authorize: (stream, sender, events) => policies.authorize(stream, sender.sub, events),
  };
  const policies = new PolicyIndex(cfg.defaultAuthorizationMode ?? 'allow-all');
  if (authenticating) {
    ingress.senders = senders;
    // The addressables Fastify serves (sinks, EventTransforms) check the same way.
    app.addHook('preHandler', async (req, reply) => {
      if (req.method !== 'POST') return;
      const path = req.url.split('?')[0]!;
      const prefix = path.split('/')[1] ?? '';
      if (!FASTIFY_ADDRESSABLES.has(prefix)) return;
      try {
        const sender = await senders.check(
          req.headers.authorization,
          pathAudience(path) ?? path,
          req.raw.socket,
        );
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        senders.authorize(path.slice(1), sender, decodeHttp(req.raw.rawHeaders, body).events);
      } catch (err) {
        return sendError(reply, err);
      }
    });
  }
  registerDeadLetterRoutes(app, {
    log: store.events,
    resources: store.resources,
    logger,
    routes: () => table.subscriptions(),
    // A redriven event is a new delivery for its one subscription, stored before it is sent.
    redeliver: async (route, event) => {
      const [seq] = await store.events.append([{ stream: route.stream, event, deliveries: [route.id] }]);
      lag.add(route.stream, 1);
      dispatcher.notify(route.id, seq!, event);
    },
    send: async (url, event) => {
      const r = await sender.send('redrive', url, event, cfg.deliveryTimeoutMs, 'knativebrokerttl');
      if (r.kind === 'error') throw new Error(`${url}: ${r.error}`);
      return r.status;
    },
    peek: (sub, after, limit) => store.deliveries.peek(sub, after, limit),
    lastAnswer: (sub, seq) => dispatcher.lastAnswer(sub, seq),
  });
  registerStatsRoutes(app, {
    stats: liveStats,
    metrics,
    routes: () => table.subscriptions(),
    backlog: () => store.deliveries.backlog(),
  });
  /** The Ready log IntegrationSinks, kept current from reconciled snapshots. */
  const logSinks: LogSinks = new Map();
  registerLogSinkRoutes(app, logSinks, logger);
  for (const [prefix, kind] of CONNECTOR_SINKS)
    registerConnectorSinkRoutes(app, prefix, kind, (key, events) =>
      connectors.get(kind)!.publish(key, events),
    );
  const jobs = new JobRunner(logger);
  registerConnectorSinkRoutes(app, 'jobsinks', 'JobSink', (key, events) => jobs.run(key, events));
  // Read-only subscribers (Server-Sent Events), once the server is up.
  let streaming: Streaming | undefined;
  let wsGuard: ((headers: IncomingMessage['headers']) => void) | undefined;
  registerIngressRoutes(app, async (req, reply) => {
    if (streaming === undefined || wsGuard === undefined)
      return sendError(reply, new TrellisError('TRELLIS_ERR_SHUTTING_DOWN', 'the server is starting'));
    return serveEventStream(req, reply, streaming, wsGuard, logger);
  });
  registerTransformRoutes(app, transformer);

  const address = await app.listen({ host: cfg.host, port: cfg.port });
  const url = address
    .replace('[::1]', 'localhost')
    .replace(/^https?:/, tls === undefined ? 'http:' : 'https:');
  const publicUrl = cfg.publicUrl ?? url;
  guard = adminGuard({
    host: cfg.host,
    port: Number(new URL(url).port),
    publicUrl: cfg.publicUrl,
    allowedHosts: cfg.allowedHosts,
    token: cfg.adminToken,
  });

  const isSelf = selfUrls(url, publicUrl, cfg.host);
  isSelfUrl = isSelf;
  issuer = await TrellisIssuer.open(
    cfg.oidcSigningKey ??
      (cfg.dataDir === ':memory:' ? undefined : join(cfg.dataDir, 'oidc-signing-key.json')),
    publicUrl,
    (err) =>
      logger.warn(
        { err: err.message },
        'the OIDC signing key could not be saved: tokens Trellis mints now end with this process',
      ),
  );
  verifier = new TokenVerifier(issuer, cfg.oidcIssuers ?? []);
  // Trellis's own deliveries carry a token: for a destination that names an audience, and, when senders
  // must authenticate, for this server's own addressables. Their subject is the subscription's identity.
  dispatcher.tokens = {
    audience: (route, target) => {
      if (route.subscriberAudience !== undefined && target === route.subscriberUri)
        return route.subscriberAudience;
      return authenticating && isSelf(target) ? pathAudience(new URL(target).pathname) : undefined;
    },
    token: (audience, route) =>
      issuer!.tokenFor(
        audience,
        `system:serviceaccount:${route.namespace}:trellis-${route.kind.toLowerCase()}-${route.name.split(' ')[0]}`,
      ),
  };
  let pendingUpdate: Promise<void> = Promise.resolve();
  // Whether a subscription's resource still exists, read from the store itself when the dispatcher asks
  // (after it read the pending counts): another process of a cluster may have made a subscription this
  // one has not heard of yet, and its deliveries must stay.
  const stillOwned = async (): Promise<(id: string) => boolean> => {
    await store.resources.current();
    const uids = new Set<string>();
    for (const kind of SUBSCRIBING_KINDS)
      for (const o of await store.resources.list(kind)) uids.add(o.metadata.uid);
    return (id) => uids.has(subscriptionOwner(id));
  };
  // A group got its first member here, or lost its last: the dispatcher takes it up, or lets it go.
  scheduleDispatch = () => {
    pendingUpdate = pendingUpdate
      .then(() => dispatcher.update(dispatchRoutes(table.subscriptions()), stillOwned))
      .catch((err: unknown) => logger.error({ err }, 'updating the dispatcher failed'));
  };
  const table = new RouteTable({
    defaultTimeoutMs: cfg.deliveryTimeoutMs,
    defaultMaxLag: cfg.maxLag,
    rateLimit: cfg.rateLimit === undefined ? undefined : parseRate(cfg.rateLimit),
    rateLimitPerSender: cfg.rateLimitPerSender === undefined ? undefined : parseRate(cfg.rateLimitPerSender),
    isSelf,
    transforms: transformer.routes,
  });
  ingress.streams = table.streams;
  recorder = new EventTypeRecorder(
    registry,
    store.resources,
    (stream, type) => table.declaredEventTypes(stream, type),
    logger,
    { enabled: cfg.eventTypeAutoCreate, maxPerStream: cfg.eventTypeLimit, maxTotal: cfg.eventTypeLimit * 10 },
  );
  const eventTypeFlusher = setInterval(() => {
    recorder?.flush().catch((err: unknown) => logger.warn({ err }, 'recording EventTypes failed'));
  }, cfg.eventTypeFlushMs);
  eventTypeFlusher.unref();
  const apiSources = new ApiServerSources({
    resources: store.resources,
    accept: async (stream, events) => {
      await ingress.accept(stream, events);
    },
    publicUrl,
    logger,
    ...(store.holdLease !== undefined ? { holdLease: store.holdLease.bind(store) } : {}),
  });
  /**
   * Records runtime state (a process, a connection) in a resource's status, with the condition it decides,
   * and Ready worked out again.
   */
  const setRuntime = async (o: ResourceObject, field: string, value: unknown, cond: Cond) => {
    const cur = await store.resources.get(o.kind, o.metadata.namespace, o.metadata.name);
    if (cur === undefined || cur.metadata.uid !== o.metadata.uid) return;
    const conds = ((cur.status?.['conditions'] ?? []) as Cond[]).filter(
      (c) => c.type !== 'Ready' && c.type !== cond.type,
    );
    conds.push(cond);
    await registry.setStatus(
      cur.kind,
      cur.metadata.namespace,
      cur.metadata.name,
      { ...(cur.status ?? {}), [field]: value, conditions: ready(conds) },
      cur,
    );
  };
  const supervisor = new ProcessSupervisor({
    // When senders must authenticate, a program sending to this server gets a token file (its identity).
    tokenFor: async (o, sinkUri) => {
      if (!authenticating || issuer === undefined || !isSelfUrl(sinkUri)) return undefined;
      const audience = pathAudience(new URL(sinkUri).pathname);
      if (audience === undefined) return undefined;
      return issuer.tokenFor(
        audience,
        `system:serviceaccount:${o.metadata.namespace}:trellis-${o.kind.toLowerCase()}-${o.metadata.name}`,
      );
    },
    logger,
    allowCommands: cfg.allowCommands === true,
    ...(store.holdLease !== undefined ? { holdLease: store.holdLease.bind(store) } : {}),
    runner: `${hostname()}:${process.pid}`,
    host: new URL(publicUrl).hostname,
    writeState: (o, state) =>
      setRuntime(
        o,
        'process',
        state,
        o.kind === 'KnativeService'
          ? configurationsReady(serviceProcessOf(o.spec as unknown as KnativeServiceSpec), state)
          : deployedCondition(processOf(o.spec as unknown as ContainerSourceSpec), state),
      ),
  });
  const connectorDeps = {
    // A message from another system is held to the limit HTTP ingress holds a request to.
    accept: (stream: string, events: CloudEvent[]) => {
      for (const e of events) {
        const size = (e.data?.length ?? 0) + JSON.stringify(e.attrs).length;
        if (size > cfg.maxBodyBytes)
          return Promise.reject(
            new TrellisError(
              'TRELLIS_ERR_PAYLOAD_TOO_LARGE',
              `a ${size}-byte message is over --max-body-bytes (${cfg.maxBodyBytes}); it is not taken`,
            ),
          );
      }
      return ingress.accept(stream, events).then(() => undefined);
    },
    logger,
    writeConnection: (o: ResourceObject, state: ConnectionState) =>
      setRuntime(o, 'connection', state, connectedCondition(state)),
  };
  /** The connectors' runtimes by sink kind; each runs its source kind too. */
  const connectors = new Map<string, ConnectorRunners>([
    ['NatsSink', new NatsConnectors(connectorDeps)],
    ['RedisStreamSink', new RedisConnectors(connectorDeps)],
    [
      'MqttSink',
      new MqttConnectors({
        ...connectorDeps,
        ...(store.holdLease !== undefined ? { holdLease: store.holdLease.bind(store) } : {}),
      }),
    ],
    ['AmqpSink', new AmqpConnectors(connectorDeps)],
    ['KafkaSink', new KafkaConnectors(connectorDeps)],
  ]);
  const pings = new ScheduledSources({
    resources: store.resources,
    accept: (stream, events) => ingress.accept(stream, events).then(() => undefined),
    logger,
  });
  /** Each stream's retention as last given to the store. */
  const configured = new Map<string, string>();
  reconciler = new StatusReconciler(
    store.resources,
    registry,
    publicUrl,
    (snap) => {
      table.apply(snap);
      logSinks.clear();
      for (const o of snap.resources.get('IntegrationSink')?.values() ?? []) {
        const log = (o.spec as unknown as IntegrationSinkSpec).log;
        if (log !== undefined && isReady(o))
          logSinks.set(`integrationsinks/${o.metadata.namespace}/${o.metadata.name}`, log);
      }
      apiSources.update(snap.resources.get('ApiServerSource')?.values() ?? []);
      if (authenticating) policies.rebuild(snap.resources);
      supervisor.update([
        ...[...(snap.resources.get('ContainerSource')?.values() ?? [])].flatMap(containerSourceWorkload),
        ...[...(snap.resources.get('KnativeService')?.values() ?? [])].map(knativeServiceWorkload),
      ]);
      jobs.update(snap.resources.get('JobSink')?.values() ?? []);
      for (const [sinkKind, runners] of connectors)
        runners.update([
          ...(snap.resources.get(sinkKind.replace(/Sink$/, 'Source'))?.values() ?? []),
          ...(snap.resources.get(sinkKind)?.values() ?? []),
        ]);
      pings.update([
        ...(snap.resources.get('PingSource')?.values() ?? []),
        ...(snap.resources.get('IntegrationSource')?.values() ?? []),
      ]);
      const streamChanges = retentionChanges(table.streams, configured);
      const subscriptions = table.subscriptions();
      const live = new Set(subscriptions.map((r) => `${r.kind}/${r.namespace}/${r.name}`));
      liveStats.retain(live);
      metrics?.retain(live);
      pendingUpdate = pendingUpdate
        .then(() => applyRetention(store, streamChanges, logger))
        .then(() => dispatcher.update(dispatchRoutes(subscriptions), stillOwned))
        .catch((err: unknown) => logger.error({ err }, 'updating the dispatcher failed'));
    },
    {
      allowCommands: cfg.allowCommands === true,
      deniedDestination: (u) => rules.deniedUrl(u),
      authentication: authenticating,
    },
  );
  try {
    for (const f of cfg.files) {
      const text = f === '-' ? readFileSync(0, 'utf8') : readFileSync(f, 'utf8');
      const results = await registry.applyMany(parseDocuments(text));
      const failed = results.find((r) => 'error' in r);
      if (failed !== undefined && 'error' in failed) {
        throw new TrellisError(
          'TRELLIS_ERR_RESOURCE_INVALID',
          `${f} document ${failed.index + 1}: ${String(failed.error['message'])}`,
          { field: failed.error['field'] },
        );
      }
    }
    if (cfg.quickstart) await applyQuickstart(registry, publicUrl);
    await reconciler.start();
    await settled();
  } catch (err) {
    pings.stop();
    apiSources.stop();
    await supervisor.close();
    for (const c of connectors.values()) await c.close();
    await app.close();
    await tracing?.shutdown().catch(() => undefined);
    tls?.close();
    await store.close();
    throw err;
  }
  loaded = true;
  subscriptions = new Subscriptions({
    registry,
    events: store.events,
    deliveries: store.deliveries,
    groups,
    route: (id) => table.route(id),
    settled: async () => {
      await settled();
      await pendingUpdate;
    },
    pendingWrites: () => store.events.pendingWrites(),
    streamExists: (key) => ingress.streams.has(key),
    maxMembers: cfg.maxMembers,
    enqueued: (route, n) => {
      lag.add(route.stream, n);
      dispatcher.wake(route.id);
    },
    logger,
  });
  subscriptions.startSweeper(cfg.store === 'nats' ? 30_000 : 5_000);

  streaming = new Streaming({
    ingress,
    subscriptions,
    replies,
    rateLimited: limiter,
    adminToken: authenticating || cfg.adminToken === undefined ? undefined : bearerCheck(cfg.adminToken),
    maxRequestTimeoutMs: 300_000,
  });
  wsGuard = adminGuard({
    host: cfg.host,
    port: Number(new URL(url).port),
    publicUrl: cfg.publicUrl,
    allowedHosts: cfg.allowedHosts,
  });
  websockets = new WebSocketIngress(streaming, {
    guard: (headers) => wsGuard!(headers),
    maxMessageBytes: cfg.maxBodyBytes,
  });
  // gRPC on its own port, when asked for (with the server's certificate when it serves https).
  let grpc: GrpcIngress | undefined;
  let grpcPort: number | undefined;
  if (cfg.grpcPort !== undefined) {
    const { ServerCredentials, experimental } = await import('@grpc/grpc-js');
    // With TLS: the server's pair, renewed with https's, and (with --tls-client-ca) senders' certificates.
    const creds =
      grpcCerts === undefined
        ? ServerCredentials.createInsecure()
        : experimental.createCertificateProviderServerCredentials(grpcCerts, grpcCerts, false);
    grpc = new GrpcIngress(streaming, {
      host: cfg.host,
      port: cfg.grpcPort,
      credentials: creds,
      maxMessageBytes: cfg.maxBodyBytes,
    });
    grpcPort = await grpc.start();
    logger.info({ port: grpcPort }, 'serving gRPC');
  }

  // Delivered events leave the store in small steps, so no step holds the writer for long.
  let compacting = false;
  const compactor = setInterval(
    () => {
      if (compacting) return;
      compacting = true;
      void (async () => {
        try {
          for (let i = 0; i < 20 && (await store.compact(cfg.retentionMs)) >= 10_000; i++);
        } catch (err) {
          logger.warn({ err }, 'compaction failed');
        } finally {
          compacting = false;
        }
      })();
    },
    cfg.store === 'nats' ? 60_000 : 1000,
  );
  compactor.unref();
  // With a shared store, other processes deliver what this one stored: lag is read from the store.
  const lagSync =
    cfg.store === 'nats'
      ? setInterval(() => {
          // Deliveries other processes stored, and lag they took away, are seen here.
          if (!dispatcher.pushed) dispatcher.poll();
          void dispatcher.resyncLag().catch((err: unknown) => logger.warn({ err }, 'reading lag failed'));
        }, 1000)
      : undefined;
  lagSync?.unref();

  logger.info({ url, dataDir: cfg.dataDir }, 'trellis is serving');
  let closing: Promise<void> | undefined;
  return {
    url,
    app,
    store,
    registry,
    ingress,
    dispatcher,
    grpcPort,
    settled,
    flushEventTypes: async () => {
      await recorder?.flush();
      await settled();
    },
    close: () => {
      closing ??= (async () => {
        ingress.accepting = false;
        clearInterval(compactor);
        clearInterval(lagSync);
        clearInterval(eventTypeFlusher);
        reconciler?.stop();
        pings.stop();
        apiSources.stop();
        await supervisor.close();
        for (const c of connectors.values()) await c.close();
        await jobs.close();
        tails.closeAll();
        websockets?.close();
        await grpc?.close();
        groups.closeAll();
        replies.close();
        stopNotices?.();
        subscriptions?.close();
        tls?.close();
        // Requests already in progress get their answer; keep-alive connections are closed after it
        // (ingress answers with Connection: close now), and any still open after 2 s are cut.
        const force = setTimeout(() => app.server.closeAllConnections(), 2000);
        await app.close();
        clearTimeout(force);
        await dispatcher.stop(cfg.shutdownGraceMs);
        await tracing
          ?.shutdown()
          .catch((err: unknown) => logger.warn({ err }, 'exporting the last spans failed'));
        await recorder?.flush().catch(() => undefined);
        await sender.close().catch(() => undefined);
        await transformSender.close().catch(() => undefined);
        await store.close();
        logger.info({}, 'trellis stopped');
      })();
      return closing;
    },
  };
}

/** Streams whose retention changed since the last call (undefined: the stream is gone), noted as given. */
function retentionChanges(
  streams: ReadonlyMap<string, StreamRoute>,
  configured: Map<string, string>,
): Map<string, StreamRetention | undefined | 'gone'> {
  const out = new Map<string, StreamRetention | undefined | 'gone'>();
  for (const [key, st] of streams) {
    const r = JSON.stringify(st.retention ?? null);
    if (configured.get(key) === r) continue;
    configured.set(key, r);
    out.set(key, st.retention);
  }
  for (const key of [...configured.keys()]) {
    if (streams.has(key)) continue;
    configured.delete(key);
    out.set(key, 'gone');
  }
  return out;
}

/** Gives the store each changed stream's retention, and the streams that are gone. */
async function applyRetention(
  store: Store,
  changes: Map<string, StreamRetention | undefined | 'gone'>,
  logger: Logger,
): Promise<void> {
  for (const [stream, r] of changes) {
    if (r !== 'gone' && r !== undefined && store.configureStream === undefined) {
      logger.warn(
        { stream },
        'trellis.dev/retention annotations are applied in cluster mode (--store nats); this store keeps delivered events for --retention',
      );
      continue;
    }
    try {
      if (r === 'gone') {
        await store.dropStream?.(stream);
        // Its dead letters go with it: nothing could redrive them.
        const dl = DEAD_LETTER_PREFIX + stream;
        for (let page = await store.events.read(dl, 0, 1000); page.length > 0; ) {
          if (
            (await store.events.remove(
              dl,
              page.map((x) => x.seq),
            )) === 0
          )
            break;
          page = await store.events.read(dl, 0, 1000);
        }
      } else await store.configureStream?.(stream, r);
    } catch (err) {
      logger.error({ err, stream }, 'applying the retention of a stream failed');
    }
  }
}

/** The connector sinks' address prefixes and kinds. */
const CONNECTOR_SINKS: readonly [string, string][] = [
  ['natssinks', 'NatsSink'],
  ['redisstreamsinks', 'RedisStreamSink'],
  ['mqttsinks', 'MqttSink'],
  ['amqpsinks', 'AmqpSink'],
  ['kafkasinks', 'KafkaSink'],
];

/** Opens the configured store; the NATS client is loaded only when it is used. */
async function openStore(cfg: ServerConfig, logger: Logger): Promise<Store> {
  if (cfg.store === 'nats') {
    const { openNatsStore } = await import('../store/nats/nats-store.js');
    const where = cfg.natsUrl
      .split(',')
      .map((u) => u.replace(/\/\/[^@/]*@/, '//***@'))
      .join(',');
    return openNatsStore({
      servers: cfg.natsUrl.split(','),
      prefix: cfg.natsPrefix,
      ackWaitMs: cfg.natsAckWaitMs,
      replicas: cfg.natsReplicas,
      warn: (context, message) => logger.warn(context, message),
      ...cfg.nats,
    }).catch((err: unknown) => {
      throw new Error(`cannot use NATS at ${where}: ${(err as Error).message}`, { cause: err });
    });
  }
  return openSqliteStore({ dataDir: cfg.dataDir });
}

/**
 * Which URLs are this server's own: its address and public URL, and any loopback name or the bound address
 * with its port. Events delivered there keep counting their knativebrokerttl down.
 */
function selfUrls(url: string, publicUrl: string, host: string): (target: string) => boolean {
  const own = new Set([new URL(url).origin, new URL(publicUrl).origin]);
  const port = new URL(url).port;
  const cache = new Map<string, boolean>();
  return (target) => {
    let r = cache.get(target);
    if (r === undefined) {
      try {
        const u = new URL(target);
        const p = u.port || (u.protocol === 'https:' ? '443' : '80');
        r = own.has(u.origin) || (p === port && (isLoopback(u.hostname) || u.hostname === host));
      } catch {
        r = false;
      }
      if (cache.size > 10_000) cache.clear();
      cache.set(target, r);
    }
    return r;
  };
}

/**
 * Protected mode, as Redis has it: the admin API is not served on a non-loopback address without a token,
 * unless the operator says so explicitly (and is warned at every start).
 */
function checkProtectedMode(cfg: ServerConfig, logger: { warn(o: object, m: string): void }): void {
  if (isLoopback(cfg.host) || cfg.adminToken !== undefined) return;
  if (!cfg.insecureAdmin) {
    throw new Error(
      `refusing to serve on ${cfg.host} without an admin token: anyone who can reach the port could change ` +
        'resources. Set TRELLIS_ADMIN_TOKEN (or --admin-token-file FILE) and send it with the CLI, ' +
        'or listen on 127.0.0.1; --insecure-admin runs without a token',
    );
  }
  logger.warn(
    { host: cfg.host },
    'PROTECTED MODE IS OFF: the admin API is open to anyone who can reach this address (--insecure-admin)',
  );
}

/**
 * Requests Node's HTTP parser rejects (bad request line or headers, headers over 16 KiB, timeouts) get the
 * same JSON error body as everything else, then the connection is closed.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable || (socket as Duplex & { _httpMessage?: unknown })._httpMessage) {
    socket.destroy();
    return;
  }
  let status = 400;
  let code: ErrorCode = 'TRELLIS_ERR_BAD_REQUEST';
  let message = `the request is not valid HTTP/1.1 (${err.code ?? err.message})`;
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    code = 'TRELLIS_ERR_HEADERS_TOO_LARGE';
    message = 'the request headers are over 16 KiB; send large attributes as data instead';
  } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    code = 'TRELLIS_ERR_REQUEST_TIMEOUT';
    message = 'the request did not arrive whole in time';
  }
  const body = JSON.stringify({ code, message });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

async function applyQuickstart(registry: ResourceRegistry, publicUrl: string): Promise<void> {
  await registry.apply({
    apiVersion: 'eventing.knative.dev/v1',
    kind: 'Broker',
    metadata: { name: 'default', namespace: 'default' },
  });
  await registry.apply({
    apiVersion: 'eventing.knative.dev/v1',
    kind: 'Trigger',
    metadata: { name: 'quickstart-display', namespace: 'default' },
    spec: { broker: 'default', subscriber: { uri: `${publicUrl}${DISPLAY_PATH}` } },
  });
}
