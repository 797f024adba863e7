/**
 * Knative's Destination (`{ref, uri}`) and DeliverySpec: validation with field paths, and the resolved
 * retry policy the dispatcher uses.
 * @module
 */
import { X509Certificate } from 'node:crypto';
import { ADDRESSABLE_API } from './addressing.js';
import { parseDuration } from './duration.js';
import { parseRate } from './rate.js';
import { DNS1123_LABEL, DNS1123_SUBDOMAIN, invalid, objectAt, stringAt } from './validation.js';

export interface KReference {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
}

export interface Destination {
  ref?: KReference;
  uri?: string;
  /** PEM certificates of the CAs that sign the destination's https certificate (beside the system's). */
  CACerts?: string;
  /** The OIDC audience of the destination: its deliveries carry a token Trellis mints for it. */
  audience?: string;
}

export interface DeliverySpec {
  retry?: number;
  backoffPolicy?: 'linear' | 'exponential';
  backoffDelay?: string;
  timeout?: string;
  retryAfterMax?: string;
  /** Trellis extension: the longest wait between two attempts (Knative has no cap). */
  backoffMax?: string;
  deadLetterSink?: Destination;
}

const BEGIN = '-----BEGIN CERTIFICATE-----';
const END = '-----END CERTIFICATE-----';

/** Checks PEM CA certificates (at most 16, 64 KiB in all): each must parse as an X.509 certificate. */
function validateCACerts(path: string, v: unknown): string {
  if (typeof v !== 'string') invalid(path, 'must be PEM certificates as a string');
  if (v.length > 65_536) invalid(path, 'is over 64 KiB');
  const certs: string[] = [];
  // Found by position, not by a pattern: linear in the input, whatever it holds.
  for (let at = v.indexOf(BEGIN); at >= 0; at = v.indexOf(BEGIN, at)) {
    const end = v.indexOf(END, at);
    if (end < 0) invalid(path, `certificate ${certs.length + 1} has no ${END} line`);
    certs.push(v.slice(at, end + END.length));
    if (certs.length > 16) invalid(path, 'holds more than 16 certificates');
    at = end + END.length;
  }
  if (certs.length === 0) invalid(path, `must hold PEM certificates (${BEGIN} ...)`);
  for (const [i, pem] of certs.entries()) {
    try {
      new X509Certificate(pem);
    } catch (err) {
      invalid(path, `certificate ${i + 1} does not parse: ${(err as Error).message}`);
    }
  }
  return certs.join('\n');
}

