/**
 * KafkaSource and KafkaSink: the CloudEvents Kafka binding (unit tests), Knative's documents accepted,
 * failures reported. This machine has no Kafka: the round trip runs when KAFKA_BROKERS names one
 * (host:port[,host:port]), and says it was skipped otherwise.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeKafka, encodeKafka, isKafkaCloudEvent, wrapKafka } from '../src/connectors/kafka-binding.js';
import { parseDocuments } from '../src/resources/registry.js';
import { broker, ceHeaders, testServer } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const KAFKA = process.env['KAFKA_BROKERS'];
if (KAFKA === undefined)
  console.warn('SKIPPED: the Kafka round trip needs a Kafka broker: set KAFKA_BROKERS=host:9092');

describe('the Kafka binding', () => {
  const e = {
    attrs: {
      specversion: '1.0',
      id: 'k1',
      source: '/shop',
      type: 'order.created',
      datacontenttype: 'application/json',
      partitionkey: 'cust-7',
      n: 3,
    },
    data: Buffer.from('{"total":12}'),
  };

  it('binary mode: ce_ headers (not percent-encoded), content-type, partitionkey as the key; and back', () => {
    const r = encodeKafka({ ...e, attrs: { ...e.attrs, subject: 'a b%' } });
    expect(r.key?.toString()).toBe('cust-7');
    expect(r.headers).toMatchObject({
      ce_id: 'k1',
      ce_subject: 'a b%',
      'content-type': 'application/json',
      ce_n: '3',
    });
    expect(r.headers['ce_datacontenttype']).toBeUndefined();
    expect(isKafkaCloudEvent(r)).toBe(true);
    const back = decodeKafka(r);
    expect(back.attrs).toMatchObject({
      id: 'k1',
      subject: 'a b%',
      datacontenttype: 'application/json',
      partitionkey: 'cust-7',
    });
    expect(back.data?.toString()).toBe('{"total":12}');
  });

  it('structured mode: the JSON event format in the value', () => {
    const r = encodeKafka(e, 'structured');
    expect(r.headers['content-type']).toContain('application/cloudevents+json');
    expect(decodeKafka(r).attrs).toMatchObject({ id: 'k1', n: 3 });
  });

  it('a record that is not a CloudEvent is wrapped as Knative wraps it; a broken one says why', () => {
    const rec = {
      key: Buffer.from('user-1'),
      value: Buffer.from('hello'),
      headers: { 'content-type': 'text/plain' },
    };
    expect(isKafkaCloudEvent(rec)).toBe(false);
    const w = wrapKafka('default', 'src', 'orders', 2, '41', rec);
    expect(w.attrs).toMatchObject({
      type: 'dev.knative.kafka.event',
      source: '/apis/v1/namespaces/default/kafkasources/src#orders',
      subject: 'partition:2#41',
      id: 'partition:2/offset:41',
      key: 'user-1',
      datacontenttype: 'text/plain',
    });
    const broken = { key: null, value: Buffer.from('x'), headers: { ce_specversion: '1.0', ce_id: 'x' } };
    expect(() => decodeKafka(broken)).toThrow(/source/);
  });
});

describe('KafkaSource and KafkaSink resources', () => {
  it("accepts Knative's documents; secrets it cannot read and brokers it cannot reach leave them not Ready, saying why", async () => {
    await using s = await testServer();
    await s.apply(broker('default'));
    const docs = parseDocuments(`apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {name: kafka-source}
spec:
  consumerGroup: knative-group
  bootstrapServers: [127.0.0.1:1]
  topics: [knative-demo-topic]
  initialOffset: earliest
  sink:
    ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata: {name: my-kafka-sink}
spec:
  topic: mytopic
  bootstrapServers: [127.0.0.1:1]
  contentMode: binary
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {name: sasl-source}
spec:
  bootstrapServers: [my-cluster-kafka-bootstrap.kafka:9092]
  topics: [t]
  net:
    sasl:
      enable: true
      user: {secretKeyRef: {name: kafka-secret, key: user}}
      password: {secretKeyRef: {name: kafka-secret, key: password}}
  sink: {uri: 'http://127.0.0.1:9/'}
`);
    for (const d of docs) {
      const r = await s.apply(d as Record<string, unknown>);
      expect(r.status, await r.text()).toBeLessThan(300);
    }
    const cond = async (path: string) => {
      const o = (await (await fetch(`${s.url}${path}`)).json()) as {
        status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] };
      };
      return o.status?.conditions?.find((c) => c.type === 'Connected');
    };
    await expect
      .poll(() => cond('/apis/sources.knative.dev/v1beta1/namespaces/default/kafkasources/kafka-source'), {
        timeout: 20_000,
      })
      .toMatchObject({ status: 'False', reason: 'Failed' });
    expect(
      (await cond('/apis/sources.knative.dev/v1beta1/namespaces/default/kafkasources/kafka-source'))?.message,
    ).toContain('cannot use Kafka at 127.0.0.1:1');
    expect(
      await cond('/apis/sources.knative.dev/v1beta1/namespaces/default/kafkasources/sasl-source'),
    ).toMatchObject({
      status: 'False',
      reason: 'KubernetesSecret',
    });
    const sink = await fetch(`${s.url}/kafkasinks/default/my-kafka-sink`, {
      method: 'POST',
      headers: ceHeaders('x'),
      body: '{}',
    });
    expect(sink.status).toBe(502);
  });

  it('refuses bad specs naming the field', async () => {
    await using s = await testServer();
    const sink = { uri: 'http://127.0.0.1:9/' };
    const cases: [Record<string, unknown>, string][] = [
      [{ topics: ['t'], sink }, 'spec.bootstrapServers: must list the Kafka bootstrap servers'],
      [{ bootstrapServers: ['kafka'], topics: ['t'], sink }, 'spec.bootstrapServers[0]: must be host:port'],
      [{ bootstrapServers: ['k:9092'], sink }, 'spec.topics: must list at least one topic'],
      [
        { bootstrapServers: ['k:9092'], topics: ['a topic'], sink },
        "spec.topics[0]: 'a topic' is not a Kafka topic name",
      ],
      [
        { bootstrapServers: ['k:9092'], topics: ['t'], initialOffset: 'middle', sink },
        'spec.initialOffset: must be earliest or latest',
      ],
    ];
    for (const [spec, message] of cases) {
      const r = await s.apply({
        apiVersion: 'sources.knative.dev/v1beta1',
        kind: 'KafkaSource',
        metadata: { name: 'bad', namespace: 'default' },
        spec,
      });
      expect([r.status, ((await r.json()) as { message: string }).message]).toEqual([
        400,
        expect.stringContaining(message),
      ]);
    }
  });
});

describe.runIf(KAFKA !== undefined)('Kafka round trip (KAFKA_BROKERS)', () => {
  it('a Trigger out to a KafkaSink, a KafkaSource back in: the same event arrives', async () => {
    const topic = `trellis-test-${randomBytes(4).toString('hex')}`;
    const brokers = KAFKA!.split(',');
    await using s = await testServer();
    await using sink = await startSink();
    for (const doc of [
      broker('default'),
      {
        apiVersion: 'eventing.knative.dev/v1alpha1',
        kind: 'KafkaSink',
        metadata: { name: 'out', namespace: 'default' },
        spec: { topic, bootstrapServers: brokers, numPartitions: 1, replicationFactor: 1 },
      },
      {
        apiVersion: 'eventing.knative.dev/v1',
        kind: 'Trigger',
        metadata: { name: 'to-kafka', namespace: 'default' },
        spec: {
          broker: 'default',
          filter: { attributes: { type: 'to.kafka' } },
          subscriber: {
            ref: { apiVersion: 'eventing.knative.dev/v1alpha1', kind: 'KafkaSink', name: 'out' },
          },
        },
      },
      {
        apiVersion: 'sources.knative.dev/v1beta1',
        kind: 'KafkaSource',
        metadata: { name: 'in', namespace: 'default' },
        spec: {
          bootstrapServers: brokers,
          topics: [topic],
          initialOffset: 'earliest',
          sink: { uri: sink.url },
        },
      },
    ])
      expect((await s.apply(doc)).status).toBeLessThan(300);
    await expect
      .poll(
        async () =>
          (
            await fetch(`${s.url}/default/default`, {
              method: 'POST',
              headers: ceHeaders('kafka-1', 'to.kafka'),
              body: '{"via":"kafka"}',
            })
          ).status,
        { timeout: 30_000 },
      )
      .toBe(202);
    const [got] = await sink.waitFor(1, 60_000);
    expect(got!.event.attrs['id']).toBe('kafka-1');
    expect(got!.event.data?.toString()).toBe('{"via":"kafka"}');
  });
});
