/**
 * The Kafka connector's runtime (kafkajs, loaded only when a KafkaSource or KafkaSink exists). A
 * KafkaSource's consumer group reads its topics; each record becomes a CloudEvent (the binding, or
 * Knative's wrapper) stored in the source's stream before its offset is committed, so nothing is lost
 * when Trellis stops; the delivery engine takes it to the sink. A KafkaSink produces each event it is
 * given (`acks: all`) and answers once Kafka acknowledged it.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import { TrellisError } from '../errors.js';
import type { ConnectionState } from '../resources/connector-spec.js';
import { type KafkaSinkSpec, type KafkaSourceSpec, kafkaRunnable } from '../resources/kafka.js';
import type { ResourceObject } from '../store/types.js';
import { decodeKafka, encodeKafka, isKafkaCloudEvent, type KafkaRecord, wrapKafka } from './kafka-binding.js';
import {
  type ConnectorDeps,
  ConnectorRunners,
  connectorKey,
  type Runner,
  refusedForGood,
} from './runners.js';

type KafkaJs = typeof import('kafkajs');

const RETRY_CONNECT_MS = 5000;

function headersOf(
  h: Record<string, Buffer | string | (Buffer | string)[] | undefined> | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    if (v === undefined) continue;
    const one = Array.isArray(v) ? v[0] : v;
    if (one !== undefined) out[k.toLowerCase()] = one.toString();
  }
  return out;
}

export class KafkaConnectors extends ConnectorRunners {
  protected readonly sinkKind = 'KafkaSink';
  private lib: Promise<KafkaJs> | undefined;

  constructor(deps: ConnectorDeps) {
    super(deps);
  }

  /** Not a resource that names Kubernetes secrets (it is not Ready); sources once their sink resolves. */
  protected override runnable(o: ResourceObject): boolean {
    return kafkaRunnable(o) && super.runnable(o);
  }

  private load(): Promise<KafkaJs> {
    this.lib ??= import('kafkajs');
    return this.lib;
  }

  protected start(o: ResourceObject, signature: string): Runner {
    const label = { [o.kind.toLowerCase()]: `${o.metadata.namespace}/${o.metadata.name}` };
    let stopped = false;
    let retry: NodeJS.Timeout | undefined;
    const stops: (() => Promise<void>)[] = [];
    const runner: Runner = {
      signature,
      o,
      stop: async () => {
        stopped = true;
        clearTimeout(retry);
        for (const s of stops.splice(0)) await s().catch(() => undefined);
      },
    };
    const report = (state: ConnectionState) => this.report(runner, state);
    const connect = async () => {
      if (stopped || this.closed) return;
      const spec = runner.o.spec as unknown as KafkaSourceSpec | KafkaSinkSpec;
      try {
        const { Kafka, logLevel } = await this.load();
        const kafka = new Kafka({
          clientId: `trellis-${o.metadata.namespace}-${o.metadata.name}`,
          brokers: spec.bootstrapServers,
          connectionTimeout: 3000,
          retry: { retries: 2 },
          logLevel: logLevel.ERROR,
          logCreator: () => (entry) =>
            this.deps.logger.warn({ ...label, kafka: entry.log.message }, 'kafka client'),
        });
        if (o.kind === 'KafkaSource') await this.runSource(runner, kafka, stops, report);
        else await this.runSink(runner, kafka, stops);
        void report({ state: 'Connected' });
        this.deps.logger.info({ ...label }, 'connected to Kafka');
      } catch (err) {
        const message = `cannot use Kafka at ${spec.bootstrapServers.join(', ')}: ${(err as Error).message}; trying again in ${RETRY_CONNECT_MS / 1000} s`;
        this.deps.logger.warn({ ...label }, message);
        void report({ state: 'Failed', message });
        for (const s of stops.splice(0)) await s().catch(() => undefined);
        if (!stopped) retry = setTimeout(() => void connect(), RETRY_CONNECT_MS);
      }
    };
    void connect();
    return runner;
  }

  private async runSource(
    runner: Runner,
    kafka: import('kafkajs').Kafka,
    stops: (() => Promise<void>)[],
    report: (s: ConnectionState) => Promise<void>,
  ): Promise<void> {
    const o = runner.o;
    const spec = o.spec as unknown as KafkaSourceSpec;
    const stream = connectorKey(o);
    const consumer = kafka.consumer({ groupId: spec.consumerGroup });
    stops.push(() => consumer.disconnect());
    await consumer.connect();
    consumer.on(
      consumer.events.CRASH,
      (e) =>
        void report({
          state: 'Failed',
          message: `the consumer crashed: ${String((e.payload as { error?: Error }).error?.message)}`,
        }),
    );
    for (const topic of spec.topics)
      await consumer.subscribe({ topic, fromBeginning: spec.initialOffset === 'earliest' });
    await consumer.run({
      // The offset is committed only after this resolves: a record is stored in Trellis before Kafka forgets it.
      eachMessage: async ({ topic, partition, message }) => {
        const rec: KafkaRecord = {
          key: message.key,
          value: message.value,
          headers: headersOf(message.headers),
        };
        let e: CloudEvent;
        if (isKafkaCloudEvent(rec)) {
          try {
            e = decodeKafka(rec);
          } catch (err) {
            e = wrapKafka(
              o.metadata.namespace,
              o.metadata.name,
              topic,
              partition,
              message.offset,
              rec,
              (err as Error).message,
            );
          }
        } else e = wrapKafka(o.metadata.namespace, o.metadata.name, topic, partition, message.offset, rec);
        const ext = spec.ceOverrides?.extensions;
        if (ext !== undefined) e.attrs = { ...e.attrs, ...ext };
        // A refusal throws: kafkajs retries the record, and the offset stays until it is stored. An event
        // refused for good is dropped (logged), or its partition would wait for ever.
        try {
          await this.deps.accept(stream, [e]);
        } catch (err) {
          if (!refusedForGood(err)) throw err;
          this.deps.logger.error(
            {
              kafkasource: `${o.metadata.namespace}/${o.metadata.name}`,
              err,
              topic,
              partition,
              offset: message.offset,
            },
            'a record was refused and is dropped',
          );
        }
      },
    });
  }

  private async runSink(
    runner: Runner,
    kafka: import('kafkajs').Kafka,
    stops: (() => Promise<void>)[],
  ): Promise<void> {
    const spec = runner.o.spec as unknown as KafkaSinkSpec;
    if (spec.numPartitions !== undefined || spec.replicationFactor !== undefined) {
      const admin = kafka.admin();
      await admin.connect();
      try {
        await admin.createTopics({
          topics: [
            {
              topic: spec.topic,
              ...(spec.numPartitions !== undefined ? { numPartitions: spec.numPartitions } : {}),
              ...(spec.replicationFactor !== undefined ? { replicationFactor: spec.replicationFactor } : {}),
            },
          ],
          waitForLeaders: true,
        });
      } finally {
        await admin.disconnect();
      }
    }
    const producer = kafka.producer({ allowAutoTopicCreation: false });
    stops.push(() => producer.disconnect());
    await producer.connect();
    runner.publish = async (events) => {
      const s = runner.o.spec as unknown as KafkaSinkSpec;
      try {
        await producer.send({
          topic: s.topic,
          acks: -1,
          messages: events.map((e) => {
            const r = encodeKafka(e, s.contentMode);
            return { key: r.key, value: r.value, headers: r.headers };
          }),
        });
      } catch (err) {
        throw new TrellisError(
          'TRELLIS_ERR_CONNECTOR_FAILED',
          `Kafka did not take the event on topic ${s.topic}: ${(err as Error).message}`,
        );
      }
    };
  }
}
