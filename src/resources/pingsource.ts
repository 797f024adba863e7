/**
 * PingSource (`sources.knative.dev/v1`, v1beta2 accepted): sends an event on a cron schedule to its sink,
 * as Knative's does: type `dev.knative.sources.ping`, source `/apis/v1/namespaces/NS/pingsources/NAME`,
 * the `data` (or `dataBase64`) with its `contentType`, and `ceOverrides.extensions`. The schedule is
 * five cron fields (minute resolution, as Knative's), six with seconds first, a `@hourly`-style
 * nickname, or `@every 90s`; `timezone` (or a `CRON_TZ=` prefix) names an IANA zone.
 * @module
 */
import { Cron } from 'croner';
import type { CloudEvent } from '../cloudevents/event.js';
import { checkAttribute } from '../cloudevents/event.js';
import type { ResourceObject } from '../store/types.js';
import { validateCeOverrides } from './ce-overrides.js';
import { type Cond, ok, ready, sinkProvided } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { invalid, objectAt, stringAt } from './validation.js';

export const PING_TYPE = 'dev.knative.sources.ping';
/** The largest `data` (or decoded `dataBase64`) a PingSource sends, bytes. */
export const MAX_PING_DATA = 256 * 1024;

export interface PingSourceSpec {
  schedule: string;
  timezone?: string;
  contentType?: string;
  data?: string;
  dataBase64?: string;
  sink: Destination;
  ceOverrides?: { extensions: Record<string, string> };
}

/** A schedule, parsed: cron fields and zone for croner, or a fixed interval. */
export type Schedule = { cron: string; timezone?: string | undefined } | { everyMs: number };

const EVERY = /^@every\s+((?:[0-9]{1,9}h)?(?:[0-9]{1,9}m)?(?:[0-9]{1,9}s)?)$/;
const TZ_PREFIX = /^(?:CRON_TZ|TZ)=(\S{1,64})\s+(.*)$/;

