/**
 * RedisStreamSource (`sources.trellis.dev/v1alpha1`) and RedisStreamSink (`sinks.trellis.dev/v1alpha1`):
 * Trellis's connector for Redis Streams, read in a consumer group and written with XADD.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { validateCeOverrides } from './ce-overrides.js';
import {
  addressAt,
  reconcileConnectorSink,
  reconcileConnectorSource,
  type SecretAuth,
  secretAuthAt,
} from './connector-spec.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { parseDuration } from './duration.js';
import { describe, invalid, objectAt, stringAt } from './validation.js';

export type RedisAuth = SecretAuth;

export interface RedisStreamSourceSpec {
  address: string;
  stream: string;
  /** The consumer group (default `trellis-NAMESPACE-NAME`, see `groupOf`). */
  group?: string;
  /** Where a new group starts: `$` (new entries, default) or `0` (the whole stream). */
  startId: '$' | '0';
  /** Entries another consumer held this long without acknowledging are taken over (it died). */
  claimIdleMs: number;
  auth?: RedisAuth;
  sink: Destination;
  ceOverrides?: { extensions: Record<string, string> };
}

export interface RedisStreamSinkSpec {
  address: string;
  stream: string;
  /** Keep the stream near this many entries (XADD MAXLEN ~). */
  maxLen?: number;
  mode: 'binary' | 'structured';
  auth?: RedisAuth;
}

const KEY = /^[!-~]{1,512}$/;

function keyAt(path: string, v: unknown): string {
  const s = stringAt(path, v)!;
  if (!KEY.test(s)) invalid(path, 'must be 1-512 printable ASCII characters without spaces');
  return s;
}

export function validateRedisStreamSourceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, [
    'address',
    'stream',
    'group',
    'startId',
    'claimIdle',
    'auth',
    'sink',
    'ceOverrides',
  ])!;
  const group = o['group'] === undefined ? undefined : keyAt('spec.group', o['group']);
  const startId = stringAt('spec.startId', o['startId'], true) ?? '$';
  if (startId !== '$' && startId !== '0')
    invalid('spec.startId', `must be $ (new entries) or 0 (the whole stream), got '${startId}'`);
  const ci = stringAt('spec.claimIdle', o['claimIdle'], true);
  const claimIdleMs = ci === undefined ? 30_000 : parseDuration(ci);
  if (claimIdleMs === undefined || claimIdleMs < 1000)
    invalid('spec.claimIdle', `must be an ISO-8601 duration of at least PT1S, got '${ci}'`);
  const out: RedisStreamSourceSpec = {
    address: addressAt(o['address'], ['redis:', 'rediss:'], 'redis://127.0.0.1:6379'),
    stream: keyAt('spec.stream', o['stream']),
    ...(group !== undefined ? { group } : {}),
    startId,
    claimIdleMs,
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  const auth = secretAuthAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  const ce = validateCeOverrides(o['ceOverrides']);
  if (ce !== undefined) out.ceOverrides = ce;
  return out as unknown as Record<string, unknown>;
}

export function validateRedisStreamSinkSpec(spec: unknown): Record<string, unknown> {
  const o = objectAt('spec', spec, ['address', 'stream', 'maxLen', 'mode', 'auth'])!;
  const mode = stringAt('spec.mode', o['mode'], true) ?? 'binary';
  if (mode !== 'binary' && mode !== 'structured')
    invalid('spec.mode', `must be binary or structured, got '${mode}'`);
  const out: RedisStreamSinkSpec = {
    address: addressAt(o['address'], ['redis:', 'rediss:'], 'redis://127.0.0.1:6379'),
    stream: keyAt('spec.stream', o['stream']),
    mode,
  };
  if (o['maxLen'] !== undefined) {
    const m = o['maxLen'];
    if (typeof m !== 'number' || !Number.isSafeInteger(m) || m < 1)
      invalid('spec.maxLen', `must be a whole number >= 1, got ${describe(m)}`);
    out.maxLen = m;
  }
  const auth = secretAuthAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  return out as unknown as Record<string, unknown>;
}

/** The group a source reads in: its own, or `trellis-NAMESPACE-NAME`. */
export function groupOf(o: ResourceObject): string {
  return (
    (o.spec as unknown as RedisStreamSourceSpec).group ?? `trellis-${o.metadata.namespace}-${o.metadata.name}`
  );
}

export const reconcileRedisStreamSource = reconcileConnectorSource;
export const reconcileRedisStreamSink = reconcileConnectorSink;
