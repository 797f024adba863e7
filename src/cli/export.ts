/**
 * `trellis export` and `trellis import`: every resource of a server as Knative YAML (no status, no
 * server-made metadata), in an order that applies cleanly, and back into a server — to move from the
 * embedded store to another one, or to keep resources in version control.
 * @module
 */
import { writeFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { stringify } from 'yaml';
import { AdminClient, type ApiResource } from '../client/admin-client.js';
import { KINDS } from '../resources/kinds.js';

/** Kinds in the order an import applies them: what others refer to first. */
const ORDER = [
  'Service',
  'Broker',
  'Channel',
  'InMemoryChannel',
  'EventTransform',
  'Sequence',
  'Parallel',
  'Trigger',
  'Subscription',
  'EventType',
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
    .addOption(serverOption())
    .addHelpText(
      'after',
      '\nExamples:\n  trellis export > resources.yaml\n  trellis export -n shop --file shop.yaml\n  trellis export --server http://old:8080 | trellis import -f - --server http://new:8080',
    )
    .action(
      async (opts: {
        namespace?: string;
        output: string;
        file?: string;
        includeAuto?: boolean;
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
        } catch (err) {
          fail(err);
        }
      },
    );
}
