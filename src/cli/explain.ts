/**
 * `trellis explain trigger NAME`: answers "why did my Trigger not get this event?" by running the
 * Trigger's filter, as the server compiles it, against an event from a file or from flags.
 * @module
 */

import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError, type Option } from 'commander';
import { AdminClient } from '../client/admin-client.js';
import { escapeControl } from '../cloudevents/display.js';
import type { CloudEvent } from '../cloudevents/event.js';
import { eventFromJson } from '../cloudevents/json-format.js';
import { explainAttributesFilter } from '../filter/attributes.js';
import { explainFilters, type SubscriptionsFilter } from '../filter/dialect.js';
import { findKind } from '../resources/kinds.js';
import { attributesFromFlags } from './event-flags.js';

interface Cond {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

/** What the command prints, and whether the event would be delivered. */
export function explain(
  trigger: { spec: Record<string, unknown>; status?: Record<string, unknown> },
  e: CloudEvent,
): { match: boolean; lines: string[] } {
  const lines: string[] = [];
  const spec = trigger.spec as {
    broker: string;
    filter?: { attributes?: Record<string, string> };
    filters?: SubscriptionsFilter[];
  };
  const ready = (trigger.status?.['conditions'] as Cond[] | undefined)?.find((c) => c.type === 'Ready');
  if (ready?.status !== 'True')
    lines.push(
      `note: the Trigger is not Ready (${ready?.reason ?? 'Unknown'}: ${ready?.message ?? ''}); it receives nothing until it is`,
    );
  let why: string | undefined;
  if (spec.filters && spec.filters.length > 0) {
    lines.push('filter: spec.filters (it overrides spec.filter.attributes)');
    why = explainFilters(spec.filters, e);
  } else if (spec.filter?.attributes && Object.keys(spec.filter.attributes).length > 0) {
    lines.push('filter: spec.filter.attributes');
    const w = explainAttributesFilter(spec.filter.attributes, e);
    why = w === undefined ? undefined : `spec.filter.attributes: ${w}`;
  } else lines.push('filter: none (every event of the Broker)');
  if (why === undefined) lines.push(`MATCH: the Trigger's filter passes this event (Broker ${spec.broker})`);
  else lines.push(`NO MATCH: ${why}`);
  lines.push('note: a Trigger sees only events that arrive after it is Ready');
  return { match: why === undefined, lines };
}

function readEvent(file: string): CloudEvent {
  const text = file === '-' ? readFileSync(0) : readFileSync(file);
  try {
    return eventFromJson(JSON.parse(text.toString('utf8')));
  } catch (err) {
    throw new InvalidArgumentError(
      `${file}: not a structured CloudEvent in JSON (${(err as Error).message})`,
    );
  }
}

export function registerExplain(program: Command, serverOption: () => Option, nsOption: () => Option): void {
  program
    .command('explain')
    .description('Say whether a Trigger would get an event, and which filter clause rejects it.')
    .argument('<kind>', 'trigger')
    .argument('<name>', 'the Trigger')
    .option('--event-file <file>', "the event as structured JSON ('-' reads standard input)")
    .option('--event-id <id>', "an event the Trigger's Broker still holds, by id")
    .option('--event-source <source>', 'with --event-id: the event source, when ids repeat across sources')
    .option('--type <type>', 'the event type (instead of --event-file)')
    .option('--source <source>', 'the event source', '/explain')
    .option('--subject <subject>', 'the event subject')
    .option('-e, --extension <name=value...>', 'extension attributes')
    .addOption(nsOption())
    .addOption(serverOption())
    .addHelpText(
      'after',
      `\nExamples:\n  trellis explain trigger new-orders --type order.created --source /shop/checkout\n  trellis explain trigger billing --event-file event.json -n shop\n  trellis explain trigger billing --event-id 8c1f-42    # an event the Broker still holds`,
    )
    .action(async (kind: string, name: string, opts: Record<string, string | string[] | undefined>) => {
      const def = findKind(kind);
      if (def?.kind !== 'Trigger' || !def)
        throw new InvalidArgumentError(`explain works on a trigger, not '${kind}'`);
      const client = new AdminClient(String(opts['server']));
      const t = await client.get(def, String(opts['namespace']), name);
      let e: CloudEvent;
      if (opts['eventId']) {
        const json = await client.event(
          String(opts['namespace']),
          String(t.spec['broker']),
          String(opts['eventId']),
          opts['eventSource'] as string | undefined,
        );
        e = eventFromJson(json);
      } else if (opts['eventFile']) e = readEvent(String(opts['eventFile']));
      else {
        if (!opts['type'])
          throw new InvalidArgumentError(
            'give --event-id ID, --event-file FILE, or --type (with --source, --subject, -e)',
          );
        e = { attrs: attributesFromFlags(opts, 'explain') };
      }
      const r = explain(t, e);
      process.stdout.write(`${escapeControl(r.lines.join('\n'), true)}\n`);
      if (!r.match) process.exitCode = 2;
    });
}
