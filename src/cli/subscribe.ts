/**
 * The CLI on top of the SDK: `trellis subscribe` (a member of a consumer group: prints each event and
 * acknowledges it), `trellis request` (sends one event and prints the reply), and `trellis replay`
 * (re-delivers a Broker's retained events to a Trigger or consumer group).
 * @module
 */
import { randomUUID } from 'node:crypto';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { AdminClient } from '../client/admin-client.js';
import { TrellisClient } from '../client/trellis.js';
import { escapeControl, formatEvent } from '../cloudevents/display.js';
import { eventFromJson } from '../cloudevents/json-format.js';
import { attributesFromFlags } from './event-flags.js';
import { tailTarget } from './tail.js';

/** `ns/broker`, `broker` (with -n), `channel/ns/name`: the address path of a Broker or Channel. */
function addressOf(arg: string, namespace: string): string {
  const { kind, ns, name } = tailTarget(arg, namespace);
  return kind.kind === 'Broker' ? `${ns}/${name}` : `${kind.plural}/${ns}/${name}`;
}

/** The token events and subscriptions carry: TRELLIS_TOKEN (OIDC), else the admin token. */
function tokenFromEnv(): string | undefined {
  return process.env['TRELLIS_TOKEN']?.trim() || process.env['TRELLIS_ADMIN_TOKEN']?.trim() || undefined;
}

