/**
 * Server configuration: every option, its default, and the `TRELLIS_*` environment variable it reads.
 * @module
 */

export interface ServerConfig {
  /** Where events, deliveries and resources live: `sqlite` (embedded) or `nats` (JetStream, shared by many processes). Env TRELLIS_STORE. */
  store: 'sqlite' | 'nats';
  /** NATS servers for `store: nats`. Env NATS_URL. */
  natsUrl: string;
  /** The first part of the NATS stream and bucket names: processes with the same one form one mesh. */
  natsPrefix: string;
  /** How long a process may hold a delivery without a sign of life before another process takes it (a process that died), ms. */
  natsAckWaitMs: number;
  /** Copies JetStream keeps of every Trellis stream and bucket (1; 3 or 5 on a NATS cluster). Env TRELLIS_NATS_REPLICAS. */
  natsReplicas: number;
  /** NATS credentials and TLS: a creds file, user and password, a token, CA, client certificate and key. */
  nats?: NatsAuth | undefined;
  /** Address to listen on. Env TRELLIS_HOST. */
  host: string;
  /** Port; 0 picks a free one. Env TRELLIS_PORT. */
  port: number;
  /** Where the SQLite file lives; `:memory:` for a throw-away store. Env TRELLIS_DATA_DIR. */
  dataDir: string;
  /** Base URL written into Broker addresses; defaults to http://{host}:{port}. Env TRELLIS_PUBLIC_URL. */
  publicUrl?: string | undefined;
  /** Largest request body accepted by ingress, bytes (at least 64 KiB). Env TRELLIS_MAX_BODY_BYTES. */
  maxBodyBytes: number;
  /** A request must arrive whole (headers and body) within this time, ms. */
  requestTimeoutMs: number;
  /** Delivery timeout when a DeliverySpec sets none, ms. */
  deliveryTimeoutMs: number;
  /** Deliveries in flight per Trigger. */
  concurrency: number;
  /** Default ceiling of a Broker's lag (deliveries pending); ingress answers 429 above it. */
  maxLag: number;
  /** Ingress answers 503 while this many events wait to be made durable. */
  maxPendingWrites: number;
  /** Deliveries kept in memory per Trigger beyond those in flight; the rest wait in the store. */
  deliveryBufferSize: number;
  /** How long delivered events are kept, ms (0: removed once every delivery is done). */
  retentionMs: number;
  /** Grace period on shutdown for deliveries in flight, ms. */
  shutdownGraceMs: number;
  /** Resource files applied at start. */
  files: string[];
  /** Create a Broker `default` and a Trigger that prints every event (see README). */
  quickstart: boolean;
  /** pino log level: trace, debug, info, warn, error, silent. */
  logLevel: string;
  /** `json` (one object per line) or `pretty` (for people); default: pretty on a terminal. Env TRELLIS_LOG_FORMAT. */
  logFormat?: 'json' | 'pretty' | undefined;
  /** When set, every admin API request needs `Authorization: Bearer <token>`. Env TRELLIS_ADMIN_TOKEN. */
  adminToken?: string | undefined;
  /** Host names the admin API answers to besides loopback, the bound address and the public URL's. */
  allowedHosts: string[];
  /** Serve the admin API on a non-loopback address without a token (protected mode off). */
  insecureAdmin: boolean;
  /** Run the local processes ContainerSources name (off: they are not Ready). Env TRELLIS_ALLOW_COMMANDS. */
  allowCommands?: boolean;
  /** Networks deliveries never connect to (CIDR); default link-local and cloud metadata. Env TRELLIS_DENY_NETWORKS. */
  denyNetworks?: readonly string[] | undefined;
  /** When set, the only networks deliveries connect to (loopback aside). Env TRELLIS_ALLOW_NETWORKS. */
  allowNetworks?: readonly string[] | undefined;
  /** Deliveries never connect to loopback (other than the server itself). Env TRELLIS_DENY_LOOPBACK. */
  denyLoopback?: boolean;
  /** Events per second HTTP ingress takes per Broker/Channel/flow without its own limit (`100/s`). Env TRELLIS_RATE_LIMIT. */
  rateLimit?: string | undefined;
  /** The same per sender address. Env TRELLIS_RATE_LIMIT_PER_SENDER. */
  rateLimitPerSender?: string | undefined;
  /** PEM certificate (chain) and key files: https for ingress and the admin API. Env TRELLIS_TLS_CERT, TRELLIS_TLS_KEY. */
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  /** PEM CA whose client certificates identify senders (mTLS; the certificate's CN is the subject). Env TRELLIS_TLS_CLIENT_CA. */
  tlsClientCa?: string | undefined;
  /** `oidc`: senders need a bearer token for the addressable's audience (Knative's authentication-oidc). Env TRELLIS_AUTHENTICATION. */
  authentication?: 'oidc' | 'none' | undefined;
  /** Issuers whose tokens are trusted besides Trellis's own, with where their keys are (JWKS URL or file). */
  oidcIssuers?: readonly { issuer: string; jwks: string }[] | undefined;
  /** What an addressable without EventPolicies takes when senders authenticate (Knative's default-authorization-mode). */
  defaultAuthorizationMode?: 'allow-all' | 'allow-same-namespace' | 'deny-all' | undefined;
  /** Trellis's signing key (JWK file); default oidc-signing-key.json in the data directory. */
  oidcSigningKey?: string | undefined;
  /** Subscribers (consumer group members) this process holds at most; default 4096. Env TRELLIS_MAX_MEMBERS. */
  maxMembers?: number | undefined;
  /** Serve the gRPC API on this port (0: a free one); unset: no gRPC. Env TRELLIS_GRPC_PORT. */
  grpcPort?: number | undefined;
  /** Keep Prometheus metrics and serve them at `/metrics` (default on). Env TRELLIS_METRICS. */
  metrics?: boolean;
  /** Register the types seen at Broker and Channel ingress as EventTypes. Env TRELLIS_EVENTTYPE_AUTO_CREATE. */
  eventTypeAutoCreate: boolean;
  /** How often what ingress saw is written to EventTypes, ms. */
  eventTypeFlushMs: number;
  /** Most EventTypes registered automatically per Broker or Channel (10 times as many in all). */
  eventTypeLimit: number;
}

