/**
 * What every connector's runtime shares: a runner per source or sink resource (restarted when the
 * resource changes, stopped when it goes), publishing through a sink's runner, and reading credentials
 * from the files and environment variables a resource names (errors name them, never their values).
 * @module
 */
import { readFileSync } from 'node:fs';
import type { CloudEvent } from '../cloudevents/event.js';
import type { Logger } from '../dataplane/routes.js';
import { TrellisError } from '../errors.js';
import type { ConnectionState } from '../resources/connector-spec.js';
import type { ResourceObject } from '../store/types.js';

export interface ConnectorDeps {
  /** Stores events in a stream (ingress): resolves once durable. */
  accept(stream: string, events: CloudEvent[]): Promise<void>;
  logger: Logger;
  /** Records the connection state in the resource's status. */
  writeConnection(o: ResourceObject, state: ConnectionState): Promise<void>;
}

/** One running source or sink. */
export interface Runner {
  signature: string;
  o: ResourceObject;
  stop(): Promise<void>;
  /** Set on a sink's runner once it can publish. */
  publish?: ((events: CloudEvent[]) => Promise<void>) | undefined;
}

/** The stream (for a source) or address path (for a sink) of a connector resource: `natssources/NS/NAME`. */
export function connectorKey(o: ResourceObject): string {
  return `${o.kind.toLowerCase()}s/${o.metadata.namespace}/${o.metadata.name}`;
}

/** A file's contents, trimmed; the error names the file and what it was for. */
export function secretFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new Error(
      `cannot read the ${what} file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

/** An environment variable's value; the error names the variable and what it was for. */
export function secretEnv(name: string, what: string): string {
  const v = process.env[name];
  if (v === undefined || v === '') throw new Error(`the environment variable ${name} (${what}) is not set`);
  return v;
}

/** A password from a file or an environment variable, when the credentials name one. */
export function passwordOf(
  auth: { passwordFile?: string; passwordEnv?: string } | undefined,
): string | undefined {
  if (auth?.passwordFile !== undefined) return secretFile(auth.passwordFile, 'password');
  if (auth?.passwordEnv !== undefined) return secretEnv(auth.passwordEnv, 'password');
  return undefined;
}

/** The `trellisinvalid` extension value: why a message that claimed to be a CloudEvent was wrapped. */
export function invalidReason(message: string): string {
  return message.replace(/[^\x20-\x7e]/g, '?').slice(0, 500);
}

/**
 * A message that is not a CloudEvent, as one: the attributes the connector names it by, its payload as
 * data, its content type (when it is a media type) as `datacontenttype`, and, when it claimed to be a
 * CloudEvent and was not, the reason in `trellisinvalid`.
 */
export function wrapMessage(
  names: { id: string; source: string; type: string; subject?: string; time?: string },
  payload: Buffer | null,
  contentType: string | undefined,
  invalid?: string,
): CloudEvent {
  const attrs: CloudEvent['attrs'] = {
    specversion: '1.0',
    id: names.id,
    source: names.source,
    type: names.type,
    ...(names.subject !== undefined ? { subject: names.subject } : {}),
    time: names.time ?? new Date().toISOString(),
  };
  if (contentType !== undefined && /^[!-~]+\/[!-~]+/.test(contentType))
    attrs['datacontenttype'] = contentType;
  if (invalid !== undefined) attrs['trellisinvalid'] = invalidReason(invalid);
  return payload !== null && payload.length > 0 ? { attrs, data: payload } : { attrs };
}

/**
 * True when Trellis refused an event for good (it breaks a rule, or is too large): the source drops the
 * message (logged) instead of offering it again. Anything else (behind, store away, stream not ready
 * yet, a failure) is tried again, and the message stays with the external system meanwhile.
 */
export function refusedForGood(err: unknown): boolean {
  if (!(err instanceof TrellisError)) return false;
  return (
    err.status >= 400 && err.status < 500 && err.status !== 404 && err.status !== 408 && err.status !== 429
  );
}

/**
 * The runners of one connector: `start` is the connector's own (connect, consume or get ready to
 * publish, report the state); the rest is the same for all.
 */
export abstract class ConnectorRunners {
  private readonly runners = new Map<string, Runner>();
  protected closed = false;

  constructor(protected readonly deps: ConnectorDeps) {}

  /** The sink kind's name, for messages. */
  protected abstract readonly sinkKind: string;

  /** Starts a runner for a resource (connecting in the background). */
  protected abstract start(o: ResourceObject, signature: string): Runner;

  /** False for a resource that must not run (a source whose sink does not resolve yet, say). */
  protected runnable(o: ResourceObject): boolean {
    return !o.kind.endsWith('Source') || o.status?.['sinkUri'] !== undefined;
  }

  /** Starts, restarts (on change) and stops runners to match the resources. */
  update(resources: Iterable<ResourceObject>): void {
    if (this.closed) return;
    const seen = new Set<string>();
    for (const o of resources) {
      if (!this.runnable(o)) continue;
      const key = connectorKey(o);
      seen.add(key);
      const signature = JSON.stringify([o.metadata.uid, o.metadata.generation]);
      const cur = this.runners.get(key);
      if (cur?.signature === signature) {
        cur.o = o;
        continue;
      }
      if (cur !== undefined) void cur.stop();
      this.runners.set(key, this.start(o, signature));
    }
    for (const [key, r] of this.runners) {
      if (seen.has(key)) continue;
      this.runners.delete(key);
      void r.stop();
    }
  }

  /** Publishes events through a sink; rejects with the TrellisError the HTTP route answers with. */
  async publish(key: string, events: CloudEvent[]): Promise<void> {
    const r = this.runners.get(key);
    if (r === undefined)
      throw new TrellisError(
        'TRELLIS_ERR_DESTINATION_NOT_FOUND',
        `no ${this.sinkKind} takes events at /${key}`,
      );
    if (r.publish === undefined)
      throw new TrellisError(
        'TRELLIS_ERR_CONNECTOR_FAILED',
        `${this.sinkKind} ${r.o.metadata.namespace}/${r.o.metadata.name} is not connected yet; see its status`,
      );
    await r.publish(events);
  }

  /** Records a runner's connection state, logging (not throwing) when that fails. */
  protected report(runner: Runner, state: ConnectionState): Promise<void> {
    return this.deps.writeConnection(runner.o, state).catch((err: unknown) => {
      this.deps.logger.warn(
        { resource: `${runner.o.kind} ${runner.o.metadata.namespace}/${runner.o.metadata.name}`, err },
        'recording the connection state failed',
      );
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.runners.values()];
    this.runners.clear();
    await Promise.all(all.map((r) => r.stop()));
  }
}
