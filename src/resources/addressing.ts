/**
 * Where each addressable kind takes events on this server, and the stream its events are stored in.
 * A Broker keeps Knative's broker-ingress path, `/{namespace}/{name}`; the other kinds have
 * `/{plural}/{namespace}/{name}`. The stream key is the path without its leading slash.
 * @module
 */

/** Addressable kinds and the first path segment of their ingress ('' for the Broker). */
export const ADDRESS_PREFIX: Readonly<Record<string, string>> = {
  Broker: '',
  Channel: 'channels',
  InMemoryChannel: 'inmemorychannels',
  Sequence: 'sequences',
  Parallel: 'parallels',
  EventTransform: 'eventtransforms',
  IntegrationSink: 'integrationsinks',
  NatsSink: 'natssinks',
  JobSink: 'jobsinks',
  KafkaSink: 'kafkasinks',
  RedisStreamSink: 'redisstreamsinks',
  MqttSink: 'mqttsinks',
  AmqpSink: 'amqpsinks',
};

/** The apiVersion of each addressable kind, as a `ref` must name it. */
export const ADDRESSABLE_API: Readonly<Record<string, string>> = {
  Broker: 'eventing.knative.dev/v1',
  Channel: 'messaging.knative.dev/v1',
  InMemoryChannel: 'messaging.knative.dev/v1',
  Sequence: 'flows.knative.dev/v1',
  Parallel: 'flows.knative.dev/v1',
  EventTransform: 'eventing.knative.dev/v1alpha1',
  IntegrationSink: 'sinks.knative.dev/v1alpha1',
  NatsSink: 'sinks.trellis.dev/v1alpha1',
  JobSink: 'sinks.knative.dev/v1alpha1',
  KafkaSink: 'eventing.knative.dev/v1alpha1',
  RedisStreamSink: 'sinks.trellis.dev/v1alpha1',
  MqttSink: 'sinks.trellis.dev/v1alpha1',
  AmqpSink: 'sinks.trellis.dev/v1alpha1',
};

/** Path prefixes of connector sinks, which publish at once and store nothing. */
export const CONNECTOR_SINK_PREFIXES: ReadonlySet<string> = new Set([
  'natssinks',
  'jobsinks',
  'kafkasinks',
  'redisstreamsinks',
  'mqttsinks',
  'amqpsinks',
]);

/** The path prefix of IntegrationSinks, which hand events on at once and store nothing. */
export const INTEGRATION_SINK_PREFIX = 'integrationsinks';

/** The path prefix of EventTransforms, which transform synchronously and store nothing. */
export const TRANSFORM_PREFIX = 'eventtransforms';

/** The path prefixes stream ingress serves beside Brokers' two-segment paths. */
export const ADDRESS_PREFIXES: ReadonlySet<string> = new Set(
  Object.values(ADDRESS_PREFIX).filter(
    (p) =>
      p !== '' && p !== TRANSFORM_PREFIX && p !== INTEGRATION_SINK_PREFIX && !CONNECTOR_SINK_PREFIXES.has(p),
  ),
);

/** Ingress path of an addressable resource, e.g. `/channels/default/orders`. */
export function addressPath(kind: string, namespace: string, name: string): string {
  const p = ADDRESS_PREFIX[kind];
  return p ? `/${p}/${namespace}/${name}` : `/${namespace}/${name}`;
}

/** The stream (event log) key of an addressable resource: its path without the leading slash. */
export function streamKey(kind: string, namespace: string, name: string): string {
  return addressPath(kind, namespace, name).slice(1);
}

/** The full address of an addressable resource on a server whose public URL is `publicUrl`. */
export function addressUrl(publicUrl: string, kind: string, namespace: string, name: string): string {
  return `${publicUrl.replace(/\/$/, '')}${addressPath(kind, namespace, name)}`;
}

/** The OIDC audience of an addressable, as Knative writes it: `group/kind/namespace/name`. */
export function addressAudience(kind: string, namespace: string, name: string): string | undefined {
  const api = ADDRESSABLE_API[kind];
  return api === undefined ? undefined : `${api.split('/')[0]}/${kind.toLowerCase()}/${namespace}/${name}`;
}

const KIND_OF_PREFIX = new Map(Object.entries(ADDRESS_PREFIX).map(([kind, p]) => [p, kind]));

/**
 * The audience of the addressable an address path names (`/ns/broker`, `/channels/ns/name`), or
 * undefined when the path names none.
 */
export function pathAudience(path: string): string | undefined {
  const parts = path
    .split('?')[0]!
    .split('/')
    .filter((x) => x !== '');
  if (parts.length === 2) return addressAudience('Broker', parts[0]!, parts[1]!);
  if (parts.length !== 3) return undefined;
  const kind = KIND_OF_PREFIX.get(parts[0]!);
  return kind === undefined || kind === 'Broker' ? undefined : addressAudience(kind, parts[1]!, parts[2]!);
}
