/**
 * The CloudEvents Protobuf format (formats_protobuf-format.md, `io.cloudevents.v1.CloudEvent`), and the
 * small proto3 wire codec it and Trellis's gRPC messages are written with: messages are described by
 * schemas (field number, name, type) and read into plain objects. Unknown fields are skipped; lengths are
 * checked against the buffer, and nesting is bounded.
 * @module
 */
import {
  type AttributeValue,
  type CloudEvent,
  checkAttribute,
  checkRequired,
  EventValidationError,
  isJsonContentType,
} from './event.js';

/** A field of a message: its number, the property it is read into, its type, whether it repeats. */
export interface Field {
  no: number;
  name: string;
  type: 'string' | 'bytes' | 'bool' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'message';
  repeated?: boolean;
  /** The schema of a `message` field. */
  schema?: Schema;
  /** A member of a oneof: written when set, even at its default value (false, 0, ''). */
  oneof?: boolean;
}
export type Schema = readonly Field[];
export type ProtoObject = Record<string, unknown>;

/** How deep messages may nest when read (CloudEvents nest three deep; Trellis's messages four). */
const MAX_DEPTH = 16;

export class ProtobufError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtobufError';
  }
}

// Writing

class Writer {
  private chunks: Buffer[] = [];
  private length = 0;

  private push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }

  varint(v: number | bigint): void {
    let n = BigInt.asUintN(64, BigInt(v));
    const out: number[] = [];
    while (n >= 0x80n) {
      out.push(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    out.push(Number(n));
    this.push(Buffer.from(out));
  }

  tag(no: number, wire: number): void {
    this.varint((no << 3) | wire);
  }

  bytes(no: number, b: Uint8Array): void {
    this.tag(no, 2);
    this.varint(b.length);
    this.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  }

  finish(): Buffer {
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.length);
  }
}

function writeField(w: Writer, f: Field, v: unknown): void {
  const always = f.repeated === true || f.oneof === true;
  switch (f.type) {
    case 'string':
      if (v === '' && !always) return;
      w.bytes(f.no, Buffer.from(String(v), 'utf8'));
      return;
    case 'bytes':
      if ((v as Uint8Array).length === 0 && !always) return;
      w.bytes(f.no, v as Uint8Array);
      return;
    case 'bool':
      if (v !== true && !always) return;
      w.tag(f.no, 0);
      w.varint(v ? 1 : 0);
      return;
    case 'message':
      w.bytes(f.no, encodeMessage(f.schema!, v as ProtoObject));
      return;
    default:
      if ((v === 0 || v === 0n) && !always) return;
      w.tag(f.no, 0);
      w.varint(v as number | bigint);
  }
}

/** Encodes a plain object with a schema (unset and default values are left out, as proto3 does). */
export function encodeMessage(schema: Schema, o: ProtoObject): Buffer {
  const w = new Writer();
  for (const f of schema) {
    const v = o[f.name];
    if (v === undefined || v === null) continue;
    if (f.repeated) for (const x of v as unknown[]) writeField(w, f, x);
    else writeField(w, f, v);
  }
  return w.finish();
}

// Reading

class Reader {
  pos = 0;
  constructor(private readonly b: Buffer) {}

  get done(): boolean {
    return this.pos >= this.b.length;
  }

