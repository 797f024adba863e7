import { validateCeOverrides } from './ce-overrides.js';
import { reconcileConnectorSink, reconcileConnectorSource } from './connector-spec.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { parseDuration } from './duration.js';
import { describe, invalid, objectAt, stringAt } from './validation.js';

/** Where credentials come from: files and environment variables only, never the document itself. */
export interface NatsAuth {
  credsFile?: string;
  user?: string;
  passwordEnv?: string;
  passwordFile?: string;
  tokenEnv?: string;
  tokenFile?: string;
  tlsCaFile?: string;
  tlsCertFile?: string;
  tlsKeyFile?: string;
}

export interface NatsSourceSpec {
  servers: string[];
  subject: string;
  queueGroup?: string;
  jetstream?: { stream: string; consumer?: string; deliverPolicy: 'all' | 'new'; ackWaitMs: number };
  auth?: NatsAuth;
  sink: Destination;
  ceOverrides?: { extensions: Record<string, string> };
}

export interface NatsSinkSpec {
  servers: string[];
  subject: string;
  /** Wait for JetStream's acknowledgement before answering 202. */
  jetstream: boolean;
  mode: 'binary' | 'structured';
  auth?: NatsAuth;
}

/** A NATS subject: dot-separated non-empty tokens; with `wildcards`, `*` as a token and `>` as the last. */
function subjectOk(s: string, wildcards: boolean): boolean {
  if (s.length === 0 || s.length > 256) return false;
  const tokens = s.split('.');
  return tokens.every((t, i) => {
    if (t === '') return false;
    if (t === '*') return wildcards;
    if (t === '>') return wildcards && i === tokens.length - 1;
    return !/[\s*>]/.test(t);
  });
}
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const ENV = /^[A-Za-z_][A-Za-z0-9_]*$/;

function serversAt(v: unknown): string[] {
  const list = typeof v === 'string' ? v.split(',').map((x) => x.trim()) : v;
  if (!Array.isArray(list) || list.length === 0)
    invalid('spec.servers', 'must name the NATS servers: nats://host:4222 (or a list)');
  if (list.length > 16) invalid('spec.servers', 'names more than 16 servers');
  return list.map((s, i) => {
    if (typeof s !== 'string') invalid(`spec.servers[${i}]`, `must be a URL, got ${describe(s)}`);
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      invalid(`spec.servers[${i}]`, `'${s}' is not a URL such as nats://host:4222`);
    }
    if (!['nats:', 'tls:'].includes(u.protocol))
      invalid(`spec.servers[${i}]`, `must be nats:// or tls://, got '${u.protocol}'`);
    if (u.username !== '' || u.password !== '')
      invalid(
        `spec.servers[${i}]`,
        'must not carry credentials: use spec.auth (from files or environment variables)',
      );
    return s;
  });
}

function authAt(v: unknown): NatsAuth | undefined {
  const keys = [
    'credsFile',
    'user',
    'passwordEnv',
    'passwordFile',
    'tokenEnv',
    'tokenFile',
    'tlsCaFile',
    'tlsCertFile',
    'tlsKeyFile',
  ] as const;
  const o = objectAt('spec.auth', v, [...keys, 'password', 'token'], true);
  if (o === undefined) return undefined;
  if (o['password'] !== undefined || o['token'] !== undefined)
    invalid(
      `spec.auth.${o['password'] !== undefined ? 'password' : 'token'}`,
      'secrets are not written in resources: use passwordFile/passwordEnv or tokenFile/tokenEnv',
    );
  const out: NatsAuth = {};
  for (const k of keys) {
    const s = stringAt(`spec.auth.${k}`, o[k], true);
    if (s === undefined) continue;
    if (k.endsWith('Env') && !ENV.test(s))
      invalid(`spec.auth.${k}`, `'${s}' is not an environment variable name`);
    out[k] = s;
  }
  if (out.passwordEnv !== undefined && out.passwordFile !== undefined)
    invalid('spec.auth', 'set passwordEnv or passwordFile, not both');
  if (out.tokenEnv !== undefined && out.tokenFile !== undefined)
    invalid('spec.auth', 'set tokenEnv or tokenFile, not both');
  return out;
}

