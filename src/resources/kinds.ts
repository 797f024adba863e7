/**
 * The resource kinds Trellis serves, each registered once: its names (as kubectl users type them), the
 * apiVersions it accepts, its spec check, its status (reconcile), and whether it takes events.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import {
  reconcileAmqpSink,
  reconcileAmqpSource,
  validateAmqpSinkSpec,
  validateAmqpSourceSpec,
} from './amqp-connector.js';
import { reconcileApiServerSource, validateApiServerSourceSpec } from './apiserversource.js';
import { reconcileBroker, validateBrokerAnnotations, validateBrokerSpec } from './broker.js';
import { reconcileChannel, validateChannelSpec, validateInMemoryChannelSpec } from './channel.js';
import { consumerGroupWarnings, reconcileConsumerGroup, validateConsumerGroupSpec } from './consumergroup.js';
import { reconcileContainerSource, validateContainerSourceSpec } from './containersource.js';
import type { ReconcileContext } from './context.js';
import { validateFlowAnnotations, validateOrderAnnotation } from './delivery-spec.js';
import { reconcileEventPolicy, validateEventPolicySpec } from './eventpolicy.js';
import { reconcileEventTransform, validateEventTransformSpec } from './eventtransform.js';
import { reconcileEventType, validateEventTypeSpec } from './eventtype.js';
import { reconcileParallel, reconcileSequence, validateParallelSpec, validateSequenceSpec } from './flows.js';
import {
  reconcileIntegrationSink,
  reconcileIntegrationSource,
  validateIntegrationSinkSpec,
  validateIntegrationSourceSpec,
} from './integration.js';
import { reconcileJobSink, validateJobSinkSpec } from './jobsink.js';
import {
  reconcileKafkaSink,
  reconcileKafkaSource,
  validateKafkaSinkSpec,
  validateKafkaSourceSpec,
} from './kafka.js';
import {
  knativeServiceAddress,
  knativeServiceWarnings,
  reconcileKnativeService,
  validateKnativeServiceSpec,
} from './knative-service.js';
import {
  reconcileMqttSink,
  reconcileMqttSource,
  validateMqttSinkSpec,
  validateMqttSourceSpec,
} from './mqtt-connector.js';
import {
  reconcileNatsSink,
  reconcileNatsSource,
  validateNatsSinkSpec,
  validateNatsSourceSpec,
} from './nats-connector.js';
import { reconcilePingSource, validatePingSourceSpec } from './pingsource.js';
import {
  reconcileRedisStreamSink,
  reconcileRedisStreamSource,
  validateRedisStreamSinkSpec,
  validateRedisStreamSourceSpec,
} from './redis-connector.js';
import { reconcileService, validateServiceAnnotations, validateServiceSpec } from './service.js';
import { reconcileSinkBinding, validateSinkBindingSpec } from './sinkbinding.js';
import { reconcileSubscription, validateSubscriptionSpec } from './subscription.js';
import { reconcileTrigger, triggerWarnings, validateTriggerSpec } from './trigger.js';

export interface KindDef {
  /**
   * The kind's name inside Trellis: the store, the caches and status messages key resources by it. It is
   * the kind written in YAML except where two groups use one name (Knative Serving's `Service` beside
   * Kubernetes' core `Service`): see {@link KindDef.documentKind}.
   */
  kind: string;
  /** The kind as documents write it, when it differs from {@link KindDef.kind}. */
  documentKind?: string;
  /** API group; '' for Kubernetes' core group (apiVersion `v1`). */
  group: string;
  /** The version written in stored resources. */
  version: string;
  /** Older versions whose documents are accepted too (and stored as `version`). */
  otherVersions?: readonly string[];
  plural: string;
  singular: string;
  shortNames: readonly string[];
  /** Validates and normalises a spec; throws TRELLIS_ERR_RESOURCE_INVALID with the field path. */
  validateSpec(spec: unknown, namespace: string, apiVersion: string): Record<string, unknown>;
  /** Checks the annotations this kind reads. */
  validateAnnotations?(annotations: Record<string, string> | undefined): void;
  /** What in a valid spec is accepted but probably not what the user meant (shown by apply and in status). */
  warnings?(spec: Record<string, unknown>): string[];
  /** Works out the status (conditions, address, resolved destinations). */
  reconcile?(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown>;
  /** Reconciled before phase-1 kinds: kinds whose readiness others wait for (streams). */
  phase?: number;
  /** Takes events at an address of this server. */
  addressable?: boolean;
  /** Status fields written by something other than `reconcile`, kept when it writes. */
  preservedStatus?: readonly string[];
  /**
   * Of those, the fields `reconcile` reads (a process's state and address): a change to one reconciles
   * the resource, and what refers to it, again.
   */
  statusInputs?: readonly string[];
  /**
   * Where a `ref` to a resource of this kind delivers, for a kind that takes events somewhere other than
   * this server (a program Trellis runs): undefined while it has no address yet.
   */
  addressOf?(o: ResourceObject): string | undefined;
}