/** Validates a `{ref, uri}` destination; `namespace` is the default for `ref.namespace`. */
export function validateDestination(path: string, v: unknown, namespace: string): Destination {
  const o = objectAt(path, v, ['ref', 'uri', 'CACerts', 'audience'])!;
  const out: Destination = {};
  if (o['ref'] !== undefined) {
    const r = objectAt(`${path}.ref`, o['ref'], ['apiVersion', 'kind', 'name', 'namespace'])!;
    const kind = stringAt(`${path}.ref.kind`, r['kind'])!;
    const apiVersion = stringAt(`${path}.ref.apiVersion`, r['apiVersion'])!;
    const name = stringAt(`${path}.ref.name`, r['name'])!;
    const ns = stringAt(`${path}.ref.namespace`, r['namespace'], true) ?? namespace;
    // Any kind is accepted (Knative's YAML names Kubernetes and Knative Serving Services): one Trellis
    // cannot address leaves the resource not Ready, with a message that says how to give it an address.
    const want = ADDRESSABLE_API[kind];
    if (want !== undefined && apiVersion !== want)
      invalid(`${path}.ref.apiVersion`, `must be '${want}' for kind ${kind}`);
    if (!DNS1123_SUBDOMAIN.test(name))
      invalid(`${path}.ref.name`, 'must be a DNS-1123 name (a-z, 0-9, -, .)');
    if (!DNS1123_LABEL.test(ns)) invalid(`${path}.ref.namespace`, 'must be a DNS-1123 label (a-z, 0-9, -)');
    out.ref = { apiVersion, kind, name, namespace: ns };
  }
  if (o['uri'] !== undefined) {
    const uri = stringAt(`${path}.uri`, o['uri'])!;
    if (out.ref === undefined) {
      let u: URL;
      try {
        u = new URL(uri);
      } catch {
        invalid(`${path}.uri`, `'${uri}' is not an absolute URL such as http://127.0.0.1:8081/`);
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') invalid(`${path}.uri`, 'must use http or https');
      // A password in a URL would be stored in plain text and printed by every get and export.
      if (u.username !== '' || u.password !== '')
        invalid(
          `${path}.uri`,
          'must not carry credentials (user:password@): they would be stored and shown in plain text; ' +
            'have the subscriber check a token or a signature instead (docs/security.md)',
        );
    } else if (/^[a-z][a-z0-9+.-]*:/i.test(uri)) {
      invalid(`${path}.uri`, 'with a ref, uri must be a relative path appended to the ref address');
    }
    out.uri = uri;
  }
  if (out.ref === undefined && out.uri === undefined) invalid(path, 'needs a uri or a ref');
  if (o['CACerts'] !== undefined && o['CACerts'] !== null && o['CACerts'] !== '')
    out.CACerts = validateCACerts(`${path}.CACerts`, o['CACerts']);
  const aud = stringAt(`${path}.audience`, o['audience'], true);
  if (aud !== undefined && aud !== '') {
    if (aud.length > 512 || /[\u0000-\u001f]/.test(aud))
      invalid(`${path}.audience`, 'must be at most 512 printable characters');
    out.audience = aud;
  }
  return out;
}

/** The most retries a DeliverySpec may ask for. */
export const MAX_RETRY = 10_000;
/** The longest backoffDelay, backoffMax and retryAfterMax: 365 days. */
const MAX_WAIT = { ms: 365 * 24 * 3600 * 1000, text: 'P365D' };
/** The longest delivery timeout: one day. */
const MAX_TIMEOUT = { ms: 24 * 3600 * 1000, text: 'PT24H' };

function durationAt(path: string, v: unknown, max: { ms: number; text: string }): string | undefined {
  const s = stringAt(path, v, true);
  if (s === undefined) return undefined;
  const ms = parseDuration(s);
  if (ms === undefined) invalid(path, `'${s}' is not an ISO-8601 duration such as PT0.5S or PT1M`);
  if (!(ms <= max.ms)) invalid(path, `'${s}' is longer than the most Trellis accepts, ${max.text}`);
  return s;
}

/** Validates a DeliverySpec; returns undefined when it is absent. */
export function validateDelivery(path: string, v: unknown, namespace: string): DeliverySpec | undefined {
  const o = objectAt(
    path,
    v,
    [
      'retry',
      'backoffPolicy',
      'backoffDelay',
      'timeout',
      'retryAfterMax',
      'backoffMax',
      'deadLetterSink',
      'format',
    ],
    true,
  );
  if (o === undefined) return undefined;
  const out: DeliverySpec = {};
  if (o['retry'] !== undefined) {
    const r = o['retry'];
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r > MAX_RETRY)
      invalid(`${path}.retry`, `must be a whole number from 0 to ${MAX_RETRY}`);
    out.retry = r;
  }
  if (o['backoffPolicy'] !== undefined) {
    const p = o['backoffPolicy'];
    if (p !== 'linear' && p !== 'exponential')
      invalid(`${path}.backoffPolicy`, "must be 'linear' or 'exponential'");
    out.backoffPolicy = p;
  }
  for (const k of ['backoffDelay', 'timeout', 'retryAfterMax', 'backoffMax'] as const) {
    const d = durationAt(`${path}.${k}`, o[k], k === 'timeout' ? MAX_TIMEOUT : MAX_WAIT);
    if (d !== undefined) out[k] = d;
  }
  if (out.timeout !== undefined && parseDuration(out.timeout) === 0)
    invalid(`${path}.timeout`, 'must be longer than 0');
  if (o['format'] !== undefined && o['format'] !== 'binary') {
    invalid(`${path}.format`, "only 'binary' is supported: Trellis delivers in binary mode");
  }
  if (o['deadLetterSink'] !== undefined) {
    out.deadLetterSink = validateDestination(`${path}.deadLetterSink`, o['deadLetterSink'], namespace);
  }
  return out;
}

