/**
 * The CloudEvents Kafka protocol binding: binary mode puts each attribute in a `ce_` header (UTF-8,
 * not percent-encoded) and `datacontenttype` in `content-type`, the data in the value; structured mode
 * puts the JSON event format in the value with `content-type: application/cloudevents+json`. The
 * `partitionkey` extension is the record key. Records that are not CloudEvents are wrapped as Knative's
 * KafkaSource wraps them.
 * @module
 */
import { type CloudEvent, canonicalString, checkAttribute, checkRequired } from '../cloudevents/event.js';
import { decodeHttp, encodeStructured } from '../cloudevents/http.js';
import { wrapMessage } from './runners.js';

/** A Kafka record as the binding sees it. */
export interface KafkaRecord {
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

/** The type Knative's KafkaSource gives records that are not CloudEvents. */
export const KAFKA_RECORD_TYPE = 'dev.knative.kafka.event';

/** True when a record is a CloudEvent: structured content type, or a `ce_specversion` header. */
export function isKafkaCloudEvent(r: KafkaRecord): boolean {
  const ct = r.headers['content-type'];
  return ct?.toLowerCase().startsWith('application/cloudevents') || r.headers['ce_specversion'] !== undefined;
}

/** Decodes a record per the binding; throws with the rule broken when it is not a valid CloudEvent. */
export function decodeKafka(r: KafkaRecord): CloudEvent {
  const value = r.value ?? Buffer.alloc(0);
  const ct = r.headers['content-type'];
  if (ct?.toLowerCase().startsWith('application/cloudevents'))
    return decodeHttp(['content-type', ct], value).events[0]!;
  const attrs: CloudEvent['attrs'] = {};
  for (const [k, v] of Object.entries(r.headers)) {
    if (!k.toLowerCase().startsWith('ce_')) continue;
    const name = k.slice(3).toLowerCase();
    if (name === 'datacontenttype') continue;
    attrs[name] = checkAttribute(name, v);
  }
  if (ct !== undefined) attrs['datacontenttype'] = checkAttribute('datacontenttype', ct);
  checkRequired(attrs);
  return value.length > 0 ? { attrs, data: value } : { attrs };
}

/** Knative's wrapping of a record that is not a CloudEvent. */
export function wrapKafka(
  namespace: string,
  name: string,
  topic: string,
  partition: number,
  offset: string,
  r: KafkaRecord,
  invalid?: string,
): CloudEvent {
  const e = wrapMessage(
    {
      id: `partition:${partition}/offset:${offset}`,
      source: `/apis/v1/namespaces/${namespace}/kafkasources/${name}#${topic}`,
      type: KAFKA_RECORD_TYPE,
      subject: `partition:${partition}#${offset}`,
    },
    r.value,
    r.headers['content-type'],
    invalid,
  );
  if (r.key !== null && r.key.length > 0) {
    const k = r.key.toString('utf8');
    if (!/[\u0000-\u001f\u007f]/.test(k)) e.attrs['key'] = k;
  }
  return e;
}

/** Encodes an event as a record: binary (default) or structured; `partitionkey` as the key. */
export function encodeKafka(e: CloudEvent, mode: 'binary' | 'structured' = 'binary'): KafkaRecord {
  const pk = e.attrs['partitionkey'];
  const key = pk === undefined ? null : Buffer.from(canonicalString(pk));
  if (mode === 'structured') {
    const m = encodeStructured(e);
    return {
      key,
      value: Buffer.from(String(m.body)),
      headers: { 'content-type': m.headers['content-type']! },
    };
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(e.attrs)) {
    if (k === 'datacontenttype') headers['content-type'] = String(v);
    else headers[`ce_${k}`] = canonicalString(v);
  }
  return { key, value: e.data ?? null, headers };
}
