/**
 * MqttSource (`sources.trellis.dev/v1alpha1`) and MqttSink (`sinks.trellis.dev/v1alpha1`): Trellis's
 * connector for MQTT 3.1.1 and 5, per the CloudEvents MQTT binding.
 * @module
 */
import { validateCeOverrides } from './ce-overrides.js';
import {
  addressAt,
  reconcileConnectorSink,
  reconcileConnectorSource,
  type SecretAuth,
  secretAuthAt,
} from './connector-spec.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { describe, invalid, objectAt, stringAt } from './validation.js';

export type MqttAuth = SecretAuth;

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

const CLIENT_ID = /^[A-Za-z0-9_.-]{1,128}$/;

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
    address: addressAt(o['address'], ['mqtt:', 'mqtts:', 'ws:', 'wss:'], 'mqtt://127.0.0.1:1883'),
    topic: topicAt('spec.topic', o['topic'], true),
    ...common(o),
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  const cid = stringAt('spec.clientId', o['clientId'], true);
  if (cid !== undefined) {
    if (!CLIENT_ID.test(cid)) invalid('spec.clientId', 'use 1-128 of A-Z a-z 0-9 _ . -');
    out.clientId = cid;
  }
  const auth = secretAuthAt(o['auth']);
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
    address: addressAt(o['address'], ['mqtt:', 'mqtts:', 'ws:', 'wss:'], 'mqtt://127.0.0.1:1883'),
    topic: topicAt('spec.topic', o['topic'], false),
    ...c,
    mode,
    retain: o['retain'] === true,
  };
  const auth = secretAuthAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  return out as unknown as Record<string, unknown>;
}

export const reconcileMqttSource = reconcileConnectorSource;
export const reconcileMqttSink = reconcileConnectorSink;
