/**
 * Fires the scheduled sources: PingSources and timer IntegrationSources, one timer per Ready one
 * (croner for cron schedules, a timer for `@every` and timer periods).
 * Each firing is claimed first, in the store, by its scheduled time, with the store's optimistic
 * concurrency: a process restarted within the same second, or every process of a cluster, may try, and
 * exactly one stores the event. The event goes into the PingSource's own stream, from which the delivery
 * engine sends it to the sink with retries. A firing whose time passed while no process ran is not made
 * up (as Knative's PingSource).
 * @module
 */
import { randomUUID } from 'node:crypto';
import { Cron } from 'croner';
import type { CloudEvent } from '../cloudevents/event.js';
import type { Logger } from '../dataplane/routes.js';
import { isReady } from '../resources/conditions.js';
import { type IntegrationSourceSpec, timerEvent } from '../resources/integration.js';
import { type PingSourceSpec, parseSchedule, pingEvent, type Schedule } from '../resources/pingsource.js';
import { ConflictError, type ResourceObject, type ResourceStore } from '../store/types.js';

/** The store record of a scheduled source's last firing and count (not a kind users see: no API serves it). */
export const FIRING_KIND = 'PingSourceFiring';

export interface PingDeps {
  resources: ResourceStore;
  /** Stores events in a stream (ingress): resolves once durable. */
  accept(stream: string, events: CloudEvent[]): Promise<void>;
  logger: Logger;
}

interface Job {
  signature: string;
  obj: ResourceObject;
  stop(): void;
}

/** The stream a source's events are stored in (`pingsources/NS/NAME`, `integrationsources/NS/NAME`). */
export function sourceStream(o: ResourceObject): string {
  return `${o.kind.toLowerCase()}s/${o.metadata.namespace}/${o.metadata.name}`;
}

/** When a source fires: a PingSource's schedule, a timer IntegrationSource's period. */
function scheduleOf(o: ResourceObject): Schedule {
  if (o.kind === 'IntegrationSource')
    return { everyMs: (o.spec as unknown as IntegrationSourceSpec).timer!.period };
  const spec = o.spec as unknown as PingSourceSpec;
  return parseSchedule(spec.schedule, spec.timezone);
}

/** A timer IntegrationSource's repeatCount: how many events it sends in all. */
function limitOf(o: ResourceObject): number {
  if (o.kind !== 'IntegrationSource') return Number.POSITIVE_INFINITY;
  return (o.spec as unknown as IntegrationSourceSpec).timer?.repeatCount ?? Number.POSITIVE_INFINITY;
}

export class ScheduledSources {
  private readonly jobs = new Map<string, Job>();
  private stopped = false;

  constructor(private readonly deps: PingDeps) {}

  /** Brings the timers in line with the PingSources: new and changed ones (re)started, gone ones stopped. */
  update(sources: Iterable<ResourceObject>): void {
    if (this.stopped) return;
    const seen = new Set<string>();
    for (const o of sources) {
      if (!isReady(o)) continue;
      if (o.kind === 'IntegrationSource' && (o.spec as unknown as IntegrationSourceSpec).timer === undefined)
        continue;
      const uid = o.metadata.uid;
      seen.add(uid);
      const signature = `${o.metadata.generation}\n${JSON.stringify(scheduleOf(o))}`;
      const cur = this.jobs.get(uid);
      if (cur !== undefined && cur.signature === signature) {
        cur.obj = o;
        continue;
      }
      cur?.stop();
      try {
        this.jobs.set(uid, this.start(o, signature));
      } catch (err) {
        this.deps.logger.error(
          { err, pingsource: `${o.metadata.namespace}/${o.metadata.name}` },
          'cannot schedule',
        );
      }
    }
    for (const [uid, j] of this.jobs) {
      if (seen.has(uid)) continue;
      j.stop();
      this.jobs.delete(uid);
      // Gone, or not Ready: its record goes (a later firing is later than any recorded one anyway).
      void this.forget(j.obj);
    }
  }

  private start(o: ResourceObject, signature: string): Job {
    const schedule = scheduleOf(o);
    const job: Job = { signature, obj: o, stop: () => undefined };
    if ('everyMs' in schedule) {
      // At multiples of the interval since the epoch, so that every process agrees on the times.
      const ms = schedule.everyMs;
      let t: NodeJS.Timeout | undefined;
      const arm = () => {
        const now = Date.now();
        const next = (Math.floor(now / ms) + 1) * ms;
        t = setTimeout(() => {
          arm();
          void this.fire(job.obj, new Date(next));
        }, next - now);
      };
      arm();
      job.stop = () => clearTimeout(t);
    } else {
      // The scheduled time of each run (croner's own `currentRun` is when the timer went off).
      let due: Date | null = null;
      const c = new Cron(
        schedule.cron,
        schedule.timezone !== undefined ? { timezone: schedule.timezone } : {},
        (self: Cron) => {
          const at = due ?? new Date(Math.floor(Date.now() / 1000) * 1000);
          due = self.nextRun();
          void this.fire(job.obj, at);
        },
      );
      due = c.nextRun();
      job.stop = () => c.stop();
    }
    return job;
  }

  /**
   * Makes the firing scheduled at `at`, unless it was made already (here before a restart, or by another
   * process): resolves with true when this call stored the event.
   */
  async fire(o: ResourceObject, at: Date): Promise<boolean> {
    const { namespace, name, uid } = o.metadata;
    const label = { source: `${o.kind} ${namespace}/${name}`, at: at.toISOString() };
    try {
      const cur = await this.deps.resources.get(FIRING_KIND, namespace, uid);
      if (Number(cur?.spec['last'] ?? 0) >= at.getTime()) return false;
      const count = Number(cur?.spec['count'] ?? 0);
      if (count >= limitOf(o)) return false;
      await this.deps.resources.put(
        {
          apiVersion: 'trellis.dev/v1',
          kind: FIRING_KIND,
          metadata: {
            name: uid,
            namespace,
            uid,
            generation: 1,
            resourceVersion: '',
            creationTimestamp: new Date().toISOString(),
          },
          spec: { last: at.getTime(), count: count + 1, source: `${o.kind}/${name}` },
        },
        cur?.metadata.resourceVersion ?? '',
      );
    } catch (err) {
      if (err instanceof ConflictError) return false;
      this.deps.logger.error(
        { ...label, err },
        'recording a PingSource firing failed; this firing is skipped',
      );
      return false;
    }
    const event =
      o.kind === 'IntegrationSource' ? timerEvent(o, at, randomUUID()) : pingEvent(o, at, randomUUID());
    // The firing is claimed: store it, trying for a while if the store is briefly unavailable.
    for (let i = 0; ; i++) {
      try {
        await this.deps.accept(sourceStream(o), [event]);
        return true;
      } catch (err) {
        if (i >= 9 || this.stopped) {
          this.deps.logger.error({ ...label, err }, 'storing a scheduled event failed; this firing is lost');
          return false;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  private async forget(o: ResourceObject): Promise<void> {
    try {
      await this.deps.resources.delete(FIRING_KIND, o.metadata.namespace, o.metadata.uid);
    } catch {
      // another process removed it, or the store is down: it is a few bytes
    }
  }

  stop(): void {
    this.stopped = true;
    for (const j of this.jobs.values()) j.stop();
    this.jobs.clear();
  }
}