/** Knative's Kafka broker annotation for ordered delivery, accepted on Triggers and Subscriptions. */
export const ORDER_ANNOTATION = 'kafka.eventing.knative.dev/delivery.order';

/** Checks the delivery-order annotation: `ordered` or `unordered`. */
export function validateOrderAnnotation(annotations: Record<string, string> | undefined): void {
  const v = annotations?.[ORDER_ANNOTATION];
  if (v !== undefined && v !== 'ordered' && v !== 'unordered')
    invalid(`metadata.annotations.${ORDER_ANNOTATION}`, `must be 'ordered' or 'unordered', got '${v}'`);
  validateFlowAnnotations(annotations);
}

/** `100/s`, `6000/m,200`: the events per second HTTP ingress takes for a Broker, Channel or flow. */
export const RATE_LIMIT_ANNOTATION = 'trellis.dev/rate-limit';
/** The same, for each sender (its network address until senders authenticate). */
export const RATE_LIMIT_PER_SENDER_ANNOTATION = 'trellis.dev/rate-limit-per-sender';

/** Checks the rate-limit annotations of something that takes events. */
export function validateRateAnnotations(annotations: Record<string, string> | undefined): void {
  for (const k of [RATE_LIMIT_ANNOTATION, RATE_LIMIT_PER_SENDER_ANNOTATION]) {
    const v = annotations?.[k];
    if (v !== undefined && parseRate(v) === undefined)
      invalid(
        `metadata.annotations.${k}`,
        `must be events per second, minute or hour, optionally with a burst, such as 100/s, 6000/m or 100/s,500 (quoted in YAML), got '${v.slice(0, 40)}'`,
      );
  }
}

/** The delivery annotations a flow (Sequence, Parallel) reads: dead letters, signing, rate limits. */
export function validateFlowAnnotations(annotations: Record<string, string> | undefined): void {
  validateDeadLettersAnnotation(annotations);
  validateRateAnnotations(annotations);
  const v = annotations?.[SIGNING_ANNOTATION];
  if (v !== undefined && !/^(env:[A-Za-z_][A-Za-z0-9_]{0,127}|file:\/[^\u0000]{1,4095})$/.test(v))
    invalid(
      `metadata.annotations.${SIGNING_ANNOTATION}`,
      `must name where the secret is: env:VARIABLE (of the server) or file:/absolute/path, got '${v.slice(0, 80)}'`,
    );
}

/**
 * `env:NAME` or `file:/path`: every delivery of the Trigger, Subscription or flow is signed per Standard
 * Webhooks with the secret there (the annotation names the secret; it never holds it).
 */
export const SIGNING_ANNOTATION = 'trellis.dev/webhook-secret';

/**
 * `keep` on a Trigger, Subscription, Sequence or Parallel (or on a Broker or Channel, for all of its):
 * events that fail for good are kept in Trellis's dead-letter store, beside any deadLetterSink.
 */
export const DEAD_LETTERS_ANNOTATION = 'trellis.dev/dead-letters';

export function validateDeadLettersAnnotation(annotations: Record<string, string> | undefined): void {
  const v = annotations?.[DEAD_LETTERS_ANNOTATION];
  if (v !== undefined && v !== 'keep' && v !== 'none')
    invalid(`metadata.annotations.${DEAD_LETTERS_ANNOTATION}`, `must be 'keep' or 'none', got '${v}'`);
}

/** Whether a subscription keeps its dead letters: its own annotation, else its Broker's or Channel's. */
export function keepsDeadLetters(
  own: Record<string, string> | undefined,
  owner?: Record<string, string> | undefined,
): boolean {
  return (own?.[DEAD_LETTERS_ANNOTATION] ?? owner?.[DEAD_LETTERS_ANNOTATION]) === 'keep';
}
