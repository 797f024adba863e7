/**
 * The CloudEvents HTTP protocol binding (bindings_http-protocol-binding.md): binary, structured and batched
 * modes, decoding with percent- and quoted-string unescaping, and encoders for all three.
 * @module
 */

import { isUtf8 } from 'node:buffer';
import {
  type AttributeValue,
  type CloudEvent,
  canonicalString,
  checkAttribute,
  checkRequired,
  EventValidationError,
} from './event.js';
import { jsonDepthExceeded, MAX_JSON_DEPTH } from './json-depth.js';
import { batchFromJson, eventFromJson, eventToJson } from './json-format.js';

/** The body is not a CloudEvent we can read: malformed JSON, bad encoding, or no CloudEvent at all. */
export class MalformedEventError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MalformedEventError';
  }
}

/** The request's content type names an event format or charset we do not support (HTTP 415). */
export class UnsupportedMediaTypeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedMediaTypeError';
  }
}

export const STRUCTURED_JSON = 'application/cloudevents+json';
export const BATCH_JSON = 'application/cloudevents-batch+json';

const utf8 = new TextDecoder('utf-8', { fatal: true });
const NEEDS_ENCODING = /[^\x21\x23\x24\x26-\x7e]/;

/** Percent-encodes an attribute value for an HTTP header (§3.1.3.2). */
export function percentEncode(s: string): string {
  if (!NEEDS_ENCODING.test(s)) return s;
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c >= 0x21 && c <= 0x7e && c !== 0x22 && c !== 0x25) {
      out += ch;
    } else {
      for (const b of Buffer.from(ch, 'utf8')) out += `%${b < 16 ? '0' : ''}${b.toString(16).toUpperCase()}`;
    }
  }
  return out;
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/**
 * Decodes a header value into an attribute string: quoted-string unescaping, then one round of
 * percent-decoding; byte sequences that are not valid UTF-8 are rejected.
 */
export function decodeHeaderValue(attribute: string, raw: string): string {
  let v = raw.trim();
  if (v.length > 0 && v.charCodeAt(0) === 0x22) {
    if (v.length < 2 || v.charCodeAt(v.length - 1) !== 0x22) {
      throw new EventValidationError(attribute, 'a quoted header value must end with a double quote');
    }
    let s = '';
    for (let i = 1; i < v.length - 1; i++) {
      let ch = v[i]!;
      if (ch === '\\') {
        i++;
        if (i >= v.length - 1)
          throw new EventValidationError(attribute, 'a quoted header value ends in a backslash');
        ch = v[i]!;
      } else if (ch === '"') {
        throw new EventValidationError(attribute, 'an unescaped double quote inside a quoted header value');
      }
      s += ch;
    }
    v = s;
  }
  let highest = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c > highest) highest = c;
  }
  // Above 0xFF the value is already Unicode (headers handed over in-process, not read from a socket).
  if (highest > 0x7e && highest <= 0xff) {
    // Node reads header bytes as latin1; re-read them as the UTF-8 the sender meant, strictly.
    try {
      v = utf8.decode(Buffer.from(v, 'latin1'));
    } catch {
      throw new EventValidationError(attribute, 'header value is not valid UTF-8');
    }
  }
  if (v.indexOf('%') === -1) return v;
  const bytes: number[] = [];
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0x25) {
      const hi = hexVal(v.charCodeAt(i + 1));
      const lo = hexVal(v.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) {
        throw new EventValidationError(
          attribute,
          `invalid percent-encoding at position ${i}: '%' must be followed by two hex digits`,
        );
      }
      bytes.push(hi * 16 + lo);
      i += 2;
    } else if (c < 0x80) {
      bytes.push(c);
    } else {
      for (const b of Buffer.from(String.fromCharCode(c), 'utf8')) bytes.push(b);
    }
  }
  try {
    return utf8.decode(Uint8Array.from(bytes));
  } catch {
    throw new EventValidationError(attribute, 'percent-encoded bytes are not valid UTF-8');
  }
}

/** The media type without parameters, lower-cased, and its charset parameter if any. */
export function parseContentType(ct: string | undefined): { type: string; charset: string | undefined } {
  if (ct === undefined) return { type: '', charset: undefined };
  const parts = ct.split(';');
  const type = parts[0]!.trim().toLowerCase();
  let charset: string | undefined;
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i]!;
    const eq = p.indexOf('=');
    if (eq !== -1 && p.slice(0, eq).trim().toLowerCase() === 'charset') {
      charset = p
        .slice(eq + 1)
        .trim()
        .replace(/^"|"$/g, '')
        .toLowerCase();
    }
  }
  return { type, charset };
}

/** Parses a JSON body (UTF-8, nesting bounded), or throws the error that says what is wrong with it. */
export function parseJsonBody(body: Buffer, charset: string | undefined): unknown {
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw new UnsupportedMediaTypeError(`charset '${charset}' is not supported; send UTF-8`);
  }
  if (!isUtf8(body)) throw new MalformedEventError('the body is not valid UTF-8');
  const text = body.toString('utf8');
  const at = jsonDepthExceeded(text, MAX_JSON_DEPTH);
  if (at >= 0)
    throw new MalformedEventError(
      `the body nests JSON deeper than ${MAX_JSON_DEPTH} levels (at offset ${at}); send deeper data in binary mode`,
    );
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new MalformedEventError(`the body is not valid JSON: ${(err as Error).message}`);
  }
}

