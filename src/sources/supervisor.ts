/**
 * One supervisor for every local process Trellis runs (ContainerSources today): starts each with its
 * environment, writes its output into the server log a line at a time, restarts it with backoff when it
 * exits, reports its state, and stops it (SIGTERM, then SIGKILL) when its resource goes or the server
 * stops. With a store shared by several processes, each source runs in the one Trellis process that
 * holds its lease. Processes run only when the server was started with `--allow-commands`.
 * @module
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Logger } from '../dataplane/routes.js';
import {
  type ContainerSourceSpec,
  type ProcessSpec,
  type ProcessState,
  processOf,
} from '../resources/containersource.js';
import type { ResourceObject, Store } from '../store/types.js';

export interface SupervisorDeps {
  logger: Logger;
  /** Run processes at all (`serve --allow-commands`). */
  allowCommands: boolean;
  holdLease?: Store['holdLease'];
  /** Records a source's process state in its status. */
  writeState(o: ResourceObject, state: ProcessState): Promise<void>;
  /** Names this Trellis process in `status.process.runner`. */
  runner: string;
}

/** The environment variables of the server that a supervised process gets; nothing else (no secrets). */
const PASSED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'USER'];
const FIRST_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 60_000;
/** A process that ran this long before exiting starts again at the first backoff. */
const HEALTHY_MS = 60_000;
const STOP_GRACE_MS = 5000;
const MAX_LINE = 4096;

interface Entry {
  o: ResourceObject;
  signature: string;
  spec: ProcessSpec;
  child?: ChildProcess | undefined;
  startedAt: number;
  restarts: number;
  backoffMs: number;
  timer?: NodeJS.Timeout | undefined;
  /** Stopping for good (deleted, changed, lease lost, shutdown): no restart. */
  stopping: boolean;
  stopLease?: (() => void) | undefined;
  exited?: Promise<void> | undefined;
}

export class ProcessSupervisor {
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(private readonly deps: SupervisorDeps) {}

  private label(o: ResourceObject): string {
    return `${o.metadata.namespace}/${o.metadata.name}`;
  }

  /** Brings the processes in line with the ContainerSources: starts, restarts on change, stops. */
  update(sources: Iterable<ResourceObject>): void {
    if (this.closed) return;
    const seen = new Set<string>();
    for (const o of sources) {
      const sinkUri = o.status?.['sinkUri'] as string | undefined;
      const spec = processOf(o.spec as unknown as ContainerSourceSpec);
      if (sinkUri === undefined || spec.command.length === 0) continue;
      const uid = o.metadata.uid;
      seen.add(uid);
      const signature = JSON.stringify([o.metadata.generation, sinkUri, o.spec['ceOverrides'] ?? null]);
      const cur = this.entries.get(uid);
      if (cur !== undefined && cur.signature === signature) {
        cur.o = o;
        continue;
      }
      if (cur !== undefined) void this.retire(cur);
      const e: Entry = {
        o,
        signature,
        spec,
        startedAt: 0,
        restarts: 0,
        backoffMs: FIRST_BACKOFF_MS,
        stopping: false,
      };
      this.entries.set(uid, e);
      if (!this.deps.allowCommands) {
        void this.report(e, {
          state: 'Disabled',
          restarts: 0,
          message:
            'this server does not run commands: start it with --allow-commands (see docs/containersource.md)',
        });
        continue;
      }
      if (this.deps.holdLease === undefined) this.start(e);
      else
        e.stopLease = this.deps.holdLease(`containersource/${uid}`, (held) => {
          if (held && !e.stopping && e.child === undefined && e.timer === undefined) this.start(e);
          if (!held) this.kill(e);
        });
    }
    for (const [uid, e] of this.entries) {
      if (seen.has(uid)) continue;
      this.entries.delete(uid);
      void this.retire(e);
    }
  }

  private report(e: Entry, state: ProcessState): Promise<void> {
    return this.deps
      .writeState(e.o, { ...state, runner: this.deps.runner })
      .catch((err: unknown) =>
        this.deps.logger.warn(
          { err, containersource: this.label(e.o) },
          'recording the process state failed',
        ),
      );
  }

