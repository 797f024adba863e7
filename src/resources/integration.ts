/**
 * IntegrationSource (`sources.knative.dev/v1alpha1`) and IntegrationSink (`sinks.knative.dev/v1alpha1`):
 * Knative's Kamelet-backed source and sink, of which Trellis runs the `timer` source and the `log` sink
 * natively. The other Kamelets (`aws`: S3, SQS, SNS, DynamoDB Streams) are accepted as Knative writes
 * them and are not Ready, with a message that says so.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import { checkAttribute } from '../cloudevents/event.js';
import type { ResourceObject } from '../store/types.js';
import { type Cond, notOk, ok, ready, sinkProvided } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { describe, invalid, isObject, objectAt, stringAt } from './validation.js';

/** Knative's timer source event type and source (the Kamelet connector's defaults). */
export const TIMER_TYPE = 'dev.knative.eventing.timer';
export const TIMER_SOURCE = 'dev.knative.eventing.timer-source';
/** The largest timer message, bytes. */
export const MAX_TIMER_MESSAGE = 256 * 1024;

export interface TimerSpec {
  /** Milliseconds between events (at least 100). */
  period: number;
  message: string;
  contentType?: string;
  /** Stop after this many events. */
  repeatCount?: number;
}

export interface IntegrationSourceSpec {
  timer?: TimerSpec;
  /** Kamelets Trellis does not run (kept so that status can name them). */
  others?: string[];
  sink: Destination;
}

const SOURCE_KAMELETS = ['timer', 'aws'];

function positiveInt(path: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
    invalid(path, `must be a whole number >= ${min}, got ${describe(v)}`);
  return v;
}

/** Validates an IntegrationSource spec: a `timer` (run here) or another Kamelet (accepted, not run). */
export function validateIntegrationSourceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, [...SOURCE_KAMELETS, 'sink'])!;
  const out: IntegrationSourceSpec = { sink: validateDestination('spec.sink', o['sink'], namespace) };
  const kinds = SOURCE_KAMELETS.filter((k) => o[k] !== undefined && o[k] !== null);
  if (kinds.length === 0)
    invalid('spec', `names no source: set timer (or ${SOURCE_KAMELETS.slice(1).join(', ')})`);
  if (kinds.length > 1) invalid('spec', `names ${kinds.join(' and ')}: an IntegrationSource has one source`);
  if (o['timer'] !== undefined && o['timer'] !== null) {
    const t = objectAt('spec.timer', o['timer'], ['period', 'message', 'contentType', 'repeatCount'])!;
    const message = stringAt('spec.timer.message', t['message'])!;
    if (Buffer.byteLength(message) > MAX_TIMER_MESSAGE)
      invalid('spec.timer.message', `is over ${MAX_TIMER_MESSAGE} bytes`);
    const timer: TimerSpec = {
      period: t['period'] === undefined ? 1000 : positiveInt('spec.timer.period', t['period'], 100),
      message,
    };
    const ct = stringAt('spec.timer.contentType', t['contentType'], true);
    if (ct !== undefined && ct !== '') {
      try {
        checkAttribute('datacontenttype', ct);
      } catch {
        invalid('spec.timer.contentType', `must be a media type such as text/plain, got '${ct}'`);
      }
      timer.contentType = ct;
    }
    if (t['repeatCount'] !== undefined)
      timer.repeatCount = positiveInt('spec.timer.repeatCount', t['repeatCount'], 1);
    out.timer = timer;
  } else {
    // Kept as written: Trellis does not run it, and says so in status.
    for (const k of kinds) {
      if (!isObject(o[k])) invalid(`spec.${k}`, `must be an object, got ${describe(o[k])}`);
      (out as unknown as Record<string, unknown>)[k] = o[k];
    }
    out.others = kinds;
  }
  return out as unknown as Record<string, unknown>;
}

/** Status: not Ready for a Kamelet Trellis does not run; else the sink resolved. */
export function reconcileIntegrationSource(
  o: ResourceObject,
  ctx: ReconcileContext,
): Record<string, unknown> {
  const spec = o.spec as unknown as IntegrationSourceSpec;
  const status: Record<string, unknown> = { observedGeneration: o.metadata.generation };
  const conds: Cond[] = [];
  if (spec.timer === undefined) {
    const names = (spec.others ?? []).join(', ');
    conds.push(
      notOk(
        'Deployed',
        'KameletNotAvailable',
        `Trellis runs the timer source of IntegrationSource itself; spec.${names} needs Apache Camel Kamelets, which it does not run: use a Trellis connector for that system instead`,
      ),
    );
  } else {
    conds.push(ok('Deployed'));
    status['ceAttributes'] = [{ type: TIMER_TYPE, source: TIMER_SOURCE }];
  }
  conds.push(sinkProvided(ctx, spec.sink, status));
  status['conditions'] = ready(conds);
  return status;
}