/** Which of the three HTTP modes a request uses, judged from its content type and headers. */
export type HttpMode = 'binary' | 'structured' | 'batch';

/**
 * Decodes an HTTP message into events. `rawHeaders` is Node's flat `[name, value, ...]` list, so duplicated
 * `ce-` headers are seen (Node would otherwise join them with a comma).
 *
 * @example
 * const events = decodeHttp(req.rawHeaders, body); // binary, structured or batch
 */
export function decodeHttp(
  rawHeaders: readonly string[],
  body: Buffer,
): { mode: HttpMode; events: CloudEvent[] } {
  let contentType: string | undefined;
  let hasSpecVersion = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 12 && name.toLowerCase() === 'content-type') {
      if (contentType !== undefined)
        throw new MalformedEventError('the Content-Type header appears more than once');
      contentType = rawHeaders[i + 1];
    } else if (name.length === 14 && name.toLowerCase() === 'ce-specversion') {
      hasSpecVersion = true;
    }
  }
  const { type, charset } = parseContentType(contentType);
  if (type === STRUCTURED_JSON)
    return { mode: 'structured', events: [eventFromJson(parseJsonBody(body, charset))] };
  if (type === BATCH_JSON) return { mode: 'batch', events: batchFromJson(parseJsonBody(body, charset)) };
  if (type.startsWith('application/cloudevents')) {
    throw new UnsupportedMediaTypeError(
      `event format '${type}' is not supported; use ${STRUCTURED_JSON}, ${BATCH_JSON} or binary mode`,
    );
  }
  if (!hasSpecVersion) {
    throw new MalformedEventError(
      `not a CloudEvent: binary mode needs a ce-specversion header, structured mode Content-Type ${STRUCTURED_JSON}`,
    );
  }
  return { mode: 'binary', events: [decodeBinary(rawHeaders, body, contentType)] };
}

function decodeBinary(
  rawHeaders: readonly string[],
  body: Buffer,
  contentType: string | undefined,
): CloudEvent {
  const attrs: Record<string, AttributeValue> = {};
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const header = rawHeaders[i]!;
    if (header.length < 4) continue;
    const c0 = header.charCodeAt(0) | 0x20;
    const c1 = header.charCodeAt(1) | 0x20;
    if (c0 !== 0x63 || c1 !== 0x65 || header.charCodeAt(2) !== 0x2d) continue; // "ce-"
    const name = header.slice(3).toLowerCase();
    if (attrs[name] !== undefined)
      throw new EventValidationError(name, `header ce-${name} appears more than once`);
    if (name === 'datacontenttype') {
      throw new EventValidationError(
        name,
        'in binary mode the data content type travels in Content-Type, not ce-datacontenttype',
      );
    }
    attrs[name] = checkAttribute(name, decodeHeaderValue(name, rawHeaders[i + 1]!));
  }
  if (contentType !== undefined)
    attrs['datacontenttype'] = checkAttribute('datacontenttype', contentType.trim());
  checkRequired(attrs);
  return body.length > 0 ? { attrs, data: body } : { attrs };
}

/** Headers and body of an HTTP message. */
export interface HttpMessage {
  headers: Record<string, string>;
  body: Buffer | string | undefined;
}

/**
 * Encodes an event in binary mode: one `ce-` header per attribute, data as the body. `omit` names attributes
 * left out (the Broker drops its loop guard on delivery); `extra` headers are added as they are.
 */
export function encodeBinary(e: CloudEvent, omit?: string, extra?: Record<string, string>): HttpMessage {
  const headers: Record<string, string> = {};
  for (const name in e.attrs) {
    if (name === omit) continue;
    if (name === 'datacontenttype') headers['content-type'] = e.attrs[name] as string;
    else headers[`ce-${name}`] = percentEncode(canonicalString(e.attrs[name]!));
  }
  if (extra !== undefined) for (const k in extra) headers[k] = extra[k]!;
  return { headers, body: e.data };
}

/** Encodes an event in structured mode with the JSON format. */
export function encodeStructured(e: CloudEvent): HttpMessage {
  return {
    headers: { 'content-type': `${STRUCTURED_JSON}; charset=utf-8` },
    body: JSON.stringify(eventToJson(e)),
  };
}

/** Encodes events as one batched-mode message. */
export function encodeBatch(events: readonly CloudEvent[]): HttpMessage {
  return {
    headers: { 'content-type': `${BATCH_JSON}; charset=utf-8` },
    body: JSON.stringify(events.map(eventToJson)),
  };
}

/** Turns a headers object (as undici returns it) into Node's flat raw-headers list. */
export function flattenHeaders(headers: Record<string, string | string[] | undefined>): string[] {
  const out: string[] = [];
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(k, x);
    else out.push(k, v);
  }
  return out;
}
