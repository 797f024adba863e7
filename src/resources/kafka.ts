/**
 * KafkaSource (`sources.knative.dev/v1`, v1beta1 accepted) and KafkaSink (`eventing.knative.dev/v1alpha1`) in
 * Knative's shape, run by Trellis's Kafka connector. Credentials in Kubernetes secrets (`net`,
 * `auth.secret`) cannot be read without Kubernetes: such a resource is accepted and not Ready, saying so.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { validateCeOverrides } from './ce-overrides.js';
import { type Cond, notOk, ok, ready, sinkProvided } from './conditions.js';
import { type ConnectionState, connectedCondition } from './connector-spec.js';
import type { ReconcileContext } from './context.js';
import {
  type DeliverySpec,
  type Destination,
  validateDelivery,
  validateDestination,
} from './delivery-spec.js';
import { describe, invalid, isObject, objectAt, stringAt } from './validation.js';

export interface KafkaSourceSpec {
  bootstrapServers: string[];
  topics: string[];
  consumerGroup: string;
  initialOffset: 'earliest' | 'latest';
  ordering?: 'ordered' | 'unordered';
  consumers?: number;
  delivery?: DeliverySpec;
  net?: Record<string, unknown>;
  sink: Destination;
  ceOverrides?: { extensions: Record<string, string> };
}

export interface KafkaSinkSpec {
  topic: string;
  bootstrapServers: string[];
  contentMode: 'binary' | 'structured';
  numPartitions?: number;
  replicationFactor?: number;
  auth?: Record<string, unknown>;
}

const HOST_PORT = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]{2,45}\]:[0-9]{1,5}$/;
const TOPIC = /^[A-Za-z0-9._-]{1,249}$/;

function brokersAt(path: string, v: unknown): string[] {
  const list = typeof v === 'string' ? v.split(',').map((x) => x.trim()) : v;
  if (!Array.isArray(list) || list.length === 0)
    invalid(path, 'must list the Kafka bootstrap servers as host:port');
  if (list.length > 32) invalid(path, 'lists more than 32 servers');
  return list.map((s, i) => {
    if (typeof s !== 'string' || !HOST_PORT.test(s))
      invalid(`${path}[${i}]`, `must be host:port, got ${describe(s)}`);
    return s;
  });
}

function topicAt(path: string, v: unknown): string {
  const t = stringAt(path, v)!;
  if (!TOPIC.test(t) || t === '.' || t === '..')
    invalid(path, `'${t}' is not a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)`);
  return t;
}

function positive(path: string, v: unknown, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1 || v > max)
    invalid(path, `must be a whole number from 1 to ${max}, got ${describe(v)}`);
  return v;
}

export function validateKafkaSourceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, [
    'bootstrapServers',
    'topics',
    'consumerGroup',
    'initialOffset',
    'ordering',
    'consumers',
    'delivery',
    'net',
    'sink',
    'ceOverrides',
  ])!;
  const topicsRaw = o['topics'];
  const topicList = typeof topicsRaw === 'string' ? topicsRaw.split(',').map((t) => t.trim()) : topicsRaw;
  if (!Array.isArray(topicList) || topicList.length === 0)
    invalid('spec.topics', 'must list at least one topic');
  if (topicList.length > 100) invalid('spec.topics', 'lists more than 100 topics');
  const out: KafkaSourceSpec = {
    bootstrapServers: brokersAt('spec.bootstrapServers', o['bootstrapServers']),
    topics: topicList.map((t, i) => topicAt(`spec.topics[${i}]`, t)),
    consumerGroup: stringAt('spec.consumerGroup', o['consumerGroup'], true) ?? `trellis-${namespace}`,
    initialOffset: 'latest',
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  if (out.consumerGroup.length > 255) invalid('spec.consumerGroup', 'is over 255 characters');
  const io = stringAt('spec.initialOffset', o['initialOffset'], true);
  if (io !== undefined) {
    if (io !== 'earliest' && io !== 'latest')
      invalid('spec.initialOffset', `must be earliest or latest, got '${io}'`);
    out.initialOffset = io;
  }
  const ord = stringAt('spec.ordering', o['ordering'], true);
  if (ord !== undefined) {
    if (ord !== 'ordered' && ord !== 'unordered')
      invalid('spec.ordering', `must be ordered or unordered, got '${ord}'`);
    out.ordering = ord;
  }
  const consumers = positive('spec.consumers', o['consumers'], 100);
  if (consumers !== undefined) out.consumers = consumers;
  const delivery = validateDelivery('spec.delivery', o['delivery'], namespace);
  if (delivery !== undefined) out.delivery = delivery;
  if (o['net'] !== undefined && o['net'] !== null) {
    if (!isObject(o['net'])) invalid('spec.net', `must be an object, got ${describe(o['net'])}`);
    out.net = o['net'];
  }
  const ce = validateCeOverrides(o['ceOverrides']);
  if (ce !== undefined) out.ceOverrides = ce;
  return out as unknown as Record<string, unknown>;
}

export function validateKafkaSinkSpec(spec: unknown): Record<string, unknown> {
  const o = objectAt('spec', spec, [
    'topic',
    'bootstrapServers',
    'contentMode',
    'numPartitions',
    'replicationFactor',
    'auth',
  ])!;
  const mode = stringAt('spec.contentMode', o['contentMode'], true) ?? 'binary';
  if (mode !== 'binary' && mode !== 'structured')
    invalid('spec.contentMode', `must be binary or structured, got '${mode}'`);
  const out: KafkaSinkSpec = {
    topic: topicAt('spec.topic', o['topic']),
    bootstrapServers: brokersAt('spec.bootstrapServers', o['bootstrapServers']),
    contentMode: mode,
  };
  const np = positive('spec.numPartitions', o['numPartitions'], 10_000);
  if (np !== undefined) out.numPartitions = np;
  const rf = positive('spec.replicationFactor', o['replicationFactor'], 32);
  if (rf !== undefined) out.replicationFactor = rf;
  if (o['auth'] !== undefined && o['auth'] !== null) {
    if (!isObject(o['auth'])) invalid('spec.auth', `must be an object, got ${describe(o['auth'])}`);
    out.auth = o['auth'];
  }
  return out as unknown as Record<string, unknown>;
}

/** A Kubernetes secret Trellis would need to read, if the spec names one. */
function secretNeeded(v: Record<string, unknown> | undefined, field: string): string | undefined {
  if (v === undefined) return undefined;
  const s = JSON.stringify(v);
  if (!s.includes('secretKeyRef') && !s.includes('"secret"')) {
    const sasl = (v['sasl'] as { enable?: boolean } | undefined)?.enable === true;
    const tls = (v['tls'] as { enable?: boolean } | undefined)?.enable === true;
    if (!sasl && !tls) return undefined;
  }
  return `${field} names Kubernetes secrets, which Trellis cannot read without Kubernetes; Trellis's Kafka connector reaches brokers without SASL or TLS today (docs/connector-kafka.md)`;
}

