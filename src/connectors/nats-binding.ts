/**
 * The CloudEvents NATS protocol binding: binary mode puts every attribute in a `ce-` header (percent-
 * encoded as in HTTP, `ce-datacontenttype` included) and the data in the payload; structured mode puts
 * the JSON event format in the payload with `Content-Type: application/cloudevents+json`. A message that
 * is not a CloudEvent (or breaks its rules) is wrapped in one, so that nothing a subject carries is lost.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import {
  decodeHeaderValue,
  decodeHttp,
  encodeBinary,
  encodeStructured,
  percentEncode,
} from '../cloudevents/http.js';
import { wrapMessage } from './runners.js';

/** Header name and value pairs, as NATS carries them (a name may repeat). */
export type HeaderList = [string, string][];

/** The type of an event made from a NATS message that was not a CloudEvent. */
export const NATS_MESSAGE_TYPE = 'dev.trellis.nats.message';

/** Decodes a message per the binding; throws (with the rule broken) when it is not a valid CloudEvent. */
export function decodeNats(headers: HeaderList, payload: Buffer): CloudEvent {
  const flat: string[] = [];
  let ceContentType: string | undefined;
  let contentType: string | undefined;
  for (const [k, v] of headers) {
    const lk = k.toLowerCase();
    if (lk === 'ce-datacontenttype') ceContentType = v;
    else if (lk === 'content-type') contentType = v;
    else flat.push(k, v);
  }
  const structured = contentType?.toLowerCase().startsWith('application/cloudevents') === true;
  if (structured) {
    if (contentType!.toLowerCase().startsWith('application/cloudevents-batch'))
      throw new Error('the NATS binding has no batch mode');
    flat.push('content-type', contentType!);
  } else if (ceContentType !== undefined)
    flat.push('content-type', decodeHeaderValue('datacontenttype', ceContentType));
  return decodeHttp(flat, payload).events[0]!;
}

/** True when a message claims to be a CloudEvent (a `ce-specversion` header, or the structured content type). */
export function looksLikeCloudEvent(headers: HeaderList): boolean {
  return headers.some(
    ([k, v]) =>
      k.toLowerCase() === 'ce-specversion' ||
      (k.toLowerCase() === 'content-type' && v.toLowerCase().startsWith('application/cloudevents')),
  );
}

/**
 * A CloudEvent around a message that is not one: type `dev.trellis.nats.message`, source
 * `nats://SUBJECT`, the payload as data (its Content-Type header, if any, as datacontenttype), and, when
 * the message claimed to be a CloudEvent and was not, the reason in the `trellisinvalid` extension.
 */
export function wrapNats(
  subject: string,
  id: string,
  headers: HeaderList,
  payload: Buffer,
  invalid?: string,
): CloudEvent {
  const ct = headers.find(([k]) => k.toLowerCase() === 'content-type')?.[1];
  return wrapMessage(
    { id, source: `nats://${encodeURI(subject)}`, type: NATS_MESSAGE_TYPE, subject },
    payload,
    ct,
    invalid,
  );
}

/** Encodes an event as a NATS message in binary (default) or structured mode. */
export function encodeNats(
  e: CloudEvent,
  mode: 'binary' | 'structured' = 'binary',
): { headers: HeaderList; payload: Buffer } {
  const msg = mode === 'structured' ? encodeStructured(e) : encodeBinary(e);
  const headers: HeaderList = [];
  for (const [k, v] of Object.entries(msg.headers)) {
    if (mode === 'binary' && k === 'content-type') headers.push(['ce-datacontenttype', percentEncode(v)]);
    else headers.push([k, v]);
  }
  const body =
    msg.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(msg.body) ? msg.body : Buffer.from(msg.body);
  return { headers, payload: body };
}