export function validateNatsSourceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, [
    'servers',
    'subject',
    'queueGroup',
    'jetstream',
    'auth',
    'sink',
    'ceOverrides',
  ])!;
  const subject = stringAt('spec.subject', o['subject'])!;
  if (!subjectOk(subject, true))
    invalid(
      'spec.subject',
      `'${subject}' is not a NATS subject (tokens separated by dots; * and > as wildcards)`,
    );
  const out: NatsSourceSpec = {
    servers: serversAt(o['servers']),
    subject,
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  const q = stringAt('spec.queueGroup', o['queueGroup'], true);
  if (q !== undefined) {
    if (!NAME.test(q)) invalid('spec.queueGroup', 'use 1-64 of A-Z a-z 0-9 _ -');
    out.queueGroup = q;
  }
  const js = objectAt(
    'spec.jetstream',
    o['jetstream'],
    ['stream', 'consumer', 'deliverPolicy', 'ackWait'],
    true,
  );
  if (js !== undefined) {
    if (q !== undefined)
      invalid('spec.queueGroup', 'is for core subjects; a JetStream consumer is already shared');
    const stream = stringAt('spec.jetstream.stream', js['stream'])!;
    if (!NAME.test(stream)) invalid('spec.jetstream.stream', 'use 1-64 of A-Z a-z 0-9 _ -');
    const consumer = stringAt('spec.jetstream.consumer', js['consumer'], true);
    if (consumer !== undefined && !NAME.test(consumer))
      invalid('spec.jetstream.consumer', 'use 1-64 of A-Z a-z 0-9 _ -');
    const dp = stringAt('spec.jetstream.deliverPolicy', js['deliverPolicy'], true) ?? 'all';
    if (dp !== 'all' && dp !== 'new')
      invalid('spec.jetstream.deliverPolicy', `must be all or new, got '${dp}'`);
    const aw = stringAt('spec.jetstream.ackWait', js['ackWait'], true);
    const ackWaitMs = aw === undefined ? 30_000 : parseDuration(aw);
    if (ackWaitMs === undefined || ackWaitMs < 1000)
      invalid('spec.jetstream.ackWait', `must be an ISO-8601 duration of at least PT1S, got '${aw}'`);
    out.jetstream = { stream, deliverPolicy: dp, ackWaitMs, ...(consumer !== undefined ? { consumer } : {}) };
  }
  const auth = authAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  const ce = validateCeOverrides(o['ceOverrides']);
  if (ce !== undefined) out.ceOverrides = ce;
  return out as unknown as Record<string, unknown>;
}

export function validateNatsSinkSpec(spec: unknown): Record<string, unknown> {
  const o = objectAt('spec', spec, ['servers', 'subject', 'jetstream', 'mode', 'auth'])!;
  const subject = stringAt('spec.subject', o['subject'])!;
  if (!subjectOk(subject, false))
    invalid('spec.subject', `'${subject}' is not a NATS subject to publish to (no wildcards)`);
  const mode = stringAt('spec.mode', o['mode'], true) ?? 'binary';
  if (mode !== 'binary' && mode !== 'structured')
    invalid('spec.mode', `must be binary or structured, got '${mode}'`);
  if (o['jetstream'] !== undefined && typeof o['jetstream'] !== 'boolean')
    invalid('spec.jetstream', `must be true or false, got ${describe(o['jetstream'])}`);
  const out: NatsSinkSpec = {
    servers: serversAt(o['servers']),
    subject,
    mode,
    jetstream: o['jetstream'] === true,
  };
  const auth = authAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  return out as unknown as Record<string, unknown>;
}

export const reconcileNatsSource = reconcileConnectorSource;
export const reconcileNatsSink = reconcileConnectorSink;
