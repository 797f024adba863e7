#!/usr/bin/env node
/**
 * The `trellis` command: serve, apply, get, describe, delete, send and display.
 * @module
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { AdminClient, ApiError, type BulkOutcome } from '../client/admin-client.js';
import { TrellisApiError } from '../client/trellis.js';
import { escapeControl } from '../cloudevents/display.js';
import type { CloudEvent } from '../cloudevents/event.js';
import { TrellisError } from '../errors.js';
import { findKind, KINDS, kindOfDocument, SUBSCRIBING_KINDS } from '../resources/kinds.js';
import { parseDocuments } from '../resources/registry.js';
import { isObject } from '../resources/validation.js';
import { registerDeadLetters } from './deadletters.js';
import { runDisplay } from './display.js';
import { attributesFromFlags } from './event-flags.js';
import { registerExplain } from './explain.js';
import { importEvents, registerExport } from './export.js';
import { formatDescribe, formatObject, formatTable } from './format.js';
import { registerRun } from './run.js';
import { runServe } from './serve.js';
import { registerSubscribe } from './subscribe.js';
import { registerTail } from './tail.js';
import { registerTop } from './top.js';

const DEFAULT_SERVER = 'http://127.0.0.1:8080';

function serverOption(): Option {
  return new Option('--server <url>', 'the Trellis server to talk to')
    .env('TRELLIS_SERVER')
    .default(DEFAULT_SERVER);
}
function nsOption(): Option {
  return new Option('-n, --namespace <ns>', 'namespace').env('TRELLIS_NAMESPACE').default('default');
}

/** Kinds whose wide tables show delivery counts and lag (a source's: to its sink). */
const DELIVERING = new Set(SUBSCRIBING_KINDS);

function kindOrFail(name: string) {
  const k = findKind(name);
  if (!k) {
    throw new InvalidArgumentError(
      `unknown kind '${name}'; Trellis serves: ${KINDS.map((x) => `${x.singular} (${x.plural})`).join(', ')}`,
    );
  }
  return k;
}

/** The items of a JSON `List` (as trellis export -o json writes), or the one object. */
function listItems(v: unknown): unknown[] {
  return isObject(v) && Array.isArray(v['items']) ? v['items'] : [v];
}

/** `trigger.eventing.knative.dev`, or `service` for Kubernetes' core group, as kubectl prints it. */
function qualified(k: { singular: string; group: string }): string {
  return k.group === '' ? k.singular : `${k.singular}.${k.group}`;
}

function readInput(file: string): string {
  return file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
}

function fail(err: unknown): never {
  if (err instanceof ApiError || err instanceof TrellisApiError)
    process.stderr.write(
      `error: ${escapeControl(err.message)}${err.code ? ` (${escapeControl(err.code)})` : ''}\n`,
    );
  else if (err instanceof TrellisError)
    process.stderr.write(`error: ${escapeControl(err.message)} (${err.code})\n`);
  else process.stderr.write(`error: ${escapeControl((err as Error).message ?? String(err))}\n`);
  process.exit(1);
}

