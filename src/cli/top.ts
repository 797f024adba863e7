/**
 * `trellis top`: rates, lag and errors per Broker/Channel and per Trigger/Subscription, refreshed live in
 * the terminal (from `GET /apis/stats`, sampled every interval; rates are the differences).
 * @module
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { AdminClient, type Stats } from '../client/admin-client.js';
import { escapeControl } from '../cloudevents/display.js';
import { parseDuration } from '../resources/duration.js';
import { table } from './format.js';

/** Rates between two samples, `dt` seconds apart, as the rows `trellis top` prints. */
export function topView(before: Stats, after: Stats, dt: number, namespace: string | undefined): string {
  const inNs = (ns: string) => namespace === undefined || ns === namespace;
  const rate = (a: number, b: number | undefined) => ((a - (b ?? 0)) / dt).toFixed(1);
  const prevStream = new Map(before.streams.map((s) => [s.stream, s]));
  const streams: string[][] = [['STREAM', 'KIND', 'IN/s', 'REFUSED/s', 'IN', 'REFUSED']];
  for (const s of [...after.streams].sort((a, b) => a.stream.localeCompare(b.stream))) {
    const parts = s.stream.split('/');
    if (!inNs(parts.length === 2 ? parts[0]! : parts[1]!)) continue;
    const p = prevStream.get(s.stream);
    streams.push([
      s.stream,
      s.kind,
      rate(s.accepted, p?.accepted),
      rate(s.rejected, p?.rejected),
      String(s.accepted),
      String(s.rejected),
    ]);
  }
  const key = (x: { kind: string; namespace: string; name: string }) => `${x.kind}/${x.namespace}/${x.name}`;
  const prevSub = new Map(before.subscriptions.map((x) => [key(x), x]));
  const subs: string[][] = [
    ['SUBSCRIPTION', 'DELIVERED/s', 'FAILED/s', 'DEAD-LETTERED', 'DROPPED', 'LAG', 'OLDEST', 'LAST FAILURE'],
  ];
  const sorted = after.subscriptions
    .filter((x) => inNs(x.namespace))
    .sort((a, b) => b.lag - a.lag || key(a).localeCompare(key(b)));
  for (const x of sorted) {
    const p = prevSub.get(key(x));
    const last = x.recentFailures[0];
    subs.push([
      `${x.kind} ${x.namespace}/${x.name}`,
      rate(x.delivered, p?.delivered),
      rate(x.failedAttempts, p?.failedAttempts),
      String(x.deadLettered),
      String(x.dropped),
      String(x.lag),
      x.lag === 0 ? '' : `${Math.round(x.oldestPendingSeconds)}s`,
      last === undefined
        ? ''
        : `${last.code ?? 'no answer'}: ${last.answer.replace(/\s+/g, ' ').slice(0, 60)}`,
    ]);
  }
  return `${table(streams)}\n\n${table(subs)}\n`;
}

export function registerTop(
  program: Command,
  serverOption: () => Option,
  fail: (err: unknown) => never,
): void {
  program
    .command('top')
    .description('Rates, lag and errors per Broker and Trigger, refreshed live (Ctrl-C stops).')
    .addOption(new Option('-n, --namespace <ns>', 'only this namespace').env('TRELLIS_NAMESPACE'))
    .addOption(
      new Option('--interval <duration>', 'how often to sample (ISO-8601 or a number of seconds)').default(
        '2',
      ),
    )
    .option('--once', 'print one view (rates over one interval) and exit')
    .addOption(serverOption())
    .addHelpText(
      'after',
      '\nExamples:\n  trellis top\n  trellis top -n shop --interval 5\n  trellis top --once',
    )
    .action(async (opts: { namespace?: string; interval: string; once?: boolean; server: string }) => {
      try {
        const ms = /^\d+(\.\d+)?$/.test(opts.interval)
          ? Number(opts.interval) * 1000
          : parseDuration(opts.interval);
        if (ms === undefined || ms < 100 || ms > 3_600_000)
          throw new InvalidArgumentError(
            '--interval: from 0.1 s to an hour, as seconds or an ISO-8601 duration',
          );
        const client = new AdminClient(opts.server);
        let stop = false;
        process.once('SIGINT', () => {
          stop = true;
        });
        let before = await client.stats();
        let at = performance.now();
        const live = process.stdout.isTTY === true && opts.once !== true;
        for (;;) {
          await new Promise((r) => setTimeout(r, ms));
          if (stop) return;
          const after = await client.stats();
          const now = performance.now();
          const view = escapeControl(topView(before, after, (now - at) / 1000, opts.namespace), true);
          // A terminal is redrawn in place; a pipe gets one view after another.
          if (live)
            process.stdout.write(`\x1b[H\x1b[2J${new Date().toISOString()}  ${opts.server}\n\n${view}`);
          else process.stdout.write(`${view}\n`);
          if (opts.once) return;
          before = after;
          at = now;
        }
      } catch (err) {
        fail(err);
      }
    });
}
