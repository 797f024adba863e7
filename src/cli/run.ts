/**
 * `trellis run --sink KIND/NAME -- COMMAND [ARGS...]`: runs a local command with `K_SINK` (and
 * `K_CE_OVERRIDES`) set, as Knative's SinkBinding sets them in a pod: the sink of a SinkBinding, or the
 * address of a Broker, Channel, Sequence, Parallel, EventTransform or IntegrationSink, or a URL.
 * @module
 */
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { type Command, InvalidArgumentError, type Option } from 'commander';
import { AdminClient } from '../client/admin-client.js';
import { findKind } from '../resources/kinds.js';

interface Resolved {
  sink: string;
  ceOverrides?: string | undefined;
}

/** What the command gets: the sink URL and the overrides, from a resource or a URL. */
export async function resolveSink(client: AdminClient, ref: string, namespace: string): Promise<Resolved> {
  if (/^https?:\/\//i.test(ref)) return { sink: ref };
  const parts = ref.split('/');
  if (parts.length !== 2 && parts.length !== 3)
    throw new InvalidArgumentError(`--sink ${ref}: give KIND/NAME, KIND/NAMESPACE/NAME or an http(s) URL`);
  const kind = findKind(parts[0]!);
  if (kind === undefined) throw new InvalidArgumentError(`--sink ${ref}: no kind '${parts[0]}'`);
  const [ns, name] = parts.length === 3 ? [parts[1]!, parts[2]!] : [namespace, parts[1]!];
  const o = await client.get(kind, ns, name);
  const status = (o.status ?? {}) as {
    sinkUri?: string;
    address?: { url?: string };
    conditions?: { type: string; status: string; message?: string }[];
  };
  const readyCond = status.conditions?.find((c) => c.type === 'Ready');
  const url = kind.kind === 'SinkBinding' ? status.sinkUri : status.address?.url;
  if (readyCond?.status !== 'True' || url === undefined)
    throw new InvalidArgumentError(
      `${kind.kind} ${ns}/${name} is not Ready${readyCond?.message ? `: ${readyCond.message}` : ''}${url === undefined && kind.kind !== 'SinkBinding' ? ' (it has no address: name a SinkBinding, an addressable resource or a URL)' : ''}`,
    );
  const ce = (o.spec as { ceOverrides?: unknown }).ceOverrides;
  return { sink: url, ceOverrides: ce === undefined ? undefined : JSON.stringify(ce) };
}

export function registerRun(
  program: Command,
  serverOption: () => Option,
  nsOption: () => Option,
  fail: (err: unknown) => never,
): void {
  program
    .command('run')
    .description("Run a command with K_SINK and K_CE_OVERRIDES set, as Knative's SinkBinding sets them.")
    .requiredOption(
      '--sink <ref>',
      'sinkbinding/NAME, broker/NAME (any addressable KIND/NAME, or KIND/NAMESPACE/NAME), or a URL',
    )
    .argument('<command...>', 'the command and its arguments (after --)')
    .addOption(nsOption())
    .addOption(serverOption())
    .addHelpText(
      'after',
      '\nExamples:\n  trellis run --sink sinkbinding/bind-heartbeat -- ./heartbeat --period 5\n  trellis run --sink broker/default -- python3 producer.py',
    )
    .action(async (command: string[], opts: { sink: string; namespace: string; server: string }) => {
      let resolved: Resolved;
      try {
        resolved = await resolveSink(new AdminClient(opts.server), opts.sink, opts.namespace);
      } catch (err) {
        fail(err);
      }
      const env: NodeJS.ProcessEnv = { ...process.env, K_SINK: resolved.sink };
      if (resolved.ceOverrides !== undefined) env['K_CE_OVERRIDES'] = resolved.ceOverrides;
      else delete env['K_CE_OVERRIDES'];
      const child = spawn(command[0]!, command.slice(1), { stdio: 'inherit', env });
      const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
      process.on('SIGINT', forward('SIGINT'));
      process.on('SIGTERM', forward('SIGTERM'));
      child.once('error', (err) => {
        process.stderr.write(`error: cannot run ${command[0]}: ${err.message}\n`);
        process.exit(127);
      });
      child.once('exit', (code, signal) => {
        process.exit(code ?? (signal !== null ? 128 + (signalNumber(signal) ?? 0) : 1));
      });
    });
}

function signalNumber(sig: NodeJS.Signals): number | undefined {
  return (osConstants.signals as Record<string, number>)[sig];
}