/** The kinds whose events go from their own stream to their sink (the server's route table gives each a subscription to it). */
export const SOURCE_KINDS: ReadonlySet<string> = new Set([
  'PingSource',
  'IntegrationSource',
  'ApiServerSource',
  'NatsSource',
  'KafkaSource',
  'RedisStreamSource',
  'MqttSource',
  'AmqpSource',
]);

/**
 * Every kind that has subscriptions, and so pending deliveries and delivery counts: a subscription's id
 * is its resource's uid, or (a flow's step or branch) the uid, `#` and the part.
 */
export const SUBSCRIBING_KINDS: readonly string[] = [
  'Trigger',
  'Subscription',
  'ConsumerGroup',
  'Sequence',
  'Parallel',
  ...SOURCE_KINDS,
];

export const KINDS: readonly KindDef[] = [
  {
    kind: 'Broker',
    group: 'eventing.knative.dev',
    version: 'v1',
    plural: 'brokers',
    singular: 'broker',
    shortNames: [],
    validateSpec: validateBrokerSpec,
    validateAnnotations: validateBrokerAnnotations,
    reconcile: reconcileBroker,
    phase: 0,
    addressable: true,
  },
  {
    kind: 'Trigger',
    group: 'eventing.knative.dev',
    version: 'v1',
    plural: 'triggers',
    singular: 'trigger',
    shortNames: [],
    validateSpec: validateTriggerSpec,
    validateAnnotations: validateOrderAnnotation,
    warnings: triggerWarnings,
    reconcile: reconcileTrigger,
  },
  {
    kind: 'Channel',
    group: 'messaging.knative.dev',
    version: 'v1',
    plural: 'channels',
    singular: 'channel',
    shortNames: ['ch'],
    validateSpec: validateChannelSpec,
    validateAnnotations: validateBrokerAnnotations,
    reconcile: reconcileChannel,
    phase: 0,
    addressable: true,
  },
  {
    kind: 'InMemoryChannel',
    group: 'messaging.knative.dev',
    version: 'v1',
    plural: 'inmemorychannels',
    singular: 'inmemorychannel',
    shortNames: ['imc'],
    validateSpec: validateInMemoryChannelSpec,
    validateAnnotations: validateBrokerAnnotations,
    reconcile: reconcileChannel,
    phase: 0,
    addressable: true,
  },
  {
    kind: 'Subscription',
    group: 'messaging.knative.dev',
    version: 'v1',
    plural: 'subscriptions',
    singular: 'subscription',
    shortNames: ['sub'],
    validateSpec: validateSubscriptionSpec,
    validateAnnotations: validateOrderAnnotation,
    reconcile: reconcileSubscription,
  },
  {
    kind: 'Sequence',
    group: 'flows.knative.dev',
    version: 'v1',
    plural: 'sequences',
    singular: 'sequence',
    shortNames: [],
    validateSpec: validateSequenceSpec,
    validateAnnotations: validateFlowAnnotations,
    reconcile: reconcileSequence,
    addressable: true,
  },
  {
    kind: 'Parallel',
    group: 'flows.knative.dev',
    version: 'v1',
    plural: 'parallels',
    singular: 'parallel',
    shortNames: [],
    validateSpec: validateParallelSpec,
    validateAnnotations: validateFlowAnnotations,
    reconcile: reconcileParallel,
    addressable: true,
  },
  {
    kind: 'EventTransform',
    group: 'eventing.knative.dev',
    version: 'v1alpha1',
    plural: 'eventtransforms',
    singular: 'eventtransform',
    shortNames: [],
    validateSpec: validateEventTransformSpec,
    reconcile: reconcileEventTransform,
    addressable: true,
  },
  {
    kind: 'PingSource',
    group: 'sources.knative.dev',
    version: 'v1',
    otherVersions: ['v1beta2'],
    plural: 'pingsources',
    singular: 'pingsource',
    shortNames: [],
    validateSpec: validatePingSourceSpec,
    reconcile: reconcilePingSource,
  },
  {
    kind: 'ApiServerSource',
    group: 'sources.knative.dev',
    version: 'v1',
    plural: 'apiserversources',
    singular: 'apiserversource',
    shortNames: [],
    validateSpec: validateApiServerSourceSpec,
    reconcile: (o, ctx) =>
      reconcileApiServerSource(
        o,
        ctx,
        (apiVersion, kind) => kindOfDocument(kind, apiVersion) !== undefined,
        KINDS.map((k) => `${apiVersionOf(k)} ${documentKindOf(k)}`).join(', '),
      ),
  },
  {
    kind: 'ContainerSource',
    group: 'sources.knative.dev',
    version: 'v1',
    plural: 'containersources',
    singular: 'containersource',
    shortNames: [],
    validateSpec: validateContainerSourceSpec,
    reconcile: reconcileContainerSource,
    preservedStatus: ['process'],
  },
  {
    kind: 'SinkBinding',
    group: 'sources.knative.dev',
    version: 'v1',
    plural: 'sinkbindings',
    singular: 'sinkbinding',
    shortNames: [],
    validateSpec: validateSinkBindingSpec,
    reconcile: reconcileSinkBinding,
  },
  {
    kind: 'IntegrationSource',
    group: 'sources.knative.dev',
    version: 'v1alpha1',
    plural: 'integrationsources',
    singular: 'integrationsource',
    shortNames: [],
    validateSpec: validateIntegrationSourceSpec,
    reconcile: reconcileIntegrationSource,
  },
  {
    kind: 'IntegrationSink',
    group: 'sinks.knative.dev',
    version: 'v1alpha1',
    plural: 'integrationsinks',
    singular: 'integrationsink',
    shortNames: [],
    validateSpec: (spec) => validateIntegrationSinkSpec(spec),
    reconcile: reconcileIntegrationSink,
    addressable: true,
  },
  {
    kind: 'NatsSource',
    group: 'sources.trellis.dev',
    version: 'v1alpha1',
    plural: 'natssources',
    singular: 'natssource',
    shortNames: [],
    validateSpec: validateNatsSourceSpec,
    reconcile: reconcileNatsSource,
    preservedStatus: ['connection'],
  },
  {
    kind: 'NatsSink',
    group: 'sinks.trellis.dev',
    version: 'v1alpha1',
    plural: 'natssinks',
    singular: 'natssink',
    shortNames: [],
    validateSpec: (spec) => validateNatsSinkSpec(spec),
    reconcile: reconcileNatsSink,
    addressable: true,
    preservedStatus: ['connection'],
  },
  {
    kind: 'JobSink',
    group: 'sinks.knative.dev',
    version: 'v1alpha1',
    plural: 'jobsinks',
    singular: 'jobsink',
    shortNames: [],
    validateSpec: (spec) => validateJobSinkSpec(spec),
    reconcile: (o, ctx) => reconcileJobSink(o, ctx, ctx.features.allowCommands),
    addressable: true,
  },
  {
    kind: 'KafkaSource',
    group: 'sources.knative.dev',
    version: 'v1',
    otherVersions: ['v1beta1'],
    plural: 'kafkasources',
    singular: 'kafkasource',
    shortNames: [],
    validateSpec: validateKafkaSourceSpec,
    reconcile: reconcileKafkaSource,
    preservedStatus: ['connection'],
  },
  {
    kind: 'KafkaSink',
    group: 'eventing.knative.dev',
    version: 'v1alpha1',
    plural: 'kafkasinks',
    singular: 'kafkasink',
    shortNames: [],
    validateSpec: (spec) => validateKafkaSinkSpec(spec),
    reconcile: reconcileKafkaSink,
    addressable: true,
    preservedStatus: ['connection'],
  },
  {
    kind: 'RedisStreamSource',
    group: 'sources.trellis.dev',
    version: 'v1alpha1',
    plural: 'redisstreamsources',
    singular: 'redisstreamsource',
    shortNames: [],
    validateSpec: validateRedisStreamSourceSpec,
    reconcile: reconcileRedisStreamSource,
    preservedStatus: ['connection'],
  },
  {
    kind: 'RedisStreamSink',
    group: 'sinks.trellis.dev',
    version: 'v1alpha1',
    plural: 'redisstreamsinks',
    singular: 'redisstreamsink',
    shortNames: [],
    validateSpec: (spec) => validateRedisStreamSinkSpec(spec),
    reconcile: reconcileRedisStreamSink,
    addressable: true,
    preservedStatus: ['connection'],
  },
  {
    kind: 'MqttSource',
    group: 'sources.trellis.dev',
    version: 'v1alpha1',
    plural: 'mqttsources',
    singular: 'mqttsource',
    shortNames: [],
    validateSpec: validateMqttSourceSpec,
    reconcile: reconcileMqttSource,
    preservedStatus: ['connection'],
  },
  {
    kind: 'MqttSink',
    group: 'sinks.trellis.dev',
    version: 'v1alpha1',
    plural: 'mqttsinks',
    singular: 'mqttsink',
    shortNames: [],
    validateSpec: (spec) => validateMqttSinkSpec(spec),
    reconcile: reconcileMqttSink,
    addressable: true,
    preservedStatus: ['connection'],
  },
  {
    kind: 'AmqpSource',
    group: 'sources.trellis.dev',
    version: 'v1alpha1',
    plural: 'amqpsources',
    singular: 'amqpsource',
    shortNames: [],
    validateSpec: validateAmqpSourceSpec,
    reconcile: reconcileAmqpSource,
    preservedStatus: ['connection'],
  },
  {
    kind: 'AmqpSink',
    group: 'sinks.trellis.dev',
    version: 'v1alpha1',
    plural: 'amqpsinks',
    singular: 'amqpsink',
    shortNames: [],
    validateSpec: (spec) => validateAmqpSinkSpec(spec),
    reconcile: reconcileAmqpSink,
    addressable: true,
    preservedStatus: ['connection'],
  },
  {
    kind: 'EventType',
    group: 'eventing.knative.dev',
    version: 'v1beta3',
    otherVersions: ['v1beta2', 'v1beta1'],
    plural: 'eventtypes',
    singular: 'eventtype',
    shortNames: ['et'],
    validateSpec: validateEventTypeSpec,
    reconcile: reconcileEventType,
    preservedStatus: ['seen'],
  },
  {
    kind: 'Service',
    group: '',
    version: 'v1',
    plural: 'services',
    singular: 'service',
    shortNames: ['svc'],
    validateSpec: (spec) => validateServiceSpec(spec),
    validateAnnotations: validateServiceAnnotations,
    reconcile: (o) => reconcileService(o),
    phase: -1,
  },
  {
    kind: 'EventPolicy',
    group: 'eventing.knative.dev',
    version: 'v1alpha1',
    plural: 'eventpolicies',
    singular: 'eventpolicy',
    shortNames: ['ep'],
    validateSpec: validateEventPolicySpec,
    reconcile: (o) => reconcileEventPolicy(o),
  },
  {
    kind: 'KnativeService',
    documentKind: 'Service',
    group: 'serving.knative.dev',
    version: 'v1',
    plural: 'services',
    singular: 'service',
    shortNames: ['ksvc', 'kservice'],
    validateSpec: validateKnativeServiceSpec,
    warnings: knativeServiceWarnings,
    reconcile: reconcileKnativeService,
    preservedStatus: ['process'],
    statusInputs: ['process'],
    addressOf: knativeServiceAddress,
    phase: -1,
  },
  {
    kind: 'ConsumerGroup',
    group: 'eventing.trellis.dev',
    version: 'v1alpha1',
    plural: 'consumergroups',
    singular: 'consumergroup',
    shortNames: ['cg'],
    validateSpec: validateConsumerGroupSpec,
    warnings: consumerGroupWarnings,
    reconcile: reconcileConsumerGroup,
    // Written by the servers its members connect to.
    preservedStatus: ['lastActiveTime', 'replay'],
  },
];

