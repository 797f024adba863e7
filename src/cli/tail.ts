/**
 * `trellis tail [KIND/]NAMESPACE/NAME [--filter CESQL]`: prints the events a Broker or Channel stores
 * from now on, as they arrive (Server-Sent Events from the server, filtered there), until interrupted.
 * @module
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { AdminClient } from '../client/admin-client.js';
import { escapeControl, formatEvent } from '../cloudevents/display.js';
import { eventFromJson } from '../cloudevents/json-format.js';
import { findKind } from '../resources/kinds.js';

const TAILED = new Set(['Broker', 'Channel', 'InMemoryChannel']);

/**
 * `default/orders` (a Broker), `orders` (a Broker in `namespace`), `imc/default/orders`: the resource a
 * command acts on, of one of the `kinds` (tail follows Brokers and Channels; dead letters are kept by flows too).
 */
export function tailTarget(arg: string, namespace: string, kinds: ReadonlySet<string> = TAILED) {
  const parts = arg.split('/');
  if (parts.length > 3 || parts.some((p) => p === ''))
    throw new InvalidArgumentError(`'${arg}': give NAME, NAMESPACE/NAME or KIND/NAMESPACE/NAME`);
  const kind = findKind(parts.length === 3 ? parts[0]! : 'broker');
  if (kind === undefined || !kinds.has(kind.kind))
    throw new InvalidArgumentError(
      `'${parts[0]}': give one of ${[...kinds].map((k) => k.toLowerCase()).join(', ')}`,
    );
  const [ns, name] = parts.length === 1 ? [namespace, parts[0]!] : parts.slice(-2);
  return { kind, ns: ns!, name: name! };
}

export function registerTail(
  program: Command,
  serverOption: () => Option,
  fail: (err: unknown) => never,
): void {
  program
    .command('tail')
    .description('Print the events a Broker or Channel stores from now on, as they arrive.')
    .argument('<target>', 'NAMESPACE/BROKER, BROKER (with -n), or KIND/NAMESPACE/NAME for a channel')
    .option('--filter <cesql>', 'a CESQL expression the events must match (evaluated by the server)')
    .addOption(
      new Option('-o, --output <format>', 'pretty (event-display style) or json (one line each)')
        .choices(['pretty', 'json'])
        .default('pretty'),
    )
    .addOption(new Option('-n, --namespace <ns>', 'namespace').env('TRELLIS_NAMESPACE').default('default'))
    .addOption(serverOption())
    .addHelpText(
      'after',
      `\nExamples:\n  trellis tail default/default\n  trellis tail default/orders --filter "type LIKE 'order.%' AND INT(amount) > 100"\n  trellis tail imc/default/audit -o json | jq .data`,
    )
    .action(
      async (
        target: string,
        opts: { filter?: string; output: string; namespace: string; server: string },
      ) => {
        try {
          const { kind, ns, name } = tailTarget(target, opts.namespace);
          const abort = new AbortController();
          process.once('SIGINT', () => abort.abort());
          process.once('SIGTERM', () => abort.abort());
          process.stderr.write(
            `following ${kind.kind} ${ns}/${name}${opts.filter ? ` where ${opts.filter}` : ''} (Ctrl-C stops)\n`,
          );
          const client = new AdminClient(opts.server);
          for await (const m of client.tail(kind, ns, name, opts.filter, abort.signal)) {
            if (m.type === 'dropped') {
              process.stderr.write(`(${m.dropped} events dropped: this tail fell behind)\n`);
              continue;
            }
            if (opts.output === 'json') process.stdout.write(`${JSON.stringify(m.event)}\n`);
            else process.stdout.write(`${escapeControl(formatEvent(eventFromJson(m.event)), true)}\n`);
          }
        } catch (err) {
          fail(err);
        }
      },
    );
}
