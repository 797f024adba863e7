/**
 * How the NATS adapter writes things into JetStream: events as one payload (attributes as JSON with
 * their types, then the data bytes), and names as subject tokens and KV keys.
 * @module
 */
import type { AttributeValue, CloudEvent } from '../../cloudevents/event.js';

/** An event as a message payload: a 4-byte length, the attributes as JSON, then the data. */
export function encodeEvent(e: CloudEvent): Uint8Array {
  const attrs = Buffer.from(JSON.stringify(e.attrs));
  const data = e.data ?? Buffer.alloc(0);
  const out = Buffer.allocUnsafe(5 + attrs.length + data.length);
  out.writeUInt32BE(attrs.length, 0);
  out[4] = e.data === undefined ? 0 : 1;
  attrs.copy(out, 5);
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 5 + attrs.length);
  return out;
}

/** The event a payload holds. */
export function decodeEvent(payload: Uint8Array): CloudEvent {
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const n = b.readUInt32BE(0);
  const attrs = JSON.parse(b.subarray(5, 5 + n).toString('utf8')) as Record<string, AttributeValue>;
  if (b[4] === 0) return { attrs };
  return { attrs, data: Buffer.from(b.subarray(5 + n)) };
}

/** A subject token for any string (base64url: no `.`, `*`, `>` or spaces). */
export function token(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64url') || '_';
}

/** The string a token stands for. */
export function untoken(t: string): string {
  return t === '_' ? '' : Buffer.from(t, 'base64url').toString('utf8');
}

/** A KV key for a resource: `kind.namespace.name`, with `.` in names written `_` (not in DNS names). */
export function resourceKey(kind: string, namespace: string, name: string): string {
  return `${kind}.${namespace}.${name.replaceAll('.', '_')}`;
}
