/**
 * `trellis deadletters list|show|redrive|purge TARGET` and `trellis retries`: the dead letters a Broker,
 * Channel or flow keeps (`trellis.dev/dead-letters: keep`), sent back or removed, and the deliveries
 * waiting for their next attempt.
 * @module
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { AdminClient, type DeadLetter } from '../client/admin-client.js';
import { escapeControl } from '../cloudevents/display.js';
import { table } from './format.js';
import { tailTarget } from './tail.js';

const KEEPERS = new Set(['Broker', 'Channel', 'InMemoryChannel', 'Sequence', 'Parallel']);
const TARGET_HELP =
  'NAMESPACE/BROKER, BROKER (with -n), or KIND/NAMESPACE/NAME (channel, imc, sequence, parallel)';

function subscriptionOf(d: DeadLetter): string {
  const s = d.subscription;
  return s.kind === undefined ? `(gone) ${s.id}` : `${s.kind} ${s.namespace}/${s.name}`;
}

function oneLine(s: string | undefined, max = 60): string {
  return (s ?? '').replace(/\s+/g, ' ').slice(0, max);
}

function seqList(v: string, prev: number[] = []): number[] {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`'${v}' is not a sequence number`);
  return [...prev, n];
}

/** The selection of redrive and purge: exactly one of --seq, --filter, --all. */
function chosen(opts: { seq?: number[]; filter?: string; all?: boolean }) {
  const n = [opts.seq !== undefined, opts.filter !== undefined, opts.all === true].filter(Boolean).length;
  if (n !== 1)
    throw new InvalidArgumentError('give exactly one of --seq N (repeatable), --filter CESQL or --all');
  if (opts.seq !== undefined) return { seqs: opts.seq };
  if (opts.filter !== undefined) return { filter: opts.filter };
  return { all: true };
}

