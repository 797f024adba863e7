/**
 * Runs JobSink jobs: each event a JobSink gets starts its job's command once, with the event written as
 * JSON (structured format) to a private file whose path stands in for Knative's
 * `/etc/jobsink-event/event` in the command line and is given in `K_EVENT_PATH`. Like Knative's JobSink,
 * an event (by source and id) starts one job however often it is delivered; the answer is `202` once the
 * job started, before it finishes. Jobs run only with `--allow-commands`.
 * @module
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { CloudEvent } from '../cloudevents/event.js';
import { eventToJson } from '../cloudevents/json-format.js';
import type { Logger } from '../dataplane/routes.js';
import { TrellisError } from '../errors.js';
import { isReady } from '../resources/conditions.js';
import type { ProcessSpec } from '../resources/containersource.js';
import { type JobSinkSpec, jobProcess, KNATIVE_EVENT_PATH } from '../resources/jobsink.js';
import type { ResourceObject } from '../store/types.js';

/** Jobs of one JobSink running at once; more are refused with 503 (the sender retries). */
const MAX_RUNNING = 64;
/** Events remembered per server to start one job per event (oldest forgotten first). */
const MAX_REMEMBERED = 10_000;
const PASSED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'USER'];
const MAX_LINE = 4096;

export class JobRunner {
  private readonly sinks = new Map<string, { o: ResourceObject; spec: ProcessSpec }>();
  private readonly notReady = new Map<string, string>();
  private readonly running = new Map<string, Set<ChildProcess>>();
  private readonly started = new Set<string>();
  private dir: string | undefined;
  private closed = false;

  constructor(private readonly logger: Logger) {}

  /** The JobSinks, from a reconciled snapshot. */
  update(jobSinks: Iterable<ResourceObject>): void {
    this.sinks.clear();
    this.notReady.clear();
    for (const o of jobSinks) {
      const key = `jobsinks/${o.metadata.namespace}/${o.metadata.name}`;
      if (isReady(o)) this.sinks.set(key, { o, spec: jobProcess(o.spec as unknown as JobSinkSpec) });
      else {
        const c = (o.status?.['conditions'] as { type: string; message?: string }[] | undefined)?.find(
          (x) => x.type === 'Ready',
        );
        this.notReady.set(key, c?.message ?? 'not Ready');
      }
    }
  }

  /** Starts a job per event not seen before; resolves once they started. */
  async run(key: string, events: CloudEvent[]): Promise<void> {
    const sink = this.sinks.get(key);
    if (sink === undefined) {
      const why = this.notReady.get(key);
      if (why !== undefined)
        throw new TrellisError('TRELLIS_ERR_DESTINATION_NOT_READY', `JobSink /${key} is not Ready: ${why}`);
      throw new TrellisError('TRELLIS_ERR_DESTINATION_NOT_FOUND', `no JobSink takes events at /${key}`);
    }
    for (const e of events) {
      const id = `${key}\n${String(e.attrs['source'])}\n${String(e.attrs['id'])}`;
      if (this.started.has(id)) continue;
      const set = this.running.get(key) ?? new Set();
      if (set.size >= MAX_RUNNING)
        throw new TrellisError(
          'TRELLIS_ERR_OVERLOADED',
          `JobSink /${key} runs ${MAX_RUNNING} jobs already; retry after the Retry-After delay`,
          { retryAfter: 1 },
        );
      await this.start(key, sink, e, set);
      this.started.add(id);
      if (this.started.size > MAX_REMEMBERED) this.started.delete(this.started.values().next().value!);
    }
  }

  private start(
    key: string,
    sink: { o: ResourceObject; spec: ProcessSpec },
    e: CloudEvent,
    set: Set<ChildProcess>,
  ): Promise<void> {
    if (this.closed) throw new TrellisError('TRELLIS_ERR_SHUTTING_DOWN', 'the server is shutting down');
    this.dir ??= mkdtempSync(join(tmpdir(), 'trellis-jobs-'));
    const file = join(this.dir, `${randomUUID()}.json`);
    writeFileSync(file, JSON.stringify(eventToJson(e)), { mode: 0o600 });
    const env: NodeJS.ProcessEnv = {};
    for (const k of PASSED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k];
    for (const { name, value } of sink.spec.env) env[name] = value;
    env['K_EVENT_PATH'] = file;
    const swap = (s: string) => s.split(KNATIVE_EVENT_PATH).join(file);
    const [cmd, ...rest] = sink.spec.command.map(swap);
    const log = { jobsink: key.slice('jobsinks/'.length), event: String(e.attrs['id']) };
    return new Promise((resolve, reject) => {
      const child = spawn(cmd!, [...rest, ...sink.spec.args.map(swap)], {
        env,
        cwd: sink.spec.workingDir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const done = () => {
        set.delete(child);
        try {
          unlinkSync(file);
        } catch {
          // already gone
        }
      };
      child.once('error', (err) => {
        done();
        reject(
          new TrellisError(
            'TRELLIS_ERR_CONNECTOR_FAILED',
            `the job of JobSink /${key} did not start: ${err.message}`,
          ),
        );
      });
      child.once('spawn', () => {
        set.add(child);
        this.running.set(key, set);
        this.logger.info({ ...log, pid: child.pid }, 'job started');
        resolve();
      });
      for (const [stream, src] of [
        ['stdout', child.stdout],
        ['stderr', child.stderr],
      ] as const) {
        if (src === null) continue;
        createInterface({ input: src, crlfDelay: Number.POSITIVE_INFINITY }).on('line', (line) =>
          this.logger.info(
            { ...log, stream, pid: child.pid },
            line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)}… (${line.length} characters)` : line,
          ),
        );
      }
      child.once('exit', (code, signal) => {
        done();
        const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
        if (code === 0) this.logger.info({ ...log, pid: child.pid }, 'job succeeded');
        else this.logger.warn({ ...log, pid: child.pid }, `job failed: it ${how}`);
      });
    });
  }

  /** Stops running jobs (SIGTERM) and removes their event files. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.running.values()].flatMap((s) => [...s]);
    await Promise.all(
      all.map(
        (c) =>
          new Promise<void>((r) => {
            if (c.exitCode !== null || c.signalCode !== null) return r();
            c.once('exit', () => r());
            c.kill('SIGTERM');
            setTimeout(() => c.kill('SIGKILL'), 5000).unref();
          }),
      ),
    );
    if (this.dir !== undefined) rmSync(this.dir, { recursive: true, force: true });
  }
}