/** The kind a document writes for resources of `k`. */
export function documentKindOf(k: KindDef): string {
  return k.documentKind ?? k.kind;
}

const INTERNAL_NAMES = new Map(
  KINDS.filter((k) => k.documentKind !== undefined).map((k) => [k.kind, k.documentKind!]),
);

/** A stored resource as the API shows it: its kind as documents write it. */
export function present(o: ResourceObject): ResourceObject {
  const k = INTERNAL_NAMES.get(o.kind);
  return k === undefined ? o : { ...o, kind: k };
}

/**
 * The kind of a document or a `ref` by its `kind` and `apiVersion` (one name may be two kinds in two
 * groups); undefined when no kind of that name takes that apiVersion.
 */
export function kindOfDocument(kind: string, apiVersion: string): KindDef | undefined {
  return KINDS.find((k) => documentKindOf(k) === kind && acceptedVersions(k).includes(apiVersion));
}

/** Every kind that documents write with this name. */
export function kindsNamed(kind: string): KindDef[] {
  return KINDS.filter((k) => documentKindOf(k) === kind);
}

/** apiVersion as written in YAML: `group/version`, or `version` for the core group. */
export function apiVersionOf(k: KindDef): string {
  return k.group === '' ? k.version : `${k.group}/${k.version}`;
}

/** Every apiVersion a document of this kind may carry. */
export function acceptedVersions(k: KindDef): string[] {
  return [k.version, ...(k.otherVersions ?? [])].map((v) => (k.group === '' ? v : `${k.group}/${v}`));
}

/**
 * Finds a kind as kubectl accepts it: `Broker`, `broker`, `brokers`, `brokers.eventing.knative.dev`, `imc`.
 */
export function findKind(name: string): KindDef | undefined {
  const n = name.toLowerCase();
  for (const k of KINDS) {
    const names = [documentKindOf(k).toLowerCase(), k.singular, k.plural, ...k.shortNames];
    if (names.includes(n)) return k;
    for (const x of names) if (k.group !== '' && n === `${x}.${k.group}`) return k;
  }
  return undefined;
}

/** Finds a kind by its API path parts (`group` '' for `/api/v1/...`). */
export function kindByPath(group: string, version: string, plural: string): KindDef | undefined {
  return KINDS.find(
    (k) =>
      k.group === group &&
      (k.version === version || k.otherVersions?.includes(version)) &&
      k.plural === plural,
  );
}