function zoneOk(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** Parses `@every 1h30m` style durations (Go's units h, m, s); undefined when it is not one. */
function everyMs(body: string): number | undefined {
  if (body === '') return undefined;
  let ms = 0;
  for (const [, n, u] of body.matchAll(/([0-9]+)([hms])/g))
    ms += Number(n) * (u === 'h' ? 3_600_000 : u === 'm' ? 60_000 : 1000);
  return ms;
}

/** Parses and checks a schedule with its zone; throws TRELLIS_ERR_RESOURCE_INVALID naming the field. */
export function parseSchedule(schedule: string, timezone: string | undefined): Schedule {
  const raw = schedule.trim();
  if (raw.length > 256) invalid('spec.schedule', 'is over 256 characters');
  const every = EVERY.exec(raw);
  if (every !== null) {
    const ms = everyMs(every[1]!);
    if (ms === undefined || ms < 1000)
      invalid(
        'spec.schedule',
        `'@every' needs a duration of at least 1s, such as @every 90s or @every 1h30m`,
      );
    if (timezone !== undefined) invalid('spec.timezone', "has no meaning with '@every'");
    return { everyMs: ms };
  }
  let tz = timezone;
  let pattern = raw;
  const prefixed = TZ_PREFIX.exec(raw);
  if (prefixed !== null) {
    if (timezone !== undefined)
      invalid('spec.schedule', 'sets CRON_TZ= and spec.timezone is set too: keep one');
    tz = prefixed[1];
    pattern = prefixed[2]!.trim();
  }
  if (tz !== undefined && !zoneOk(tz))
    invalid(
      timezone !== undefined ? 'spec.timezone' : 'spec.schedule',
      `'${tz}' is not an IANA time zone such as Europe/Madrid`,
    );
  let next: Date | null | undefined;
  try {
    next = new Cron(pattern, { paused: true, ...(tz !== undefined ? { timezone: tz } : {}) }).nextRun();
  } catch (err) {
    invalid(
      'spec.schedule',
      `is not a cron schedule (five fields, or six with seconds first, or @hourly, @daily, @every 5m): ${(err as Error).message}`,
    );
  }
  if (next === null || next === undefined) invalid('spec.schedule', 'never fires (no such date)');
  return { cron: pattern, timezone: tz };
}

/** Validates a PingSource spec (v1 and v1beta2 have the same fields). */
export function validatePingSourceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, [
    'schedule',
    'timezone',
    'contentType',
    'data',
    'dataBase64',
    'sink',
    'ceOverrides',
  ])!;
  const schedule = stringAt('spec.schedule', o['schedule'])!;
  const timezone = stringAt('spec.timezone', o['timezone'], true);
  parseSchedule(schedule, timezone === '' ? undefined : timezone);
  const out: PingSourceSpec = {
    schedule,
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  if (timezone !== undefined && timezone !== '') out.timezone = timezone;
  const contentType = stringAt('spec.contentType', o['contentType'], true);
  if (contentType !== undefined && contentType !== '') {
    try {
      checkAttribute('datacontenttype', contentType);
    } catch {
      invalid('spec.contentType', `must be a media type such as application/json, got '${contentType}'`);
    }
    out.contentType = contentType;
  }
  const data = stringAt('spec.data', o['data'], true);
  const b64 = stringAt('spec.dataBase64', o['dataBase64'], true);
  if (data !== undefined && data !== '' && b64 !== undefined && b64 !== '')
    invalid('spec.data', 'set data or dataBase64, not both');
  if (data !== undefined && data !== '') {
    if (Buffer.byteLength(data) > MAX_PING_DATA) invalid('spec.data', `is over ${MAX_PING_DATA} bytes`);
    out.data = data;
  }
  if (b64 !== undefined && b64 !== '') {
    if (b64.length > Math.ceil((MAX_PING_DATA * 4) / 3) + 4)
      invalid('spec.dataBase64', `decodes to over ${MAX_PING_DATA} bytes`);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0)
      invalid('spec.dataBase64', 'must be standard base64 (A-Z a-z 0-9 + /, padded with =)');
    out.dataBase64 = b64;
  }
  const ce = validateCeOverrides(o['ceOverrides']);
  if (ce !== undefined) out.ceOverrides = ce;
  return out as unknown as Record<string, unknown>;
}

/** The event source Knative writes for a PingSource. */
export function pingSourceUri(namespace: string, name: string): string {
  return `/apis/v1/namespaces/${namespace}/pingsources/${name}`;
}

/** Status: the sink resolved, and the event attributes it sends (Knative's `ceAttributes`). */
export function reconcilePingSource(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as PingSourceSpec;
  const status: Record<string, unknown> = {
    observedGeneration: o.metadata.generation,
    ceAttributes: [{ type: PING_TYPE, source: pingSourceUri(o.metadata.namespace, o.metadata.name) }],
  };
  const conds: Cond[] = [ok('Deployed')];
  conds.push(sinkProvided(ctx, spec.sink, status));
  status['conditions'] = ready(conds);
  return status;
}

/** The event a PingSource sends for the firing scheduled at `at`. */
export function pingEvent(o: ResourceObject, at: Date, id: string): CloudEvent {
  const spec = o.spec as unknown as PingSourceSpec;
  const attrs: CloudEvent['attrs'] = {
    specversion: '1.0',
    id,
    source: pingSourceUri(o.metadata.namespace, o.metadata.name),
    type: PING_TYPE,
    time: at.toISOString(),
    ...(spec.ceOverrides?.extensions ?? {}),
  };
  let data: Buffer | undefined;
  if (spec.data !== undefined) data = Buffer.from(spec.data);
  else if (spec.dataBase64 !== undefined) data = Buffer.from(spec.dataBase64, 'base64');
  if (data !== undefined && spec.contentType !== undefined) attrs['datacontenttype'] = spec.contentType;
  return data === undefined ? { attrs } : { attrs, data };
}