export function registerDeadLetters(
  program: Command,
  serverOption: () => Option,
  fail: (err: unknown) => never,
): void {
  const ns = () =>
    new Option('-n, --namespace <ns>', 'namespace').env('TRELLIS_NAMESPACE').default('default');
  const dl = program
    .command('deadletters')
    .description('Browse, redrive and purge the dead letters Trellis keeps (trellis.dev/dead-letters: keep).')
    .addHelpText(
      'after',
      `\nExamples:\n  trellis deadletters list default/orders\n  trellis deadletters list default/orders --filter "knativeerrorcode = '503'"\n  trellis deadletters show default/orders 42\n  trellis deadletters redrive default/orders --all\n  trellis deadletters redrive default/orders --seq 42 --to http://127.0.0.1:9090/\n  trellis deadletters purge default/orders --filter "type = 'test.event'"`,
    );

  dl.command('list')
    .description('List the dead letters, oldest first.')
    .argument('<target>', TARGET_HELP)
    .option(
      '--filter <cesql>',
      'only those matching (their attributes, knativeerrorcode and the like included)',
    )
    .option('--limit <n>', 'at most this many', '100')
    .addOption(
      new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table'),
    )
    .addOption(ns())
    .addOption(serverOption())
    .action(
      async (
        target: string,
        opts: { filter?: string; limit: string; output: string; namespace: string; server: string },
      ) => {
        try {
          const t = tailTarget(target, opts.namespace, KEEPERS);
          const limit = Number(opts.limit);
          if (!Number.isSafeInteger(limit) || limit < 1)
            throw new InvalidArgumentError('--limit: a whole number above 0');
          const client = new AdminClient(opts.server);
          const items: DeadLetter[] = [];
          let after = 0;
          while (items.length < limit) {
            const page = await client.deadLetters(t.kind, t.ns, t.name, {
              filter: opts.filter,
              after,
              limit: Math.min(1000, limit - items.length),
            });
            items.push(...page.items);
            if (page.next === null) break;
            after = page.next;
          }
          if (opts.output === 'json') {
            process.stdout.write(`${JSON.stringify(items, null, 2)}\n`);
            return;
          }
          if (items.length === 0) {
            process.stderr.write(
              `${t.kind} ${t.ns}/${t.name} keeps no dead letters${opts.filter ? ' that match' : ''}.\n`,
            );
            return;
          }
          const rows = [['SEQ', 'FAILED', 'SUBSCRIPTION', 'TYPE', 'ID', 'CODE', 'ANSWER']];
          for (const d of items)
            rows.push([
              String(d.seq),
              String(d.failedAt ?? ''),
              subscriptionOf(d),
              String(d.event['type'] ?? ''),
              String(d.event['id'] ?? ''),
              d.errorCode === undefined ? '' : String(d.errorCode),
              oneLine(d.errorData),
            ]);
          process.stdout.write(`${escapeControl(table(rows), true)}\n`);
        } catch (err) {
          fail(err);
        }
      },
    );

  dl.command('show')
    .description('One dead letter in full: the event, where it failed, the answer.')
    .argument('<target>', TARGET_HELP)
    .argument('<seq>', 'its sequence number (from list)')
    .addOption(ns())
    .addOption(serverOption())
    .action(async (target: string, seq: string, opts: { namespace: string; server: string }) => {
      try {
        const t = tailTarget(target, opts.namespace, KEEPERS);
        const d = await new AdminClient(opts.server).deadLetter(t.kind, t.ns, t.name, seqList(seq)[0]!);
        process.stdout.write(`${escapeControl(JSON.stringify(d, null, 2), true)}\n`);
      } catch (err) {
        fail(err);
      }
    });

  for (const action of ['redrive', 'purge'] as const) {
    const c = dl
      .command(action)
      .description(
        action === 'redrive'
          ? 'Send dead letters again: to the subscription each failed on (a new delivery), or --to a URL; removed once taken.'
          : 'Remove dead letters for good.',
      )
      .argument('<target>', TARGET_HELP)
      .option('--seq <n>', 'a sequence number (repeatable)', seqList)
      .option('--filter <cesql>', 'those matching a CESQL expression')
      .option('--all', 'all of them');
    if (action === 'redrive') c.option('--to <url>', 'send them to this URL instead of their subscriptions');
    c.addOption(ns())
      .addOption(serverOption())
      .action(
        async (
          target: string,
          opts: {
            seq?: number[];
            filter?: string;
            all?: boolean;
            to?: string;
            namespace: string;
            server: string;
          },
        ) => {
          try {
            const t = tailTarget(target, opts.namespace, KEEPERS);
            const sel = { ...chosen(opts), ...(opts.to !== undefined ? { to: opts.to } : {}) };
            const r = await new AdminClient(opts.server).deadLetterAction(action, t.kind, t.ns, t.name, sel);
            const n = action === 'redrive' ? r.redriven : r.purged;
            process.stdout.write(
              `${n} dead letter${n === 1 ? '' : 's'} ${action === 'redrive' ? 'redriven' : 'purged'}\n`,
            );
            for (const f of r.failed ?? [])
              process.stderr.write(`${escapeControl(`seq ${f.seq}: ${f.reason}`)}\n`);
            if ((r.failed ?? []).length > 0) process.exit(1);
          } catch (err) {
            fail(err);
          }
        },
      );
  }

  program
    .command('retries')
    .description('Deliveries waiting for their next attempt, with the last answer (this server).')
    .addOption(
      new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table'),
    )
    .addOption(serverOption())
    .action(async (opts: { output: string; server: string }) => {
      try {
        const { items } = await new AdminClient(opts.server).retries();
        if (opts.output === 'json') {
          process.stdout.write(`${JSON.stringify(items, null, 2)}\n`);
          return;
        }
        if (items.length === 0) {
          process.stderr.write('No deliveries are waiting for a retry.\n');
          return;
        }
        const rows = [['SUBSCRIPTION', 'SEQ', 'ID', 'FAILED', 'NEXT ATTEMPT', 'LAST ANSWER']];
        for (const x of items)
          rows.push([
            `${x.subscription.kind} ${x.subscription.namespace}/${x.subscription.name}`,
            String(x.seq),
            x.eventId,
            String(x.failedAttempts),
            x.nextAttemptAt,
            x.lastAnswer === undefined
              ? ''
              : `${x.lastAnswer.code ?? 'no answer'}: ${oneLine(x.lastAnswer.answer)}`,
          ]);
        process.stdout.write(`${escapeControl(table(rows), true)}\n`);
      } catch (err) {
        fail(err);
      }
    });
}