  varint(): bigint {
    let shift = 0n;
    let out = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.b.length) throw new ProtobufError('a varint runs past the end of the message');
      const byte = this.b[this.pos++]!;
      out |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return out;
      shift += 7n;
    }
    throw new ProtobufError('a varint is longer than 10 bytes');
  }

  slice(): Buffer {
    const n = Number(this.varint());
    if (n > this.b.length - this.pos)
      throw new ProtobufError('a length-delimited field runs past the end of the message');
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.advance(8);
    else if (wire === 2) this.slice();
    else if (wire === 5) this.advance(4);
    else throw new ProtobufError(`wire type ${wire} is not supported`);
  }

  private advance(n: number): void {
    if (n > this.b.length - this.pos) throw new ProtobufError('a field runs past the end of the message');
    this.pos += n;
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

function readValue(r: Reader, f: Field, wire: number, depth: number): unknown {
  const expect = f.type === 'string' || f.type === 'bytes' || f.type === 'message' ? 2 : 0;
  if (wire !== expect)
    throw new ProtobufError(`field ${f.name} (${f.no}) has wire type ${wire}, not ${expect}`);
  switch (f.type) {
    case 'string': {
      const bytes = r.slice();
      try {
        return UTF8.decode(bytes);
      } catch {
        throw new ProtobufError(`field ${f.name} is not valid UTF-8`);
      }
    }
    case 'bytes':
      return Buffer.from(r.slice());
    case 'message':
      return decodeAt(f.schema!, r.slice(), depth + 1);
    case 'bool':
      return r.varint() !== 0n;
    case 'int32':
      return Number(BigInt.asIntN(32, r.varint()));
    case 'uint32':
      return Number(BigInt.asUintN(32, r.varint()));
    case 'int64':
      return Number(BigInt.asIntN(64, r.varint()));
    default:
      return Number(BigInt.asUintN(64, r.varint()));
  }
}

function decodeAt(schema: Schema, b: Buffer, depth: number): ProtoObject {
  if (depth > MAX_DEPTH) throw new ProtobufError(`messages nest deeper than ${MAX_DEPTH} levels`);
  const r = new Reader(b);
  const out: ProtoObject = {};
  while (!r.done) {
    const key = Number(r.varint());
    const no = key >>> 3;
    const wire = key & 7;
    const f = schema.find((x) => x.no === no);
    if (f === undefined) {
      r.skip(wire);
      continue;
    }
    const v = readValue(r, f, wire, depth);
    if (f.repeated) {
      const list = (out[f.name] as unknown[] | undefined) ?? [];
      list.push(v);
      out[f.name] = list;
    } else out[f.name] = v;
  }
  return out;
}

/** Decodes a message into a plain object; throws ProtobufError when it is not one. */
export function decodeMessage(schema: Schema, b: Uint8Array): ProtoObject {
  return decodeAt(schema, Buffer.from(b.buffer, b.byteOffset, b.byteLength), 0);
}

// The CloudEvent message

const TIMESTAMP: Schema = [
  { no: 1, name: 'seconds', type: 'int64' },
  { no: 2, name: 'nanos', type: 'int32' },
];
const ATTRIBUTE_VALUE: Schema = [
  { no: 1, name: 'ceBoolean', type: 'bool', oneof: true },
  { no: 2, name: 'ceInteger', type: 'int32', oneof: true },
  { no: 3, name: 'ceString', type: 'string', oneof: true },
  { no: 4, name: 'ceBytes', type: 'bytes', oneof: true },
  { no: 5, name: 'ceUri', type: 'string', oneof: true },
  { no: 6, name: 'ceUriRef', type: 'string', oneof: true },
  { no: 7, name: 'ceTimestamp', type: 'message', schema: TIMESTAMP, oneof: true },
];
const ATTRIBUTE_ENTRY: Schema = [
  { no: 1, name: 'key', type: 'string' },
  { no: 2, name: 'value', type: 'message', schema: ATTRIBUTE_VALUE },
];
const ANY: Schema = [
  { no: 1, name: 'typeUrl', type: 'string' },
  { no: 2, name: 'value', type: 'bytes' },
];

/** `io.cloudevents.v1.CloudEvent`. */
export const CLOUDEVENT_SCHEMA: Schema = [
  { no: 1, name: 'id', type: 'string' },
  { no: 2, name: 'source', type: 'string' },
  { no: 3, name: 'specVersion', type: 'string' },
  { no: 4, name: 'type', type: 'string' },
  { no: 5, name: 'attributes', type: 'message', repeated: true, schema: ATTRIBUTE_ENTRY },
  { no: 6, name: 'binaryData', type: 'bytes', oneof: true },
  { no: 7, name: 'textData', type: 'string', oneof: true },
  { no: 8, name: 'protoData', type: 'message', schema: ANY, oneof: true },
];

/** `io.cloudevents.v1.CloudEventBatch`. */
export const CLOUDEVENT_BATCH_SCHEMA: Schema = [
  { no: 1, name: 'events', type: 'message', repeated: true, schema: CLOUDEVENT_SCHEMA },
];

const REQUIRED = new Set(['id', 'source', 'specversion', 'type']);

function timestampOf(s: string): ProtoObject {
  const ms = Date.parse(s);
  const frac = /\.(\d{1,9})/.exec(s)?.[1] ?? '';
  const nanos = Number(frac.padEnd(9, '0') || '0');
  return { seconds: Math.floor(ms / 1000), nanos };
}

function timestampText(t: ProtoObject): string {
  const seconds = Number(t['seconds'] ?? 0);
  const nanos = Number(t['nanos'] ?? 0);
  if (!Number.isFinite(seconds) || nanos < 0 || nanos > 999_999_999)
    throw new EventValidationError('time', 'is not a valid protobuf Timestamp');
  const base = new Date(seconds * 1000).toISOString().slice(0, 19);
  return nanos === 0 ? `${base}Z` : `${base}.${String(nanos).padStart(9, '0').replace(/0+$/, '')}Z`;
}

/** An event as the object {@link CLOUDEVENT_SCHEMA} writes (to nest in another message). */
export function eventToProtoObject(e: CloudEvent): ProtoObject {
  const attributes: ProtoObject[] = [];
  for (const [k, v] of Object.entries(e.attrs)) {
    if (REQUIRED.has(k)) continue;
    let value: ProtoObject;
    if (typeof v === 'boolean') value = { ceBoolean: v };
    else if (typeof v === 'number') value = { ceInteger: v };
    else if (k === 'time' && !Number.isNaN(Date.parse(v))) value = { ceTimestamp: timestampOf(v) };
    else if (k === 'dataschema') value = { ceUri: v };
    else value = { ceString: v };
    attributes.push({ key: k, value });
  }
  const out: ProtoObject = {
    id: String(e.attrs['id']),
    source: String(e.attrs['source']),
    specVersion: String(e.attrs['specversion']),
    type: String(e.attrs['type']),
    attributes,
  };
  if (e.data !== undefined) {
    const ct = e.attrs['datacontenttype'] as string | undefined;
    const text = ct !== undefined && (isJsonContentType(ct) || /^text\//i.test(ct));
    if (text) {
      try {
        out['textData'] = UTF8.decode(e.data);
      } catch {
        out['binaryData'] = e.data;
      }
    } else out['binaryData'] = e.data;
  }
  return out;
}

/** Reads an event from what {@link CLOUDEVENT_SCHEMA} decoded, validating every attribute. */
export function eventFromProtoObject(o: ProtoObject): CloudEvent {
  const attrs: Record<string, AttributeValue> = {};
  const required: [string, string][] = [
    ['id', 'id'],
    ['source', 'source'],
    ['specversion', 'specVersion'],
    ['type', 'type'],
  ];
  for (const [name, field] of required)
    if (o[field] !== undefined) attrs[name] = checkAttribute(name, o[field]);
  for (const entry of (o['attributes'] ?? []) as ProtoObject[]) {
    const key = String(entry['key'] ?? '');
    if (REQUIRED.has(key))
      throw new EventValidationError(
        key,
        'is a required attribute: it has its own field, not an entry in attributes',
      );
    const v = (entry['value'] ?? {}) as ProtoObject;
    let value: unknown;
    if (v['ceBoolean'] !== undefined) value = v['ceBoolean'];
    else if (v['ceInteger'] !== undefined) value = v['ceInteger'];
    else if (v['ceBytes'] !== undefined) value = (v['ceBytes'] as Buffer).toString('base64');
    else if (v['ceTimestamp'] !== undefined) value = timestampText(v['ceTimestamp'] as ProtoObject);
    else value = v['ceString'] ?? v['ceUri'] ?? v['ceUriRef'] ?? '';
    attrs[key] = checkAttribute(key, value);
  }
  checkRequired(attrs);
  let data: Buffer | undefined;
  if (o['binaryData'] !== undefined) data = o['binaryData'] as Buffer;
  else if (o['textData'] !== undefined) data = Buffer.from(String(o['textData']), 'utf8');
  else if (o['protoData'] !== undefined) {
    const any = o['protoData'] as ProtoObject;
    data = (any['value'] as Buffer | undefined) ?? Buffer.alloc(0);
    attrs['datacontenttype'] ??= 'application/protobuf';
    if (typeof any['typeUrl'] === 'string' && any['typeUrl'] !== '') attrs['dataschema'] ??= any['typeUrl'];
  }
  return data === undefined ? { attrs } : { attrs, data };
}

/** An event in the Protobuf format. */
export function eventToProtobuf(e: CloudEvent): Buffer {
  return encodeMessage(CLOUDEVENT_SCHEMA, eventToProtoObject(e));
}

/** Reads an event in the Protobuf format; throws EventValidationError naming what is wrong. */
export function eventFromProtobuf(b: Uint8Array): CloudEvent {
  let o: ProtoObject;
  try {
    o = decodeMessage(CLOUDEVENT_SCHEMA, b);
  } catch (err) {
    if (err instanceof ProtobufError)
      throw new EventValidationError('(event)', `not a protobuf CloudEvent: ${err.message}`);
    throw err;
  }
  return eventFromProtoObject(o);
}
