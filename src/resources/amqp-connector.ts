/**
 * AmqpSource (`sources.trellis.dev/v1alpha1`) and AmqpSink (`sinks.trellis.dev/v1alpha1`): Trellis's
 * connector for AMQP 0-9-1 brokers (RabbitMQ), with the CloudEvents AMQP binding's properties.
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

export type AmqpAuth = SecretAuth;

export interface AmqpSourceSpec {
  address: string;
  queue: string;
  /** Declare the queue (durable) and bind it to this exchange with these routing keys. */
  bind?: { exchange: string; routingKeys: string[] };
  /** Messages delivered to Trellis before it acknowledged them. */
  prefetch: number;
  auth?: AmqpAuth;
  sink: Destination;
  ceOverrides?: { extensions: Record<string, string> };
}

export interface AmqpSinkSpec {
  address: string;
  exchange: string;
  routingKey: string;
  mode: 'binary' | 'structured';
  /** Delivery mode 2: the broker keeps the message on disk (in a durable queue). */
  persistent: boolean;
  auth?: AmqpAuth;
}

const NAME = /^[A-Za-z0-9_.:\-/]{1,255}$/;

function nameAt(path: string, v: unknown, optional = false): string | undefined {
  const s = stringAt(path, v, optional);
  if (s === undefined) return undefined;
  if (s !== '' && !NAME.test(s)) invalid(path, 'use 1-255 of A-Z a-z 0-9 _ . : - /');
  return s;
}

export function validateAmqpSourceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, ['address', 'queue', 'bind', 'prefetch', 'auth', 'sink', 'ceOverrides'])!;
  const queue = nameAt('spec.queue', o['queue'])!;
  if (queue === '') invalid('spec.queue', 'must name the queue to consume');
  const prefetch = o['prefetch'] ?? 64;
  if (typeof prefetch !== 'number' || !Number.isSafeInteger(prefetch) || prefetch < 1 || prefetch > 10_000)
    invalid('spec.prefetch', `must be a whole number from 1 to 10000, got ${describe(prefetch)}`);
  const out: AmqpSourceSpec = {
    address: addressAt(o['address'], ['amqp:', 'amqps:'], 'amqp://127.0.0.1:5672'),
    queue,
    prefetch,
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  const b = objectAt('spec.bind', o['bind'], ['exchange', 'routingKeys'], true);
  if (b !== undefined) {
    const exchange = nameAt('spec.bind.exchange', b['exchange'])!;
    const keys = b['routingKeys'] ?? ['#'];
    if (
      !Array.isArray(keys) ||
      keys.length === 0 ||
      keys.length > 100 ||
      keys.some((k) => typeof k !== 'string' || k.length > 255)
    )
      invalid('spec.bind.routingKeys', 'must be a list of 1-100 routing keys (patterns for topic exchanges)');
    out.bind = { exchange, routingKeys: keys as string[] };
  }
  const auth = secretAuthAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  const ce = validateCeOverrides(o['ceOverrides']);
  if (ce !== undefined) out.ceOverrides = ce;
  return out as unknown as Record<string, unknown>;
}

export function validateAmqpSinkSpec(spec: unknown): Record<string, unknown> {
  const o = objectAt('spec', spec, ['address', 'exchange', 'routingKey', 'mode', 'persistent', 'auth'])!;
  const mode = stringAt('spec.mode', o['mode'], true) ?? 'binary';
  if (mode !== 'binary' && mode !== 'structured')
    invalid('spec.mode', `must be binary or structured, got '${mode}'`);
  if (o['persistent'] !== undefined && typeof o['persistent'] !== 'boolean')
    invalid('spec.persistent', 'must be true or false');
  const routingKey = stringAt('spec.routingKey', o['routingKey'])!;
  if (routingKey.length > 255) invalid('spec.routingKey', 'is over 255 characters');
  const out: AmqpSinkSpec = {
    address: addressAt(o['address'], ['amqp:', 'amqps:'], 'amqp://127.0.0.1:5672'),
    exchange: nameAt('spec.exchange', o['exchange'], true) ?? '',
    routingKey,
    mode,
    persistent: o['persistent'] !== false,
  };
  const auth = secretAuthAt(o['auth']);
  if (auth !== undefined) out.auth = auth;
  return out as unknown as Record<string, unknown>;
}

export const reconcileAmqpSource = reconcileConnectorSource;
export const reconcileAmqpSink = reconcileConnectorSink;
