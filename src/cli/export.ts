/**
 * `trellis export` and `trellis import`: every resource of a server as Knative YAML (no status, no
 * server-made metadata), in an order that applies cleanly, and back into a server — to move from the
 * embedded store to another one, or to keep resources in version control.
 * @module
 */
import { closeSync, createReadStream, openSync, writeFileSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { type Command, Option } from 'commander';
import { stringify } from 'yaml';
import { AdminClient, type ApiResource } from '../client/admin-client.js';
import { KINDS } from '../resources/kinds.js';

/** Kinds in the order an import applies them: what others refer to first. */
const ORDER = [
  'Service',
  'KnativeService',
  'IntegrationSink',
  'NatsSink',
  'JobSink',
  'KafkaSink',
  'RedisStreamSink',
  'MqttSink',
  'AmqpSink',
  'Broker',
  'Channel',
  'InMemoryChannel',
  'EventTransform',
  'Sequence',
  'Parallel',
  'Trigger',
  'Subscription',
  'PingSource',
  'IntegrationSource',
  'ApiServerSource',
  'SinkBinding',
  'ContainerSource',
  'NatsSource',
  'KafkaSource',
  'RedisStreamSource',
  'MqttSource',
  'AmqpSource',
  'EventType',
  'EventPolicy',
];

/** A resource as a user would have written it: apiVersion, kind, metadata (name, namespace, labels, annotations), spec. */
export function exportable(r: ApiResource): Record<string, unknown> {
  const m = r.metadata as Record<string, unknown>;
  const metadata: Record<string, unknown> = { name: m['name'], namespace: m['namespace'] };
  if (m['labels'] !== undefined) metadata['labels'] = m['labels'];
  if (m['annotations'] !== undefined) metadata['annotations'] = m['annotations'];
  return { apiVersion: r.apiVersion, kind: r.kind, metadata, spec: r.spec };
}

export function registerExport(
  program: Command,
  serverOption: () => Option,
  fail: (err: unknown) => never,
): void {
  program
    .command('export')
    .description('Print every resource as YAML (or JSON) that trellis import or apply takes back.')
    .option('-n, --namespace <ns>', 'only this namespace (default: every namespace)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['yaml', 'json']).default('yaml'))
    .option('--file <file>', 'write to a file instead of standard output')
    .option('--include-auto', 'include the EventTypes Trellis registered by itself')
    .option(
      '--events <file>',
      'also write the events each Broker and Channel still stores (its history) to this file, one JSON line each',
    )
    .addOption(serverOption())
    .addHelpText(
      'after',
      '\nExamples:\n  trellis export > resources.yaml\n  trellis export -n shop --file shop.yaml\n  trellis export --server http://old:8080 | trellis import -f - --server http://new:8080\n  trellis export --file mesh.yaml --events events.jsonl && trellis import -f mesh.yaml --events events.jsonl --server http://new:8080',
    )
    .action(
      async (opts: {
        namespace?: string;
        output: string;
        file?: string;
        includeAuto?: boolean;
        events?: string;
        server: string;
      }) => {
        try {
          const client = new AdminClient(opts.server);
          const docs: Record<string, unknown>[] = [];
          const kinds = [...KINDS].sort((a, b) => ORDER.indexOf(a.kind) - ORDER.indexOf(b.kind));
          for (const k of kinds) {
            const items = await client.list(k, opts.namespace);
            for (const r of items) {
              const labels = (r.metadata as { labels?: Record<string, string> }).labels;
              if (!opts.includeAuto && labels?.['trellis.dev/auto-created'] === 'true') continue;
              docs.push(exportable(r));
            }
          }
          const text =
            opts.output === 'json'
              ? `${JSON.stringify({ apiVersion: 'v1', kind: 'List', items: docs }, null, 2)}\n`
              : docs.map((d) => stringify(d)).join('---\n');
          if (opts.file) writeFileSync(opts.file, text, { mode: 0o600 });
          else process.stdout.write(text);
          process.stderr.write(`${docs.length} resources exported\n`);
          if (opts.events !== undefined) {
            const n = await exportEvents(client, docs, opts.events);
            process.stderr.write(`${n} events exported to ${opts.events}\n`);
          }
        } catch (err) {
          fail(err);
        }
      },
    );
}

/** The kinds whose events are kept as a history, and exported with `--events`. */
const WITH_HISTORY = new Set(['Broker', 'Channel', 'InMemoryChannel']);

/** One line of an events file: where the event was stored, and the event in structured JSON. */
interface EventLine {
  kind: string;
  namespace: string;
  name: string;
  event: Record<string, unknown>;
}

/** Writes every stored event of the exported Brokers and Channels to `file`, one JSON line each. */
async function exportEvents(
  client: AdminClient,
  docs: Record<string, unknown>[],
  file: string,
): Promise<number> {
  const fd = openSync(file, 'w', 0o600);
  let n = 0;
  try {
    for (const d of docs) {
      const kind = String(d['kind']);
      if (!WITH_HISTORY.has(kind)) continue;
      const def = KINDS.find((k) => k.kind === kind)!;
      const { name, namespace } = d['metadata'] as { name: string; namespace: string };
      let after = 0;
      for (;;) {
        const page = await client.history(def, namespace, name, after);
        let out = '';
        for (const it of page.items) {
          const line: EventLine = { kind, namespace, name, event: it.event };
          out += `${JSON.stringify(line)}\n`;
        }
        if (out !== '') writeSync(fd, out);
        n += page.items.length;
        if (page.next === null) break;
        after = page.next;
      }
    }
  } finally {
    closeSync(fd);
  }
  return n;
}

/**
 * Stores the events of an events file as the history of the Brokers and Channels they came from (which
 * must exist: import the resources first). Sent in batches well under the server's body limit; the
 * events go to no Trigger or Subscription.
 */
export async function importEvents(client: AdminClient, file: string): Promise<number> {
  const lines = createInterface({
    input: file === '-' ? process.stdin : createReadStream(file),
    crlfDelay: Infinity,
  });
  let batch: unknown[] = [];
  let bytes = 0;
  let target: EventLine | undefined;
  let n = 0;
  let lineNo = 0;
  const flush = async () => {
    if (target === undefined || batch.length === 0) return;
    const def = KINDS.find((k) => k.kind === target!.kind)!;
    n += await client.importHistory(def, target.namespace, target.name, batch);
    batch = [];
    bytes = 0;
  };
  for await (const text of lines) {
    lineNo++;
    if (text.trim() === '') continue;
    let line: EventLine;
    try {
      line = JSON.parse(text) as EventLine;
    } catch (err) {
      throw new Error(`${file} line ${lineNo}: not JSON (${(err as Error).message})`);
    }
    if (
      typeof line !== 'object' ||
      line === null ||
      !WITH_HISTORY.has(line.kind) ||
      typeof line.namespace !== 'string' ||
      typeof line.name !== 'string' ||
      typeof line.event !== 'object'
    )
      throw new Error(
        `${file} line ${lineNo}: expected {"kind": "Broker"|"Channel"|"InMemoryChannel", "namespace", "name", "event"} as trellis export --events writes it`,
      );
    const same =
      target !== undefined &&
      target.kind === line.kind &&
      target.namespace === line.namespace &&
      target.name === line.name;
    if (!same || batch.length >= 500 || bytes + text.length > 256 * 1024) {
      await flush();
      target = line;
    }
    batch.push(line.event);
    bytes += text.length;
  }
  await flush();
  return n;
}
