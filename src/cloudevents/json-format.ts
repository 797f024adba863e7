/**
 * The CloudEvents JSON event format (formats_json-format.md): single events and batches, `data` vs
 * `data_base64`, JSON detection by `* /json` and `* /*+json`.
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

import { jsonDepthExceeded, MAX_JSON_DEPTH } from './json-depth.js';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Reads one event from a parsed JSON value, validating every attribute.
 * `data` is turned into the bytes a binary-mode body would carry.
 */
export function eventFromJson(obj: unknown): CloudEvent {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new EventValidationError('(event)', 'a structured event must be a JSON object');
  }
  const src = obj as Record<string, unknown>;
  const attrs: Record<string, AttributeValue> = {};
  let data: Buffer | undefined;
  let hasData = false;
  let dataValue: unknown;
  let b64: unknown;
  for (const key in src) {
    const v = src[key];
    if (key === 'data') {
      hasData = true;
      dataValue = v;
      continue;
    }
    if (key === 'data_base64') {
      b64 = v;
      continue;
    }
    if (v === null || v === undefined) {
      if (key === 'specversion' || key === 'id' || key === 'source' || key === 'type') {
        throw new EventValidationError(key, 'is required and must not be null');
      }
      continue;
    }
    attrs[key] = checkAttribute(key, v);
  }
  checkRequired(attrs);
  if (hasData && b64 !== undefined && b64 !== null) {
    throw new EventValidationError('data_base64', "'data' and 'data_base64' must not both be present");
  }
  if (b64 !== undefined && b64 !== null) {
    if (typeof b64 !== 'string' || !BASE64.test(b64.replace(/\s+/g, ''))) {
      throw new EventValidationError('data_base64', 'must be a base64 string (RFC 4648)');
    }
    data = Buffer.from(b64, 'base64');
  } else if (hasData && dataValue !== null) {
    const ct = attrs['datacontenttype'] as string | undefined;
    if (isJsonContentType(ct)) {
      data = Buffer.from(JSON.stringify(dataValue));
      if (ct === undefined) attrs['datacontenttype'] = 'application/json';
    } else if (typeof dataValue === 'string') {
      data = Buffer.from(dataValue, 'utf8');
    } else {
      // A JSON value with a non-JSON content type: keep the JSON text (formats_json-format.md §3.1).
      data = Buffer.from(JSON.stringify(dataValue));
    }
  }
  return data === undefined ? { attrs } : { attrs, data };
}

/** Reads a batch (a JSON array of events); the error names the failing member by index. */
export function batchFromJson(arr: unknown): CloudEvent[] {
  if (!Array.isArray(arr))
    throw new EventValidationError('(batch)', 'a batch must be a JSON array of events');
  const out: CloudEvent[] = [];
  for (let i = 0; i < arr.length; i++) {
    try {
      out.push(eventFromJson(arr[i]));
    } catch (err) {
      if (err instanceof EventValidationError) {
        throw new EventValidationError(`[${i}].${err.attribute}`, err.rule);
      }
      throw err;
    }
  }
  return out;
}

/** The JSON object for an event in structured mode: JSON data inline, text as a string, other bytes base64. */
export function eventToJson(e: CloudEvent): Record<string, unknown> {
  const out: Record<string, unknown> = { ...e.attrs };
  if (e.data === undefined) return out;
  const ct = e.attrs['datacontenttype'] as string | undefined;
  if (isJsonContentType(ct)) {
    const text = e.data.toString('utf8');
    // Data sent in binary mode may nest deeper than JSON.stringify can re-encode: then it goes as base64.
    if (jsonDepthExceeded(text, MAX_JSON_DEPTH) < 0) {
      try {
        out['data'] = JSON.parse(text);
        return out;
      } catch {
        // not JSON after all: fall through to base64
      }
    }
  } else if (ct !== undefined && /^text\//i.test(ct)) {
    const s = e.data.toString('utf8');
    if (Buffer.byteLength(s) === e.data.length) {
      out['data'] = s;
      return out;
    }
  }
  out['data_base64'] = e.data.toString('base64');
  return out;
}
