/**
 * One supervisor for every local process Trellis runs (ContainerSources and Knative Services): starts
 * each with its environment, writes its output into the server log a line at a time, restarts it with
 * backoff when it exits, reports its state, and stops it (SIGTERM, then SIGKILL) when its resource goes or
 * the server stops. A program that serves (a Knative Service) gets a port in `PORT` (the one its container
 * names, else a free one, kept across restarts) and is reported listening once it accepts a connection
 * there. With a store shared by several processes, each runs in the one Trellis process that holds its
 * lease. Processes run only when the server was started with `--allow-commands`.
 * @module
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from '../dataplane/routes.js';
import {
  type ContainerSourceSpec,
  type ProcessSpec,
  type ProcessState,
  processOf,
} from '../resources/containersource.js';
import { type KnativeServiceSpec, serviceProcessOf } from '../resources/knative-service.js';
import type { ResourceObject, Store } from '../store/types.js';

/** A process to run for a resource. */
export interface Workload {
  o: ResourceObject;
  /** What runs it, for the log and the lease: `containersource`, `service`. */
  role: string;
  spec: ProcessSpec;
  /** Set in its environment besides the container's own (K_SINK, K_SERVICE, ...). */
  env: Record<string, string>;
  /** When it changes, the process is restarted. */
  signature: string;
  /** It serves HTTP on `PORT`: the port its container names, or one Trellis picks. */
  serves?: { containerPort?: number | undefined } | undefined;
}

export interface SupervisorDeps {
  logger: Logger;
  /** Run processes at all (`serve --allow-commands`). */
  allowCommands: boolean;
  holdLease?: Store['holdLease'];
  /** Records a resource's process state in its status. */
  writeState(o: ResourceObject, state: ProcessState): Promise<void>;
  /** Names this Trellis process in `status.process.runner`. */
  runner: string;
  /** The host a serving process's address names (this machine as others reach it). */
  host: string;
  /**
   * When senders must authenticate: a token for a process's `K_SINK` (undefined when it needs none), as
   * the resource's own identity.
   */
  tokenFor?: ((o: ResourceObject, sinkUri: string) => Promise<string | undefined>) | undefined;
}

/** The environment variables of the server that a supervised process gets; nothing else (no secrets). */
const PASSED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'USER'];
const FIRST_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 60_000;
/** A process that ran this long before exiting starts again at the first backoff. */
const HEALTHY_MS = 60_000;
const STOP_GRACE_MS = 5000;
const MAX_LINE = 4096;
/** A serving process is probed for a connection this often at first, then less often, up to 1 s. */
const FIRST_PROBE_MS = 50;

interface Entry extends Workload {
  child?: ChildProcess | undefined;
  startedAt: number;
  restarts: number;
  backoffMs: number;
  timer?: NodeJS.Timeout | undefined;
  /** Stopping for good (deleted, changed, lease lost, shutdown): no restart. */
  stopping: boolean;
  stopLease?: (() => void) | undefined;
  exited?: Promise<void> | undefined;
  /** A serving process's port, chosen at its first start and kept. */
  port?: number | undefined;
  listening?: boolean;
  /** Looking for a free port (or minting a token) before it starts. */
  starting?: boolean;
  /** Rewrites the token file for K_SINK. */
  tokenTimer?: NodeJS.Timeout | undefined;
  /** Counts stops: a start that was waiting for a port gives up when it changed. */
  epoch: number;
}

export class ProcessSupervisor {
  private readonly entries = new Map<string, Entry>();
  /** Where token files are written (0700, made when first needed). */
  private tokenDir: string | undefined;
  private closed = false;

  constructor(private readonly deps: SupervisorDeps) {}

  private label(e: Entry): Record<string, string> {
    return { [e.role]: `${e.o.metadata.namespace}/${e.o.metadata.name}` };
  }

