/**
 * RedisStreamSource (`sources.trellis.dev/v1alpha1`) and RedisStreamSink (`sinks.trellis.dev/v1alpha1`):
 * Trellis's connector for Redis Streams, read in a consumer group and written with XADD.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { validateCeOverrides } from './ce-overrides.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { parseDuration } from './duration.js';
import { type ConnectionState, connectedCondition } from './nats-connector.js';
import { describe, invalid, objectAt, stringAt } from './validation.js';

export interface RedisAuth {
  username?: string;
  passwordEnv?: string;
  passwordFile?: string;
  tlsCaFile?: string;
}

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
const ENV = /^[A-Za-z_][A-Za-z0-9_]*$/;

function addressAt(v: unknown): string {
  const s = stringAt('spec.address', v)!;
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    invalid('spec.address', `'${s}' is not a URL such as redis://127.0.0.1:6379`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
    invalid('spec.address', `must be redis:// or rediss://, got '${u.protocol}'`);
  if (u.password !== '' || u.username !== '')
    invalid(
      'spec.address',
      'must not carry credentials: use spec.auth (from files or environment variables)',
    );
  return s;
}

function keyAt(path: string, v: unknown): string {
  const s = stringAt(path, v)!;
  if (!KEY.test(s)) invalid(path, 'must be 1-512 printable ASCII characters without spaces');
  return s;
}

function authAt(v: unknown): RedisAuth | undefined {
  const o = objectAt(
    'spec.auth',
    v,
    ['username', 'passwordEnv', 'passwordFile', 'tlsCaFile', 'password'],
    true,
  );
  if (o === undefined) return undefined;
  if (o['password'] !== undefined)
    invalid('spec.auth.password', 'secrets are not written in resources: use passwordFile or passwordEnv');
  const out: RedisAuth = {};
  for (const k of ['username', 'passwordEnv', 'passwordFile', 'tlsCaFile'] as const) {
    const s = stringAt(`spec.auth.${k}`, o[k], true);
    if (s === undefined) continue;
    if (k === 'passwordEnv' && !ENV.test(s))
      invalid('spec.auth.passwordEnv', `'${s}' is not an environment variable name`);
    out[k] = s;
  }
  if (out.passwordEnv !== undefined && out.passwordFile !== undefined)
    invalid('spec.auth', 'set passwordEnv or passwordFile, not both');
  return out;
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
    address: addressAt(o['address']),
    stream: keyAt('spec.stream', o['stream']),
    ...(group !== undefined ? { group } : {}),
    startId,
    claimIdleMs,
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  const auth = authAt(o['auth']);
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
    address: addressAt(o['address']),
    stream: keyAt('spec.stream', o['stream']),
    mode,
  };
  if (o['maxLen'] !== undefined) {
    const m = o['maxLen'];
    if (typeof m !== 'number' || !Number.isSafeInteger(m) || m < 1)
      invalid('spec.maxLen', `must be a whole number >= 1, got ${describe(m)}`);
    out.maxLen = m;
  }
  const auth = authAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  return out as unknown as Record<string, unknown>;
}

/** The group a source reads in: its own, or `trellis-NAMESPACE-NAME`. */
export function groupOf(o: ResourceObject): string {
  return (
    (o.spec as unknown as RedisStreamSourceSpec).group ?? `trellis-${o.metadata.namespace}-${o.metadata.name}`
  );
}

export function reconcileRedisStreamSource(
  o: ResourceObject,
  ctx: ReconcileContext,
): Record<string, unknown> {
  const spec = o.spec as unknown as RedisStreamSourceSpec;
  const status: Record<string, unknown> = { observedGeneration: o.metadata.generation, group: groupOf(o) };
  const conds: Cond[] = [];
  const r = ctx.resolve(spec.sink);
  if ('uri' in r) {
    conds.push(ok('SinkProvided'));
    status['sinkUri'] = r.uri;
  } else conds.push(notOk('SinkProvided', r.reason, `spec.sink: ${r.message}`));
  conds.push(connectedCondition(o.status?.['connection'] as ConnectionState | undefined));
  status['conditions'] = ready(conds);
  return status;
}

export function reconcileRedisStreamSink(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  return {
    observedGeneration: o.metadata.generation,
    address: { url: ctx.address(o.kind, o.metadata.namespace, o.metadata.name) },
    conditions: ready([
      ok('Addressable'),
      connectedCondition(o.status?.['connection'] as ConnectionState | undefined),
    ]),
  };
}