/** How to authenticate to NATS and check its certificate. Env NATS_CREDS, NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CA, NATS_CERT, NATS_KEY. */
export interface NatsAuth {
  credsFile?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  token?: string | undefined;
  tlsCaFile?: string | undefined;
  tlsCertFile?: string | undefined;
  tlsKeyFile?: string | undefined;
}

export const DEFAULT_CONFIG: ServerConfig = {
  store: 'sqlite',
  natsUrl: 'nats://127.0.0.1:4222',
  natsPrefix: 'trellis',
  natsAckWaitMs: 30_000,
  natsReplicas: 1,
  host: '127.0.0.1',
  port: 8080,
  dataDir: './.trellis',
  maxBodyBytes: 1024 * 1024,
  requestTimeoutMs: 30_000,
  deliveryTimeoutMs: 30_000,
  concurrency: 100,
  deliveryBufferSize: 1000,
  maxLag: 1_000_000,
  maxPendingWrites: 20_000,
  retentionMs: 0,
  shutdownGraceMs: 10_000,
  files: [],
  quickstart: false,
  logLevel: 'info',
  allowedHosts: [],
  insecureAdmin: false,
  eventTypeAutoCreate: true,
  eventTypeFlushMs: 5000,
  eventTypeLimit: 1000,
};

/** The DeliverySpec used when neither the Trigger nor its Broker sets one (Knative's config-br-defaults). */
export const DEFAULT_DELIVERY = { retry: 10, backoffPolicy: 'exponential', backoffDelay: 'PT0.2S' } as const;