  private start(e: Entry): void {
    e.timer = undefined;
    if (e.stopping || this.closed) return;
    const o = e.o;
    const env: NodeJS.ProcessEnv = {};
    for (const k of PASSED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k];
    for (const { name, value } of e.spec.env) env[name] = value;
    env['K_SINK'] = String(o.status?.['sinkUri']);
    const ce = o.spec['ceOverrides'];
    if (ce !== undefined) env['K_CE_OVERRIDES'] = JSON.stringify(ce);
    const [cmd, ...rest] = e.spec.command;
    const log = { containersource: this.label(o) };
    let child: ChildProcess;
    try {
      child = spawn(cmd!, [...rest, ...e.spec.args], {
        env,
        cwd: e.spec.workingDir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      this.backOff(e, `cannot start ${cmd}: ${(err as Error).message}`);
      return;
    }
    e.child = child;
    e.startedAt = Date.now();
    let resolveExit!: () => void;
    e.exited = new Promise((r) => {
      resolveExit = r;
    });
    for (const [stream, src] of [
      ['stdout', child.stdout],
      ['stderr', child.stderr],
    ] as const) {
      if (src === null) continue;
      createInterface({ input: src, crlfDelay: Number.POSITIVE_INFINITY }).on('line', (line) => {
        this.deps.logger.info(
          { ...log, stream, pid: child.pid },
          line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)}… (${line.length} characters)` : line,
        );
      });
    }
    child.once('spawn', () => {
      this.deps.logger.info({ ...log, pid: child.pid, command: cmd }, 'process started');
      void this.report(e, { state: 'Running', pid: child.pid!, restarts: e.restarts });
    });
    child.once('error', (err) => {
      // Not started (no such command, not executable): 'exit' does not follow.
      if (child.pid === undefined) {
        e.child = undefined;
        resolveExit();
        this.backOff(e, `cannot start ${cmd}: ${err.message}`);
      }
    });
    child.once('exit', (code, signal) => {
      e.child = undefined;
      resolveExit();
      const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
      if (e.stopping || this.closed) {
        void this.report(e, { state: 'Stopped', restarts: e.restarts, lastExit: how });
        return;
      }
      this.deps.logger.warn({ ...log, pid: child.pid }, `process ${how}`);
      if (Date.now() - e.startedAt >= HEALTHY_MS) e.backoffMs = FIRST_BACKOFF_MS;
      this.backOff(e, `${cmd} ${how}`, how);
    });
  }

  /** Schedules a restart after the current backoff, and doubles it (up to a minute). */
  private backOff(e: Entry, message: string, lastExit?: string): void {
    if (e.stopping || this.closed) return;
    const wait = e.backoffMs;
    e.backoffMs = Math.min(MAX_BACKOFF_MS, e.backoffMs * 2);
    e.restarts++;
    void this.report(e, {
      state: 'BackOff',
      restarts: e.restarts,
      message: `${message}; starting again in ${Math.round(wait / 1000)} s`,
      ...(lastExit !== undefined ? { lastExit } : {}),
    });
    e.timer = setTimeout(() => this.start(e), wait);
  }

  /** Stops the process (SIGTERM, SIGKILL after a grace period) and resolves when it is gone. */
  private kill(e: Entry): Promise<void> {
    if (e.timer !== undefined) clearTimeout(e.timer);
    e.timer = undefined;
    const child = e.child;
    if (child === undefined) return Promise.resolve();
    const stopping = e.stopping;
    e.stopping = true;
    child.kill('SIGTERM');
    const hard = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    return (e.exited ?? Promise.resolve()).finally(() => {
      clearTimeout(hard);
      // A lease lost is not a stop for good: the process may run here again when the lease comes back.
      e.stopping = stopping;
    });
  }

  private async retire(e: Entry): Promise<void> {
    e.stopping = true;
    e.stopLease?.();
    await this.kill(e);
    e.stopping = true;
  }

  /** Stops every process (server shutdown) and waits for them to exit. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(all.map((e) => this.retire(e)));
  }
}