export function registerSubscribe(
  program: Command,
  serverOption: () => Option,
  nsOption: () => Option,
  fail: (err: unknown) => never,
): void {
  program
    .command('subscribe')
    .description(
      'Join a consumer group of a Broker or Channel over WebSocket: print each event as it comes, and acknowledge it.',
    )
    .argument('<target>', 'NAMESPACE/BROKER, BROKER (with -n), or KIND/NAMESPACE/NAME for a channel')
    .option(
      '--group <name>',
      'a durable group: its members share its events, and it resumes where it acknowledged',
    )
    .option(
      '--filter <cesql>',
      'a CESQL expression the events must match (the filter of a group this creates)',
    )
    .option(
      '--from <position>',
      'where a new group starts: latest (default), earliest, an RFC 3339 time, a sequence number',
    )
    .option('--window <n>', 'unacknowledged events at most', '100')
    .option('--count <n>', 'stop after this many events')
    .addOption(
      new Option('-o, --output <format>', 'pretty (event-display style) or json (one line each)')
        .choices(['pretty', 'json'])
        .default('pretty'),
    )
    .addOption(nsOption())
    .addOption(serverOption())
    .addHelpText(
      'after',
      `\nThe token for the connection is TRELLIS_TOKEN (an OIDC token, when senders authenticate), else TRELLIS_ADMIN_TOKEN.\n\nExamples:\n  trellis subscribe default/default\n  trellis subscribe default/orders --group billing --filter "type = 'order.created'"\n  trellis subscribe default/orders --group audit --from earliest -o json | jq .id`,
    )
    .action(
      async (
        target: string,
        opts: {
          group?: string;
          filter?: string;
          from?: string;
          window: string;
          count?: string;
          output: string;
          namespace: string;
          server: string;
        },
      ) => {
        try {
          const window = Number(opts.window);
          if (!Number.isInteger(window) || window < 1)
            throw new InvalidArgumentError('--window: a positive integer');
          const count = opts.count === undefined ? Number.POSITIVE_INFINITY : Number(opts.count);
          if (!(count > 0)) throw new InvalidArgumentError('--count: a positive integer');
          const path = addressOf(target, opts.namespace);
          const client = new TrellisClient({ url: opts.server, token: tokenFromEnv() });
          const abort = new AbortController();
          process.once('SIGINT', () => abort.abort());
          process.once('SIGTERM', () => abort.abort());
          const sub = client.subscribe(path, {
            group: opts.group,
            filter: opts.filter,
            from: opts.from,
            window,
            signal: abort.signal,
          });
          void sub.ready.then(
            () =>
              process.stderr.write(
                `subscribed to /${path} as ${opts.group ? `group ${opts.group}` : `group ${sub.group} (of its own)`} (Ctrl-C stops)\n`,
              ),
            () => undefined,
          );
          let n = 0;
          for await (const d of sub) {
            if (opts.output === 'json') process.stdout.write(`${JSON.stringify(d.event)}\n`);
            else process.stdout.write(`${escapeControl(formatEvent(eventFromJson(d.event)), true)}\n`);
            d.ack();
            if (++n >= count) sub.close();
          }
        } catch (err) {
          fail(err);
        }
      },
    );

  program
    .command('request')
    .description('Send one event and wait for its reply (request-reply over the mesh); print the reply.')
    .argument('<target>', 'NAMESPACE/BROKER, BROKER (with -n), or KIND/NAMESPACE/NAME for a channel')
    .requiredOption('--type <type>', 'the event type')
    .requiredOption('--source <source>', 'the event source (a URI-reference)')
    .option('--id <id>', 'the event id (default: a random UUID)')
    .option('--subject <subject>', 'the event subject')
    .option('--data <json>', 'JSON data')
    .option('-e, --extension <name=value...>', 'extension attributes')
    .option('--timeout <ms>', 'how long to wait for the reply', '30000')
    .addOption(
      new Option('-o, --output <format>', 'pretty or json').choices(['pretty', 'json']).default('pretty'),
    )
    .addOption(nsOption())
    .addOption(serverOption())
    .addHelpText(
      'after',
      `\nExample:\n  trellis request default/default --type quote.requested --source /cli --data '{"sku":"A1"}' --timeout 5000`,
    )
    .action(async (target: string, opts: Record<string, string | string[] | undefined>) => {
      try {
        const attrs = attributesFromFlags(opts, (opts['id'] as string | undefined) ?? randomUUID());
        const event: Record<string, unknown> = { ...attrs };
        if (opts['data'] !== undefined) {
          try {
            event['data'] = JSON.parse(String(opts['data']));
          } catch {
            throw new InvalidArgumentError(`--data must be JSON (quote strings: '"text"')`);
          }
          event['datacontenttype'] = 'application/json';
        }
        const timeout = Number(opts['timeout']);
        if (!(timeout > 0)) throw new InvalidArgumentError('--timeout: milliseconds, more than 0');
        const client = new TrellisClient({ url: String(opts['server']), token: tokenFromEnv() });
        try {
          const reply = await client.request(
            addressOf(String(target), String(opts['namespace'])),
            event as never,
            {
              timeout,
            },
          );
          if (opts['output'] === 'json') process.stdout.write(`${JSON.stringify(reply)}\n`);
          else process.stdout.write(`${escapeControl(formatEvent(eventFromJson(reply)), true)}\n`);
        } finally {
          client.close();
        }
      } catch (err) {
        fail(err);
      }
    });

  program
    .command('replay')
    .description(
      "Deliver a Broker's retained events again to one Trigger (or consumer group), from a time or a sequence.",
    )
    .requiredOption('--broker <ns/name>', 'the Broker, as NAMESPACE/NAME or NAME (with -n)')
    .requiredOption(
      '--from <position>',
      'earliest, an RFC 3339 time (2026-12-01T09:00:00Z), or a sequence number',
    )
    .requiredOption(
      '--to <trigger>',
      "the Trigger (NAME, or consumergroup/NAME) that gets them, in the Broker's namespace",
    )
    .option('--until <time>', 'only events that arrived before this RFC 3339 time (default: now)')
    .addOption(nsOption())
    .addOption(serverOption())
    .addHelpText(
      'after',
      "\nOnly what the Broker still retains can be replayed (annotation trellis.dev/retention, or --retention).\nThe Trigger's filter applies; its subscriber gets the events again, with its delivery settings.\n\nExample:\n  trellis replay --broker default/orders --from 2026-12-01T09:00:00Z --to billing",
    )
    .action(
      async (opts: {
        broker: string;
        from: string;
        to: string;
        until?: string;
        namespace: string;
        server: string;
      }) => {
        try {
          const [ns, broker] = opts.broker.includes('/')
            ? (opts.broker.split('/', 2) as [string, string])
            : [opts.namespace, opts.broker];
          const [kind, name] = opts.to.includes('/')
            ? (opts.to.split('/', 2) as [string, string])
            : ['trigger', opts.to];
          const r = await new AdminClient(opts.server).replay(ns, broker, {
            from: opts.from,
            to: { kind, name },
            ...(opts.until !== undefined ? { until: opts.until } : {}),
          });
          process.stdout.write(`${r.events} events of broker ${ns}/${broker} replayed to ${kind} ${name}\n`);
        } catch (err) {
          fail(err);
        }
      },
    );
}