/** Builds the command tree (exported for tests). */
export function buildProgram(): Command {
  const program = new Command('trellis')
    .description('A CloudEvents event mesh: Knative Brokers and Triggers without Kubernetes.')
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Examples:
  trellis serve --quickstart                 run a server with a Broker 'default' that prints what it gets
  trellis apply -f broker.yaml               create or update resources
  trellis get triggers -o wide               list Triggers with their status
  trellis send --broker default/default --type demo.hello --source cli --data '{"hi":1}'`,
    );

  runServe(program);

  program
    .command('apply')
    .description('Create or update the resources in YAML files (several documents per file are fine).')
    .requiredOption('-f, --filename <file...>', "a YAML or JSON file; '-' reads standard input")
    .addOption(nsOption())
    .addOption(serverOption())
    .addHelpText(
      'after',
      '\nExamples:\n  trellis apply -f broker.yaml -f trigger.yaml\n  cat all.yaml | trellis apply -f -',
    )
    .action(async (opts: { filename: string[]; namespace: string; server: string }) => {
      const client = new AdminClient(opts.server);
      let failed = 0;
      for (const file of opts.filename) {
        const name = file === '-' ? 'stdin' : file;
        let docs: unknown[];
        try {
          docs = parseDocuments(readInput(file));
        } catch (err) {
          process.stderr.write(`error: ${file}: ${(err as Error).message}\n`);
          failed++;
          continue;
        }
        let results: BulkOutcome[];
        try {
          results = await client.applyMany(docs, opts.namespace);
        } catch (err) {
          fail(err);
        }
        for (const [i, r] of results.entries()) {
          const where = `${name} document ${i + 1}`;
          if ('error' in r) {
            process.stderr.write(`error: ${where}: ${r.error.message} (${r.error.code})\n`);
            failed++;
            continue;
          }
          for (const w of r.warnings) process.stderr.write(`Warning: ${where}: ${w}\n`);
          const kind = kindOfDocument(r.kind, r.apiVersion);
          process.stdout.write(`${kind ? qualified(kind) : r.kind}/${r.name} ${r.action}\n`);
        }
      }
      if (failed > 0) process.exit(1);
    });

  registerExport(program, serverOption, fail);
  registerTail(program, serverOption, fail);
  registerTop(program, serverOption, fail);

  program
    .command('token')
    .description("Mint a token with this server's OIDC key (admin token required) and print it.")
    .requiredOption('--audience <aud>', "the addressable's audience (its status.address.audience)")
    .requiredOption('--subject <sub>', 'who the token says the sender is')
    .option('--ttl <duration>', 'how long it is valid, ISO-8601 (default PT1H, at most PT24H)')
    .addOption(serverOption())
    .addHelpText(
      'after',
      '\nExample:\n  curl -H "Authorization: Bearer $(trellis token --audience eventing.knative.dev/broker/default/orders --subject shop)" ...',
    )
    .action(async (opts: { audience: string; subject: string; ttl?: string; server: string }) => {
      try {
        process.stdout.write(
          `${await new AdminClient(opts.server).mintToken(opts.audience, opts.subject, opts.ttl)}\n`,
        );
      } catch (err) {
        fail(err);
      }
    });
  registerDeadLetters(program, serverOption, fail);

  program
    .command('import')
    .description('Create or update the resources of an export (the same as apply, with a count at the end).')
    .requiredOption('-f, --filename <file...>', "a file from trellis export; '-' reads standard input")
    .option('--events <file>', 'an events file from trellis export --events: stored as history, sent nowhere')
    .addOption(serverOption())
    .addHelpText(
      'after',
      '\nExample:\n  trellis export --server http://old:8080 | trellis import -f - --server http://new:8080',
    )
    .action(async (opts: { filename: string[]; events?: string; server: string }) => {
      const client = new AdminClient(opts.server);
      let applied = 0;
      let failed = 0;
      for (const file of opts.filename) {
        try {
          const text = readInput(file);
          const trimmed = text.trimStart();
          const docs = trimmed.startsWith('{') ? listItems(JSON.parse(trimmed)) : parseDocuments(text);
          for (const [i, r] of (await client.applyMany(docs, 'default')).entries()) {
            if ('error' in r) {
              process.stderr.write(
                `error: ${file} document ${i + 1}: ${r.error.message} (${r.error.code})\n`,
              );
              failed++;
            } else applied++;
          }
        } catch (err) {
          fail(err);
        }
      }
      process.stdout.write(`${applied} resources imported${failed ? `, ${failed} failed` : ''}\n`);
      if (failed > 0) process.exit(1);
      if (opts.events !== undefined) {
        try {
          const n = await importEvents(client, opts.events);
          process.stdout.write(`${n} events imported\n`);
        } catch (err) {
          fail(err);
        }
      }
    });

  program
    .command('get')
    .description('List resources of a kind, or show one.')
    .argument('<kind>', 'broker(s) or trigger(s)')
    .argument('[name]', 'one resource')
    .addOption(nsOption())
    .option('-A, --all-namespaces', 'list across every namespace')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['yaml', 'json', 'wide']))
    .option('--type-prefix <prefix>', 'eventtypes: only those whose type starts with it')
    .option(
      '--reference <kind/name>',
      'eventtypes: only those of this Broker or Channel, e.g. broker/default',
    )
    .addOption(serverOption())
    .addHelpText(
      'after',
      '\nExamples:\n  trellis get brokers\n  trellis get trigger my-trigger -o yaml\n  trellis get triggers -A -o wide',
    )
    .action(
      async (
        kindName: string,
        name: string | undefined,
        opts: {
          namespace: string;
          allNamespaces?: boolean;
          output?: string;
          server: string;
          typePrefix?: string;
          reference?: string;
        },
      ) => {
        try {
          const kind = kindOrFail(kindName);
          const client = new AdminClient(opts.server);
          const items = name
            ? [await client.get(kind, opts.namespace, name)]
            : await client.list(kind, opts.allNamespaces ? undefined : opts.namespace, {
                ...(opts.typePrefix !== undefined ? { 'type-prefix': opts.typePrefix } : {}),
                ...(opts.reference !== undefined ? { reference: opts.reference } : {}),
              });
          if (opts.output === 'yaml' || opts.output === 'json') {
            const v = name ? items[0] : { apiVersion: 'v1', kind: 'List', items };
            process.stdout.write(`${escapeControl(formatObject(v, opts.output), true)}\n`);
            return;
          }
          if (items.length === 0) {
            process.stderr.write(
              `No resources found in ${opts.allNamespaces ? 'any' : opts.namespace} namespace.\n`,
            );
            return;
          }
          const wide = opts.output === 'wide';
          // Wide tables of what delivers show the live counts and lag.
          const stats = wide && DELIVERING.has(kind.kind) ? await client.stats() : undefined;
          if (stats !== undefined)
            stats.subscriptions = stats.subscriptions.filter((x) => x.kind === kind.kind);
          process.stdout.write(
            `${escapeControl(formatTable(kind.kind, items, { wide, allNamespaces: !!opts.allNamespaces, stats }), true)}\n`,
          );
        } catch (err) {
          fail(err);
        }
      },
    );

  program
    .command('describe')
    .description('Show one resource in detail, with its conditions.')
    .argument('<kind>', 'broker or trigger')
    .argument('<name>', 'the resource')
    .addOption(nsOption())
    .addOption(serverOption())
    .addHelpText('after', '\nExample:\n  trellis describe trigger my-trigger -n shop')
    .action(async (kindName: string, name: string, opts: { namespace: string; server: string }) => {
      try {
        const r = await new AdminClient(opts.server).get(kindOrFail(kindName), opts.namespace, name);
        process.stdout.write(`${escapeControl(formatDescribe(r), true)}\n`);
      } catch (err) {
        fail(err);
      }
    });

  program
    .command('delete')
    .description('Delete a resource by kind and name, or every resource in a file.')
    .argument('[kind]', 'broker or trigger')
    .argument('[name]', 'the resource')
    .option('-f, --filename <file...>', 'delete the resources a file describes')
    .addOption(nsOption())
    .addOption(serverOption())
    .addHelpText('after', '\nExamples:\n  trellis delete trigger my-trigger\n  trellis delete -f broker.yaml')
    .action(
      async (
        kindName: string | undefined,
        name: string | undefined,
        opts: { filename?: string[]; namespace: string; server: string },
      ) => {
        const client = new AdminClient(opts.server);
        const targets: { kind: ReturnType<typeof kindOrFail>; ns: string; name: string }[] = [];
        try {
          if (opts.filename) {
            for (const f of opts.filename) {
              for (const doc of parseDocuments(readInput(f))) {
                if (!isObject(doc) || !isObject(doc['metadata']))
                  throw new Error(`${f}: a document has no metadata`);
                const meta = doc['metadata'];
                targets.push({
                  kind: kindOrFail(String(doc['kind'] ?? '')),
                  ns: typeof meta['namespace'] === 'string' ? meta['namespace'] : opts.namespace,
                  name: String(meta['name']),
                });
              }
            }
          } else {
            if (!kindName || !name) throw new InvalidArgumentError('give KIND and NAME, or -f FILE');
            targets.push({ kind: kindOrFail(kindName), ns: opts.namespace, name });
          }
        } catch (err) {
          fail(err);
        }
        let failed = 0;
        for (const t of targets) {
          try {
            await client.delete(t.kind, t.ns, t.name);
            process.stdout.write(`${qualified(t.kind)} "${t.name}" deleted\n`);
          } catch (err) {
            if (err instanceof ApiError && err.status === 0) fail(err);
            process.stderr.write(`error: ${(err as Error).message}\n`);
            failed++;
          }
        }
        if (failed > 0) process.exit(1);
      },
    );

  program
    .command('send')
    .description('Send one CloudEvent to a Broker (binary mode).')
    .requiredOption('--broker <ns/name>', 'the Broker, as NAMESPACE/NAME or NAME (with -n)')
    .requiredOption('--type <type>', 'the event type')
    .requiredOption('--source <source>', 'the event source (a URI-reference)')
    .option('--id <id>', 'the event id (default: a random UUID)')
    .option('--subject <subject>', 'the event subject')
    .option('--data <json>', 'JSON data')
    .option('--data-file <file>', 'data read from a file')
    .option('--content-type <type>', 'the data content type (default application/json)')
    .option('-e, --extension <name=value...>', 'extension attributes')
    .addOption(nsOption())
    .addOption(serverOption())
    .addHelpText(
      'after',
      `\nExamples:\n  trellis send --broker default/default --type order.created --source /shop --data '{"id":42}'\n  trellis send --broker default --type file.uploaded --source cli --data-file photo.jpg --content-type image/jpeg`,
    )
    .action(async (opts: Record<string, string | string[] | undefined>) => {
      try {
        const [ns, broker] = String(opts['broker']).includes('/')
          ? (String(opts['broker']).split('/', 2) as [string, string])
          : [String(opts['namespace']), String(opts['broker'])];
        const attrs = attributesFromFlags(opts, (opts['id'] as string | undefined) ?? randomUUID());
        let data: Buffer | undefined;
        if (opts['data'] !== undefined && opts['dataFile'] !== undefined)
          throw new InvalidArgumentError('give --data or --data-file, not both');
        if (opts['data'] !== undefined) {
          try {
            JSON.parse(String(opts['data']));
          } catch {
            throw new InvalidArgumentError(
              `--data must be JSON (quote strings: '"text"'); for other data use --data-file and --content-type`,
            );
          }
          data = Buffer.from(String(opts['data']));
        } else if (opts['dataFile'] !== undefined) data = readFileSync(String(opts['dataFile']));
        if (data !== undefined)
          attrs['datacontenttype'] = (opts['contentType'] as string | undefined) ?? 'application/json';
        const event: CloudEvent = data === undefined ? { attrs } : { attrs, data };
        await new AdminClient(String(opts['server'])).send(ns, broker, event);
        process.stdout.write(`event ${String(attrs['id'])} accepted by broker ${ns}/${broker}\n`);
      } catch (err) {
        fail(err);
      }
    });

  registerExplain(program, serverOption, nsOption);
  registerRun(program, serverOption, nsOption, fail);
  registerSubscribe(program, serverOption, nsOption, fail);

  program
    .command('display')
    .description("A sink that prints every event it receives, like Knative's event-display.")
    .addOption(new Option('--port <port>', 'port to listen on').env('TRELLIS_DISPLAY_PORT').default('9090'))
    .addOption(
      new Option('--host <host>', 'address to listen on').env('TRELLIS_DISPLAY_HOST').default('127.0.0.1'),
    )
    .addHelpText(
      'after',
      '\nExample:\n  trellis display --port 9090    # then point a Trigger at uri: http://127.0.0.1:9090/',
    )
    .action(async (opts: { port: string; host: string }) => {
      try {
        await runDisplay(opts.host, Number(opts.port));
      } catch (err) {
        fail(err);
      }
    });
  return program;
}

buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => fail(err));