export function reconcileKafkaSource(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as KafkaSourceSpec;
  const status: Record<string, unknown> = {
    observedGeneration: o.metadata.generation,
    consumers: spec.consumers ?? 1,
  };
  const conds: Cond[] = [];
  conds.push(sinkProvided(ctx, spec.sink, status));
  if (spec.delivery?.deadLetterSink !== undefined) {
    const d = ctx.resolve(spec.delivery.deadLetterSink);
    if ('uri' in d) status['deadLetterSinkUri'] = d.uri;
    else conds.push(notOk('DeadLetterSinkResolved', d.reason, `spec.delivery.deadLetterSink: ${d.message}`));
  }
  const secret = secretNeeded(spec.net, 'spec.net');
  conds.push(
    secret !== undefined
      ? notOk('Connected', 'KubernetesSecret', secret)
      : connectedCondition(o.status?.['connection'] as ConnectionState | undefined),
  );
  status['conditions'] = ready(conds);
  return status;
}

export function reconcileKafkaSink(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as KafkaSinkSpec;
  const secret = secretNeeded(spec.auth, 'spec.auth');
  return {
    observedGeneration: o.metadata.generation,
    address: { url: ctx.address('KafkaSink', o.metadata.namespace, o.metadata.name) },
    conditions: ready([
      ok('Addressable'),
      secret !== undefined
        ? notOk('Connected', 'KubernetesSecret', secret)
        : connectedCondition(o.status?.['connection'] as ConnectionState | undefined),
    ]),
  };
}

/** True when the connector should run the resource (no Kubernetes secret needed). */
export function kafkaRunnable(o: ResourceObject): boolean {
  const spec = o.spec as Record<string, unknown>;
  return (
    secretNeeded(
      (o.kind === 'KafkaSink' ? spec['auth'] : spec['net']) as Record<string, unknown> | undefined,
      '',
    ) === undefined
  );
}