/** The event a timer IntegrationSource sends for the firing scheduled at `at`. */
export function timerEvent(o: ResourceObject, at: Date, id: string): CloudEvent {
  const t = (o.spec as unknown as IntegrationSourceSpec).timer!;
  return {
    attrs: {
      specversion: '1.0',
      id,
      source: TIMER_SOURCE,
      type: TIMER_TYPE,
      subject: o.metadata.name,
      time: at.toISOString(),
      datacontenttype: t.contentType ?? 'text/plain',
    },
    data: Buffer.from(t.message),
  };
}

// IntegrationSink

const LOG_LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'OFF'];
const LOG_FLAGS = [
  'showHeaders',
  'showBody',
  'showBodyType',
  'showProperties',
  'showExchangePattern',
  'showAllProperties',
  'showStreams',
  'showCachedStreams',
  'multiline',
];

export interface LogSinkSpec {
  loggerName: string;
  level: string;
  showHeaders: boolean;
  showBody: boolean;
  multiline: boolean;
}

export interface IntegrationSinkSpec {
  log?: LogSinkSpec;
  others?: string[];
}

const SINK_KAMELETS = ['log', 'aws'];

/** Validates an IntegrationSink spec: `log` (run here) or another Kamelet (accepted, not run). */
export function validateIntegrationSinkSpec(spec: unknown): Record<string, unknown> {
  const o = objectAt('spec', spec, SINK_KAMELETS)!;
  const kinds = SINK_KAMELETS.filter((k) => o[k] !== undefined && o[k] !== null);
  if (kinds.length === 0) invalid('spec', 'names no sink: set log (or aws)');
  if (kinds.length > 1) invalid('spec', `names ${kinds.join(' and ')}: an IntegrationSink has one sink`);
  const out: IntegrationSinkSpec = {};
  if (o['log'] !== undefined && o['log'] !== null) {
    const l = objectAt('spec.log', o['log'], ['loggerName', 'level', 'logMask', 'marker', ...LOG_FLAGS])!;
    const level = (stringAt('spec.log.level', l['level'], true) ?? 'INFO').toUpperCase();
    if (!LOG_LEVELS.includes(level))
      invalid('spec.log.level', `must be one of ${LOG_LEVELS.join(', ')}, got '${level}'`);
    for (const f of [...LOG_FLAGS, 'logMask']) {
      if (l[f] !== undefined && typeof l[f] !== 'boolean')
        invalid(`spec.log.${f}`, `must be true or false, got ${describe(l[f])}`);
    }
    stringAt('spec.log.marker', l['marker'], true);
    out.log = {
      loggerName: stringAt('spec.log.loggerName', l['loggerName'], true) ?? 'log-sink',
      level,
      showHeaders: l['showHeaders'] === true,
      showBody: l['showBody'] !== false,
      multiline: l['multiline'] === true,
    };
  } else {
    for (const k of kinds) {
      if (!isObject(o[k])) invalid(`spec.${k}`, `must be an object, got ${describe(o[k])}`);
      (out as unknown as Record<string, unknown>)[k] = o[k];
    }
    out.others = kinds;
  }
  return out as unknown as Record<string, unknown>;
}

/** Status: addressable; not Ready for a Kamelet Trellis does not run. */
export function reconcileIntegrationSink(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as IntegrationSinkSpec;
  const conds: Cond[] = [];
  const status: Record<string, unknown> = { observedGeneration: o.metadata.generation };
  if (spec.log === undefined) {
    conds.push(
      notOk(
        'Deployed',
        'KameletNotAvailable',
        `Trellis runs the log sink of IntegrationSink itself; spec.${(spec.others ?? []).join(', ')} needs Apache Camel Kamelets, which it does not run: use a Trellis connector for that system instead`,
      ),
    );
  } else {
    conds.push(ok('Deployed'), ok('Addressable'));
    status['address'] = { url: ctx.address('IntegrationSink', o.metadata.namespace, o.metadata.name) };
  }
  status['conditions'] = ready(conds);
  return status;
}
