/**
 * MqttSource (`sources.trellis.dev/v1alpha1`) and MqttSink (`sinks.trellis.dev/v1alpha1`): Trellis's
 * connector for MQTT 3.1.1 and 5, per the CloudEvents MQTT binding.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { validateCeOverrides } from './ce-overrides.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { type ConnectionState, connectedCondition } from './nats-connector.js';
import { describe, invalid, objectAt, stringAt } from './validation.js';

export interface MqttAuth {
  username?: string;
  passwordEnv?: string;
  passwordFile?: string;
  tlsCaFile?: string;
}

export interface MqttSourceSpec {
  address: string;
  topic: string;
  /** 4 (MQTT 3.1.1) or 5. */
  protocolVersion: 4 | 5;
  qos: 0 | 1;
  /** The session's client id: a persistent session keeps QoS 1 messages while Trellis is away. */
  clientId?: string;
  auth?: MqttAuth;
  sink: Destination;
  ceOverrides?: { extensions: Record<string, string> };
}

export interface MqttSinkSpec {
  address: string;
  topic: string;
  protocolVersion: 4 | 5;
  qos: 0 | 1;
  /** binary (MQTT 5 only: user properties) or structured. */
  mode: 'binary' | 'structured';
  retain: boolean;
  auth?: MqttAuth;
}

const ENV = /^[A-Za-z_][A-Za-z0-9_]*$/;
const CLIENT_ID = /^[A-Za-z0-9_.-]{1,128}$/;

function addressAt(v: unknown): string {
  const s = stringAt('spec.address', v)!;
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    invalid('spec.address', `'${s}' is not a URL such as mqtt://127.0.0.1:1883`);
  }
  if (!['mqtt:', 'mqtts:', 'ws:', 'wss:'].includes(u.protocol))
    invalid('spec.address', `must be mqtt://, mqtts://, ws:// or wss://, got '${u.protocol}'`);
  if (u.username !== '' || u.password !== '')
    invalid(
      'spec.address',
      'must not carry credentials: use spec.auth (from files or environment variables)',
    );
  return s;
}

/** An MQTT topic (filter when `wildcards`): UTF-8, no NUL, `+` as a level, `#` as the last level. */
function topicAt(path: string, v: unknown, wildcards: boolean): string {
  const t = stringAt(path, v)!;
  if (t === '' || Buffer.byteLength(t) > 1024 || t.includes('\u0000'))
    invalid(path, 'must be 1 to 1024 bytes with no NUL');
  const levels = t.split('/');
  levels.forEach((l, i) => {
    if (l === '+' || (l === '#' && i === levels.length - 1)) {
      if (!wildcards) invalid(path, `'${t}' has wildcards; publish to a topic name`);
      return;
    }
    if (l.includes('+') || l.includes('#'))
      invalid(path, `'${t}': + and # must be whole levels (# the last)`);
  });
  return t;
}

function authAt(v: unknown): MqttAuth | undefined {
  const o = objectAt(
    'spec.auth',
    v,
    ['username', 'passwordEnv', 'passwordFile', 'tlsCaFile', 'password'],
    true,
  );
  if (o === undefined) return undefined;
  if (o['password'] !== undefined)
    invalid('spec.auth.password', 'secrets are not written in resources: use passwordFile or passwordEnv');
  const out: MqttAuth = {};
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

function common(o: Record<string, unknown>): { protocolVersion: 4 | 5; qos: 0 | 1 } {
  const pv = o['protocolVersion'] ?? 5;
  if (pv !== 4 && pv !== 5)
    invalid('spec.protocolVersion', `must be 4 (MQTT 3.1.1) or 5, got ${describe(pv)}`);
  const qos = o['qos'] ?? 1;
  if (qos !== 0 && qos !== 1) invalid('spec.qos', `must be 0 or 1, got ${describe(qos)}`);
  return { protocolVersion: pv, qos };
}

export function validateMqttSourceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, [
    'address',
    'topic',
    'protocolVersion',
    'qos',
    'clientId',
    'auth',
    'sink',
    'ceOverrides',
  ])!;
  const out: MqttSourceSpec = {
    address: addressAt(o['address']),
    topic: topicAt('spec.topic', o['topic'], true),
    ...common(o),
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  const cid = stringAt('spec.clientId', o['clientId'], true);
  if (cid !== undefined) {
    if (!CLIENT_ID.test(cid)) invalid('spec.clientId', 'use 1-128 of A-Z a-z 0-9 _ . -');
    out.clientId = cid;
  }
  const auth = authAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  const ce = validateCeOverrides(o['ceOverrides']);
  if (ce !== undefined) out.ceOverrides = ce;
  return out as unknown as Record<string, unknown>;
}

export function validateMqttSinkSpec(spec: unknown): Record<string, unknown> {
  const o = objectAt('spec', spec, ['address', 'topic', 'protocolVersion', 'qos', 'mode', 'retain', 'auth'])!;
  const c = common(o);
  const mode = stringAt('spec.mode', o['mode'], true) ?? (c.protocolVersion === 5 ? 'binary' : 'structured');
  if (mode !== 'binary' && mode !== 'structured')
    invalid('spec.mode', `must be binary or structured, got '${mode}'`);
  if (mode === 'binary' && c.protocolVersion === 4)
    invalid(
      'spec.mode',
      'MQTT 3.1.1 has no properties: the CloudEvents MQTT binding uses structured mode there',
    );
  if (o['retain'] !== undefined && typeof o['retain'] !== 'boolean')
    invalid('spec.retain', 'must be true or false');
  const out: MqttSinkSpec = {
    address: addressAt(o['address']),
    topic: topicAt('spec.topic', o['topic'], false),
    ...c,
    mode,
    retain: o['retain'] === true,
  };
  const auth = authAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  return out as unknown as Record<string, unknown>;
}

export function reconcileMqttSource(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as MqttSourceSpec;
  const status: Record<string, unknown> = { observedGeneration: o.metadata.generation };
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

export function reconcileMqttSink(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  return {
    observedGeneration: o.metadata.generation,
    address: { url: ctx.address(o.kind, o.metadata.namespace, o.metadata.name) },
    conditions: ready([
      ok('Addressable'),
      connectedCondition(o.status?.['connection'] as ConnectionState | undefined),
    ]),
  };
}
