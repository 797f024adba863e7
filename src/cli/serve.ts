/**
 * `trellis serve`: runs a server until SIGTERM or SIGINT, then shuts down gracefully and exits 0.
 * @module
 */
import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { parseNetworks } from '../dataplane/destinations.js';
import { parseDuration } from '../resources/duration.js';
import { parseRate } from '../resources/rate.js';
import { DEFAULT_CONFIG, type NatsAuth } from '../server/config.js';

function int(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a whole number >= 0`);
    return n;
  };
}
function duration(name: string) {
  return (v: string) => {
    const ms = parseDuration(v);
    if (ms === undefined)
      throw new InvalidArgumentError(`${name} must be an ISO-8601 duration such as PT30S`);
    return ms;
  };
}

/** A rate as `100/s`, `6000/m` or `100/s,500`. */
function rate(flag: string) {
  return (v: string) => {
    if (parseRate(v) === undefined)
      throw new InvalidArgumentError(
        `${flag}: events per second, minute or hour, optionally with a burst, such as 100/s, 6000/m or 100/s,500`,
      );
    return v;
  };
}

/** A comma-separated list of CIDR networks (`none`: the empty list), checked as the server will read it. */
function networks(flag: string) {
  return (v: string) => {
    const list =
      v.trim() === 'none'
        ? []
        : v
            .split(',')
            .map((x) => x.trim())
            .filter((x) => x !== '');
    try {
      parseNetworks(list, flag);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
    return list;
  };
}

/** The admin token: from the file when one is named, else TRELLIS_ADMIN_TOKEN; never logged. */
function adminToken(file: string | undefined): string | undefined {
  let token: string | undefined;
  if (file !== undefined) {
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new InvalidArgumentError(`--admin-token-file: cannot read ${file}: ${(err as Error).message}`);
    }
    if (token === '') throw new InvalidArgumentError(`--admin-token-file: ${file} is empty`);
  } else {
    token = process.env['TRELLIS_ADMIN_TOKEN']?.trim() || undefined;
  }
  if (token !== undefined && token.length < 16)
    throw new InvalidArgumentError(
      'the admin token must be at least 16 characters (try: openssl rand -hex 32)',
    );
  return token;
}

export function runServe(program: Command): void {
  program
    .command('serve')
    .description('Run a Trellis server: the embedded SQLite store, or NATS JetStream shared by many servers.')
    .addOption(
      new Option('--port <port>', 'port (0 picks a free one)')
        .env('TRELLIS_PORT')
        .default(DEFAULT_CONFIG.port)
        .argParser(int('--port')),
    )
    .addOption(
      new Option('--host <host>', 'address to listen on').env('TRELLIS_HOST').default(DEFAULT_CONFIG.host),
    )
    .addOption(
      new Option(
        '--max-members <n>',
        'subscribers (WebSocket, SSE, gRPC) this process holds at most (default 4096)',
      )
        .env('TRELLIS_MAX_MEMBERS')
        .argParser(int('--max-members')),
    )
    .addOption(
      new Option(
        '--grpc-port <port>',
        'serve the gRPC API (trellis.v1.EventMesh) on this port too (0 picks a free one)',
      )
        .env('TRELLIS_GRPC_PORT')
        .argParser(int('--grpc-port')),
    )
    .addOption(
      new Option('--store <store>', 'sqlite (embedded, one process) or nats (JetStream, many processes)')
        .choices(['sqlite', 'nats'])
        .env('TRELLIS_STORE')
        .default(DEFAULT_CONFIG.store),
    )
    .addOption(
      new Option('--nats-url <urls>', 'NATS servers for --store nats, comma-separated')
        .env('NATS_URL')
        .default(DEFAULT_CONFIG.natsUrl),
    )
    .addOption(
      new Option('--nats-prefix <prefix>', 'NATS stream and bucket names start with it; one mesh per prefix')
        .env('TRELLIS_NATS_PREFIX')
        .default(DEFAULT_CONFIG.natsPrefix),
    )
    .addOption(
      new Option(
        '--allow-commands',
        "run the programs ContainerSources name, as this server's user (off: they are not Ready)",
      ).env('TRELLIS_ALLOW_COMMANDS'),
    )
    .addOption(
      new Option('--no-metrics', 'keep no Prometheus metrics and serve no /metrics (TRELLIS_METRICS=false)'),
    )
    .addOption(
      new Option('--tls-cert <file>', 'PEM certificate (chain): serve https; read again when it changes').env(
        'TRELLIS_TLS_CERT',
      ),
    )
    .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert').env('TRELLIS_TLS_KEY'))
    .addOption(
      new Option(
        '--tls-client-ca <file>',
        "PEM CA: senders may identify with a client certificate it signed (its CN is the sender's subject)",
      ).env('TRELLIS_TLS_CLIENT_CA'),
    )
    .addOption(
      new Option(
        '--authentication <mode>',
        'oidc: senders need a bearer token for the addressable (none: open)',
      )
        .choices(['oidc', 'none'])
        .env('TRELLIS_AUTHENTICATION')
        .default('none'),
    )
    .addOption(
      new Option(
        '--default-authorization-mode <mode>',
        'with --authentication oidc, what an addressable without EventPolicies takes',
      )
        .choices(['allow-all', 'allow-same-namespace', 'deny-all'])
        .env('TRELLIS_DEFAULT_AUTHORIZATION_MODE')
        .default('allow-all'),
    )
    .addOption(
      new Option(
        '--oidc-issuer <url>',
        'an issuer whose tokens are trusted (repeatable; with --oidc-jwks)',
      ).argParser((v: string, prev: string[] = []) => [...prev, v]),
    )
    .addOption(
      new Option(
        '--oidc-jwks <url|file>',
        "that issuer's keys: a JWKS URL or file (one per --oidc-issuer, in order)",
      ).argParser((v: string, prev: string[] = []) => [...prev, v]),
    )
    .addOption(
      new Option('--oidc-signing-key <file>', "Trellis's own signing key (JWK; made when missing)").env(
        'TRELLIS_OIDC_SIGNING_KEY',
      ),
    )
    .addOption(
      new Option(
        '--rate-limit <rate>',
        'events per second HTTP ingress takes per Broker, Channel or flow without its own (100/s, 6000/m, 100/s,500)',
      )
        .env('TRELLIS_RATE_LIMIT')
        .argParser(rate('--rate-limit')),
    )
    .addOption(
      new Option('--rate-limit-per-sender <rate>', 'the same, per sender address')
        .env('TRELLIS_RATE_LIMIT_PER_SENDER')
        .argParser(rate('--rate-limit-per-sender')),
    )
    .addOption(
      new Option(
        '--deny-networks <cidrs>',
        "networks deliveries never connect to, comma-separated ('none': no network); default link-local and cloud metadata",
      )
        .env('TRELLIS_DENY_NETWORKS')
        .argParser(networks('--deny-networks')),
    )
    .addOption(
      new Option(
        '--allow-networks <cidrs>',
        'the only networks deliveries connect to (loopback aside), comma-separated',
      )
        .env('TRELLIS_ALLOW_NETWORKS')
        .argParser(networks('--allow-networks')),
    )
    .addOption(
      new Option(
        '--deny-loopback',
        'deliveries never connect to loopback addresses (the server itself aside)',
      ).env('TRELLIS_DENY_LOOPBACK'),
    )
    .addOption(
      new Option(
        '--nats-ack-wait <duration>',
        'how long a delivery held by a process that stopped answering waits before another process takes it',
      )
        .env('TRELLIS_NATS_ACK_WAIT')
        .default(DEFAULT_CONFIG.natsAckWaitMs, 'PT30S')
        .argParser(duration('--nats-ack-wait')),
    )
    .addOption(
      new Option(
        '--nats-replicas <n>',
        'copies NATS keeps of every stream and bucket: 1, or 3 or 5 on a NATS cluster',
      )
        .env('TRELLIS_NATS_REPLICAS')
        .default(DEFAULT_CONFIG.natsReplicas)
        .argParser((v: string) => {
          const n = Number(v);
          if (!Number.isInteger(n) || n < 1 || n > 5)
            throw new InvalidArgumentError('--nats-replicas must be a whole number from 1 to 5');
          return n;
        }),
    )
    .addOption(
      new Option('--nats-creds <file>', 'NATS credentials file (JWT and NKey seed)').env('NATS_CREDS'),
    )
    .addOption(
      new Option('--nats-user <user>', 'NATS user; the password is read from NATS_PASSWORD').env('NATS_USER'),
    )
    .addOption(new Option('--nats-token-file <file>', 'a file holding the NATS token (or set NATS_TOKEN)'))
    .addOption(
      new Option('--nats-tls-ca <file>', 'CA certificate that signs the NATS servers (use tls:// URLs)').env(
        'NATS_CA',
      ),
    )
    .addOption(new Option('--nats-tls-cert <file>', 'client certificate for NATS (mTLS)').env('NATS_CERT'))
    .addOption(new Option('--nats-tls-key <file>', 'client key for NATS (mTLS)').env('NATS_KEY'))
    .addOption(
      new Option('--data-dir <dir>', 'where the store lives')
        .env('TRELLIS_DATA_DIR')
        .default(DEFAULT_CONFIG.dataDir),
    )
    .addOption(
      new Option('-f, --filename <file...>', 'resource files to apply at start').env('TRELLIS_FILES'),
    )
    .addOption(
      new Option('--public-url <url>', 'base URL written into Broker addresses').env('TRELLIS_PUBLIC_URL'),
    )
    .addOption(
      new Option('--max-body-bytes <n>', 'largest request body ingress accepts')
        .env('TRELLIS_MAX_BODY_BYTES')
        .default(DEFAULT_CONFIG.maxBodyBytes)
        .argParser(int('--max-body-bytes')),
    )
    .addOption(
      new Option(
        '--request-timeout <duration>',
        'a request must arrive whole within this time (408 after it)',
      )
        .env('TRELLIS_REQUEST_TIMEOUT')
        .default(DEFAULT_CONFIG.requestTimeoutMs, 'PT30S')
        .argParser(duration('--request-timeout')),
    )
    .addOption(
      new Option('--delivery-timeout <duration>', 'delivery timeout when a DeliverySpec sets none')
        .env('TRELLIS_DELIVERY_TIMEOUT')
        .default(DEFAULT_CONFIG.deliveryTimeoutMs, 'PT30S')
        .argParser(duration('--delivery-timeout')),
    )
    .addOption(
      new Option('--concurrency <n>', 'deliveries in flight per Trigger')
        .env('TRELLIS_CONCURRENCY')
        .default(DEFAULT_CONFIG.concurrency)
        .argParser(int('--concurrency')),
    )
    .addOption(
      new Option('--retention <duration>', 'how long delivered events are kept')
        .env('TRELLIS_RETENTION')
        .default(DEFAULT_CONFIG.retentionMs, 'PT0S')
        .argParser(duration('--retention')),
    )
    .addOption(
      new Option(
        '--max-lag <n>',
        "a Broker's default lag ceiling: pending deliveries before ingress answers 429",
      )
        .env('TRELLIS_MAX_LAG')
        .default(DEFAULT_CONFIG.maxLag)
        .argParser(int('--max-lag')),
    )
    .addOption(
      new Option('--max-pending-writes <n>', 'events waiting for the disk before ingress answers 503')
        .env('TRELLIS_MAX_PENDING_WRITES')
        .default(DEFAULT_CONFIG.maxPendingWrites)
        .argParser(int('--max-pending-writes')),
    )
    .addOption(
      new Option('--quickstart', "create Broker 'default' and a Trigger that prints every event").env(
        'TRELLIS_QUICKSTART',
      ),
    )
    .addOption(
      new Option(
        '--admin-token-file <file>',
        'a file holding the admin token (else TRELLIS_ADMIN_TOKEN); admin requests then need it',
      ).env('TRELLIS_ADMIN_TOKEN_FILE'),
    )
    .addOption(
      new Option(
        '--allowed-hosts <names>',
        "more Host names the admin API answers to, comma-separated ('*': any)",
      ).env('TRELLIS_ALLOWED_HOSTS'),
    )
    .addOption(
      new Option(
        '--insecure-admin',
        'serve the admin API on a non-loopback address without a token (protected mode off)',
      ).env('TRELLIS_INSECURE_ADMIN'),
    )
    .addOption(
      new Option(
        '--no-eventtype-auto-create',
        'do not register the event types seen at Broker and Channel ingress as EventTypes (env TRELLIS_EVENTTYPE_AUTO_CREATE=false)',
      ),
    )
    .addOption(
      new Option('--log-level <level>', 'trace, debug, info, warn, error or silent')
        .env('TRELLIS_LOG_LEVEL')
        .default('info'),
    )
    .addOption(
      new Option(
        '--log-format <format>',
        'json (one object per line) or pretty; default: pretty on a terminal',
      )
        .choices(['json', 'pretty'])
        .env('TRELLIS_LOG_FORMAT'),
    )
    .addHelpText(
      'after',
      `
Examples:
  trellis serve --quickstart
  trellis serve --port 8080 --data-dir /var/lib/trellis -f brokers.yaml -f triggers.yaml
  TRELLIS_PORT=9000 trellis serve
  TRELLIS_ADMIN_TOKEN=$(cat /etc/trellis/token) trellis serve --host 0.0.0.0 --allowed-hosts trellis.internal`,
    )
    .action(async (opts: Record<string, unknown>) => {
      const files = opts['filename'];
      if ((opts['tlsCert'] === undefined) !== (opts['tlsKey'] === undefined))
        throw new InvalidArgumentError('--tls-cert and --tls-key go together: give both, or neither');
      const issuers = (opts['oidcIssuer'] as string[] | undefined) ?? [];
      const jwks = (opts['oidcJwks'] as string[] | undefined) ?? [];
      if (issuers.length !== jwks.length)
        throw new InvalidArgumentError(
          '--oidc-issuer and --oidc-jwks go in pairs: one --oidc-jwks for each issuer',
        );
      // Loaded here so that the other commands start without the server's dependencies.
      const { startServer } = await import('../server/server.js');
      const server = await startServer({
        port: opts['port'] as number,
        host: opts['host'] as string,
        dataDir: opts['dataDir'] as string,
        store: opts['store'] as 'sqlite' | 'nats',
        natsUrl: opts['natsUrl'] as string,
        natsPrefix: opts['natsPrefix'] as string,
        natsAckWaitMs: Math.max(1000, opts['natsAckWait'] as number),
        allowCommands: opts['allowCommands'] === true || opts['allowCommands'] === 'true',
        metrics: opts['metrics'] !== false && process.env['TRELLIS_METRICS'] !== 'false',
        grpcPort: opts['grpcPort'] as number | undefined,
        maxMembers: opts['maxMembers'] as number | undefined,
        denyNetworks: opts['denyNetworks'] as string[] | undefined,
        allowNetworks: opts['allowNetworks'] as string[] | undefined,
        denyLoopback: opts['denyLoopback'] === true || opts['denyLoopback'] === 'true',
        rateLimit: opts['rateLimit'] as string | undefined,
        tlsCert: opts['tlsCert'] as string | undefined,
        tlsClientCa: opts['tlsClientCa'] as string | undefined,
        authentication: opts['authentication'] as 'oidc' | 'none',
        oidcIssuers: issuers.map((issuer, i) => ({ issuer, jwks: jwks[i]! })),
        oidcSigningKey: opts['oidcSigningKey'] as string | undefined,
        defaultAuthorizationMode: opts['defaultAuthorizationMode'] as
          | 'allow-all'
          | 'allow-same-namespace'
          | 'deny-all',
        tlsKey: opts['tlsKey'] as string | undefined,
        rateLimitPerSender: opts['rateLimitPerSender'] as string | undefined,
        natsReplicas: opts['natsReplicas'] as number,
        nats: natsAuth(opts),
        publicUrl: opts['publicUrl'] as string | undefined,
        maxBodyBytes: opts['maxBodyBytes'] as number,
        deliveryTimeoutMs: opts['deliveryTimeout'] as number,
        requestTimeoutMs: Math.max(1000, opts['requestTimeout'] as number),
        concurrency: Math.max(1, opts['concurrency'] as number),
        retentionMs: opts['retention'] as number,
        maxLag: Math.max(1, opts['maxLag'] as number),
        maxPendingWrites: Math.max(1, opts['maxPendingWrites'] as number),
        files: Array.isArray(files) ? (files as string[]) : typeof files === 'string' ? files.split(',') : [],
        quickstart: opts['quickstart'] === true || opts['quickstart'] === 'true',
        logLevel: opts['logLevel'] as string,
        logFormat: opts['logFormat'] as 'json' | 'pretty' | undefined,
        adminToken: adminToken(opts['adminTokenFile'] as string | undefined),
        allowedHosts: String(opts['allowedHosts'] ?? '')
          .split(',')
          .map((h) => h.trim())
          .filter((h) => h !== ''),
        insecureAdmin: opts['insecureAdmin'] === true || opts['insecureAdmin'] === 'true',
        eventTypeAutoCreate:
          opts['eventtypeAutoCreate'] !== false && process.env['TRELLIS_EVENTTYPE_AUTO_CREATE'] !== 'false',
      });
      // Handlers first: a signal sent as soon as the line below is read must find them in place.
      const shutdown = (sig: string) => {
        process.stderr.write(`${sig}: shutting down\n`);
        server.close().then(
          () => process.exit(0),
          (err: unknown) => {
            process.stderr.write(`shutdown failed: ${(err as Error).message}\n`);
            process.exit(1);
          },
        );
      };
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      process.once('SIGINT', () => shutdown('SIGINT'));
      process.stderr.write(`trellis serving on ${server.url}\n`);
      if (server.grpcPort !== undefined)
        process.stderr.write(`trellis serving gRPC on port ${server.grpcPort}\n`);
      if (opts['quickstart']) {
        process.stderr.write(
          `quickstart: Broker default/default at ${server.url}/default/default prints every event it gets here. Try:\n` +
            `  curl -i ${server.url}/default/default -H 'ce-specversion: 1.0' -H 'ce-id: 1' -H 'ce-source: curl' ` +
            `-H 'ce-type: demo.hello' -H 'content-type: application/json' -d '{"hello":"world"}'\n`,
        );
      }
    });
}

/** NATS credentials from flags, files and the environment (the names the `nats` CLI reads); secrets never on the command line. */
function natsAuth(opts: Record<string, unknown>): NatsAuth {
  const str = (k: string) =>
    typeof opts[k] === 'string' && opts[k] !== '' ? (opts[k] as string) : undefined;
  const tokenFile = str('natsTokenFile');
  let token = process.env['NATS_TOKEN'] || undefined;
  if (tokenFile !== undefined) {
    try {
      token = readFileSync(tokenFile, 'utf8').trim();
    } catch (err) {
      throw new InvalidArgumentError(
        `--nats-token-file: cannot read ${tokenFile}: ${(err as Error).message}`,
      );
    }
  }
  const password = process.env['NATS_PASSWORD'] || undefined;
  return {
    credsFile: str('natsCreds'),
    user: str('natsUser'),
    password,
    token,
    tlsCaFile: str('natsTlsCa'),
    tlsCertFile: str('natsTlsCert'),
    tlsKeyFile: str('natsTlsKey'),
  };
}