  /** Brings the processes in line with the workloads: starts, restarts on change, stops. */
  update(workloads: Iterable<Workload>): void {
    if (this.closed) return;
    const seen = new Set<string>();
    for (const w of workloads) {
      if (w.spec.command.length === 0) continue;
      const uid = w.o.metadata.uid;
      seen.add(uid);
      const cur = this.entries.get(uid);
      if (cur !== undefined && cur.signature === w.signature) {
        cur.o = w.o;
        continue;
      }
      if (cur !== undefined) void this.retire(cur);
      const e: Entry = {
        ...w,
        startedAt: 0,
        restarts: 0,
        backoffMs: FIRST_BACKOFF_MS,
        stopping: false,
        epoch: 0,
        // A port Trellis picked before (this run, or the last one) is tried again: the address stays.
        port:
          w.serves?.containerPort ?? cur?.port ?? (w.o.status?.['process'] as ProcessState | undefined)?.port,
      };
      this.entries.set(uid, e);
      if (!this.deps.allowCommands) {
        void this.report(e, {
          state: 'Disabled',
          restarts: 0,
          message: `this server does not run commands: start it with --allow-commands (see docs/${e.role === 'service' ? 'knative-service' : e.role}.md)`,
        });
        continue;
      }
      if (this.deps.holdLease === undefined) this.start(e);
      else
        e.stopLease = this.deps.holdLease(`${e.role}/${uid}`, (held) => {
          if (held && !e.stopping && e.child === undefined && e.timer === undefined && !e.starting)
            this.start(e);
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
    const where =
      e.serves !== undefined && e.port !== undefined
        ? { port: e.port, url: `http://${this.deps.host}:${e.port}/`, listening: e.listening === true }
        : {};
    return this.deps
      .writeState(e.o, { ...state, ...where, runner: this.deps.runner })
      .catch((err: unknown) =>
        this.deps.logger.warn({ err, ...this.label(e) }, 'recording the process state failed'),
      );
  }

  private start(e: Entry): void {
    e.timer = undefined;
    if (e.stopping || this.closed) return;
    const needsPort = e.serves !== undefined && e.serves.containerPort === undefined;
    const needsToken = this.deps.tokenFor !== undefined && e.env['K_SINK'] !== undefined;
    if (!needsPort && !needsToken) {
      this.spawn(e);
      return;
    }
    const epoch = e.epoch;
    e.starting = true;
    void this.prepare(e, needsPort, needsToken).then(
      () => {
        e.starting = false;
        if (e.epoch === epoch) this.spawn(e); // else stopped meanwhile
      },
      (err: unknown) => {
        e.starting = false;
        if (e.epoch === epoch) this.backOff(e, (err as Error).message);
      },
    );
  }

  /**
   * What a start waits for: a port Trellis picks (the one it had, while it is free, else a new one), and
   * a token file for `K_SINK` when senders must authenticate (rewritten every 20 minutes; the token is
   * valid for an hour), named in `K_OIDC_TOKEN_FILE`.
   */
  private async prepare(e: Entry, needsPort: boolean, needsToken: boolean): Promise<void> {
    if (needsPort) {
      try {
        e.port = await freePort(e.port);
      } catch (err) {
        throw new Error(`no free port to give the process: ${(err as Error).message}`);
      }
    }
    if (!needsToken) return;
    const write = async () => {
      const token = await this.deps.tokenFor!(e.o, e.env['K_SINK']!);
      if (token === undefined) return false;
      this.tokenDir ??= mkdtempSync(join(tmpdir(), 'trellis-tokens-'));
      const file = join(this.tokenDir, `${e.o.metadata.uid}.token`);
      writeFileSync(file, token, { mode: 0o600 });
      e.env['K_OIDC_TOKEN_FILE'] = file;
      return true;
    };
    if (
      !(await write().catch((err: unknown) =>
        Promise.reject(new Error(`no token for K_SINK: ${(err as Error).message}`)),
      ))
    )
      return;
    if (e.tokenTimer === undefined) {
      e.tokenTimer = setInterval(() => {
        write().catch((err: unknown) =>
          this.deps.logger.warn(
            { ...this.label(e), err: (err as Error).message },
            'refreshing the token file failed',
          ),
        );
      }, 20 * 60_000);
      e.tokenTimer.unref();
    }
  }

  private spawn(e: Entry): void {
    if (e.stopping || this.closed) return;
    const env: NodeJS.ProcessEnv = {};
    for (const k of PASSED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k];
    for (const { name, value } of e.spec.env) env[name] = value;
    Object.assign(env, e.env);
    if (e.serves !== undefined) env['PORT'] = String(e.port);
    e.listening = false;
    const [cmd, ...rest] = e.spec.command;
    const log = this.label(e);
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
      this.deps.logger.info(
        { ...log, pid: child.pid, command: cmd, ...(e.serves ? { port: e.port } : {}) },
        'process started',
      );
      void this.report(e, { state: 'Running', pid: child.pid!, restarts: e.restarts });
      if (e.serves !== undefined) void this.probe(e, child);
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

  /**
   * Knative's default readiness probe: a TCP connection to the port. Tried until one succeeds or the
   * process exits, then reported; the address turns Ready.
   */
  private async probe(e: Entry, child: ChildProcess): Promise<void> {
    let wait = FIRST_PROBE_MS;
    while (e.child === child && !e.stopping && !this.closed) {
      if (await accepts(e.port!)) {
        if (e.child !== child) return;
        e.listening = true;
        this.deps.logger.info({ ...this.label(e), port: e.port }, 'process is listening');
        await this.report(e, { state: 'Running', pid: child.pid!, restarts: e.restarts });
        return;
      }
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(1000, wait * 2);
    }
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
    e.epoch++;
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
    if (e.tokenTimer !== undefined) clearInterval(e.tokenTimer);
    e.tokenTimer = undefined;
    const file = e.env['K_OIDC_TOKEN_FILE'];
    if (file !== undefined) rmSync(file, { force: true });
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

/** A ContainerSource's process, once its sink resolves: `K_SINK`, `K_CE_OVERRIDES`. */
export function containerSourceWorkload(o: ResourceObject): Workload[] {
  const sinkUri = o.status?.['sinkUri'] as string | undefined;
  if (sinkUri === undefined) return [];
  const ce = o.spec['ceOverrides'];
  return [
    {
      o,
      role: 'containersource',
      spec: processOf(o.spec as unknown as ContainerSourceSpec),
      env: { K_SINK: sinkUri, ...(ce !== undefined ? { K_CE_OVERRIDES: JSON.stringify(ce) } : {}) },
      signature: JSON.stringify([o.metadata.generation, sinkUri, ce ?? null]),
    },
  ];
}

/** A Knative Service's process: `PORT`, and Knative's `K_SERVICE`, `K_CONFIGURATION`, `K_REVISION`. */
export function knativeServiceWorkload(o: ResourceObject): Workload {
  const spec = serviceProcessOf(o.spec as unknown as KnativeServiceSpec);
  const { name } = o.metadata;
  return {
    o,
    role: 'service',
    spec,
    env: {
      K_SERVICE: name,
      K_CONFIGURATION: name,
      K_REVISION: `${name}-${String(o.metadata.generation).padStart(5, '0')}`,
    },
    signature: JSON.stringify([o.metadata.generation]),
    serves: { containerPort: spec.containerPort },
  };
}

/** A TCP port on this machine no one listens on: `preferred` while it is free, else one the system gives. */
function freePort(preferred: number | undefined): Promise<number> {
  const tryPort = (port: number) =>
    new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(port, () => {
        const got = (srv.address() as { port: number }).port;
        srv.close(() => resolve(got));
      });
    });
  return preferred === undefined ? tryPort(0) : tryPort(preferred).catch(() => tryPort(0));
}

/** True when something accepts a TCP connection at 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}
