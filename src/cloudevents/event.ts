/**
 * The CloudEvent model used everywhere in Trellis, and its validation per CloudEvents 1.0.2.
 * @module
 */

/** A context attribute value as it travels in JSON: strings, booleans and 32-bit integers. */
export type AttributeValue = string | number | boolean;

/**
 * A CloudEvent. Context attributes (required, optional and extensions) live in `attrs`; the data is kept
 * as the bytes that would travel in an HTTP binary-mode body, so routing never parses it.
 */
export interface CloudEvent {
  attrs: Record<string, AttributeValue>;
  data?: Buffer | undefined;
}

/** One reason an event is invalid: the attribute at fault and the rule it breaks. */
export class EventValidationError extends Error {
  constructor(
    readonly attribute: string,
    readonly rule: string,
  ) {
    super(`attribute '${attribute}': ${rule}`);
    this.name = 'EventValidationError';
  }
}

export const REQUIRED_ATTRIBUTES = ['specversion', 'id', 'source', 'type'] as const;
export const OPTIONAL_ATTRIBUTES = ['datacontenttype', 'dataschema', 'subject', 'time'] as const;
const CORE = new Set<string>([...REQUIRED_ATTRIBUTES, ...OPTIONAL_ATTRIBUTES]);

/** Attribute (and extension) names: lower-case ASCII letters and digits (spec.md, "Attribute Naming Convention"). */
export const ATTRIBUTE_NAME = /^[a-z0-9]+$/;
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
// RFC 2046 media type: type "/" subtype, optional parameters.
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const MEDIA_TYPE = new RegExp(`^${TOKEN}/${TOKEN}\\s*(;.*)?$`);
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))$/;
const URI_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;
// Characters no URI or URI-reference may hold (RFC 3986 allows none of them unencoded).
const NOT_IN_URI = /[\s"<>\\^`{|}\u0000-\u001f\u007f-\u009f]/;
// Control characters are not allowed in any string attribute (spec.md, "Type System").
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** True when `s` is an RFC 3339 timestamp with valid field ranges. */
export function isRfc3339(s: string): boolean {
  const m = RFC3339.exec(s);
  if (!m) return false;
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const min = Number(m[5]);
  const sec = Number(m[6]);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) return false;
  if (m[9] !== undefined) {
    if (Number(m[10]) > 23 || Number(m[11]) > 59) return false;
  }
  return true;
}

/** True when `s` is an RFC 2046 media type such as `application/json; charset=utf-8`. */
export function isMediaType(s: string): boolean {
  return MEDIA_TYPE.test(s);
}

function checkString(name: string, v: unknown): string {
  if (typeof v !== 'string') throw new EventValidationError(name, `must be a string, got ${typeof v}`);
  if (v.length === 0) throw new EventValidationError(name, 'must be a non-empty string');
  if (CONTROL.test(v)) throw new EventValidationError(name, 'must not contain control characters');
  return v;
}

/**
 * Checks one attribute against the CloudEvents 1.0.2 rules for its name and type and returns the value.
 * Throws {@link EventValidationError} naming the attribute and the rule.
 */
export function checkAttribute(name: string, v: unknown): AttributeValue {
  switch (name) {
    case 'specversion':
      if (v === '0.3') throw new EventValidationError(name, "CloudEvents 0.3 is not supported; send '1.0'");
      if (v !== '1.0') throw new EventValidationError(name, `must be '1.0', got ${JSON.stringify(v)}`);
      return v;
    case 'id':
    case 'type':
    case 'subject':
      return checkString(name, v);
    case 'source': {
      const s = checkString(name, v);
      if (NOT_IN_URI.test(s)) throw new EventValidationError(name, 'must be a URI-reference (RFC 3986)');
      return s;
    }
    case 'dataschema': {
      const s = checkString(name, v);
      if (!URI_SCHEME.test(s) || NOT_IN_URI.test(s)) {
        throw new EventValidationError(name, 'must be an absolute URI (RFC 3986) with a scheme');
      }
      return s;
    }
    case 'datacontenttype': {
      const s = checkString(name, v);
      if (!isMediaType(s))
        throw new EventValidationError(name, "must be an RFC 2046 media type such as 'application/json'");
      return s;
    }
    case 'time': {
      const s = checkString(name, v);
      if (!isRfc3339(s))
        throw new EventValidationError(name, "must be an RFC 3339 timestamp such as '2018-04-05T17:31:00Z'");
      return s;
    }
    default:
      return checkExtension(name, v);
  }
}

function checkExtension(name: string, v: unknown): AttributeValue {
  if (!ATTRIBUTE_NAME.test(name)) {
    throw new EventValidationError(
      name,
      'extension names must use only lower-case letters a-z and digits 0-9',
    );
  }
  if (name === 'data') throw new EventValidationError(name, "'data' is reserved and cannot be an extension");
  if (typeof v === 'string') {
    if (CONTROL.test(v)) throw new EventValidationError(name, 'must not contain control characters');
    return v;
  }
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < INT32_MIN || v > INT32_MAX) {
      throw new EventValidationError(name, 'a number must be an Integer between -2147483648 and 2147483647');
    }
    return v;
  }
  throw new EventValidationError(
    name,
    `must be a String, Boolean or Integer, got ${v === null ? 'null' : typeof v}`,
  );
}

/** Checks that the required attributes are present; call after each attribute was checked. */
export function checkRequired(attrs: Record<string, AttributeValue>): void {
  for (const name of REQUIRED_ATTRIBUTES) {
    if (attrs[name] === undefined) throw new EventValidationError(name, 'is required');
  }
}

/** Validates a whole event in place; throws {@link EventValidationError} on the first fault. */
export function validateEvent(e: CloudEvent): CloudEvent {
  for (const [k, v] of Object.entries(e.attrs)) checkAttribute(k, v);
  checkRequired(e.attrs);
  return e;
}

/** True for a core (not extension) attribute name. */
export function isCoreAttribute(name: string): boolean {
  return CORE.has(name);
}

/** The canonical string form of an attribute value (used in headers and in filters). */
export function canonicalString(v: AttributeValue): string {
  return typeof v === 'string' ? v : String(v);
}

/** True when a media type denotes JSON: `application/json`, `text/json`, or any `+json` suffix. */
export function isJsonContentType(ct: string | undefined): boolean {
  if (ct === undefined) return true;
  const semi = ct.indexOf(';');
  const base = (semi === -1 ? ct : ct.slice(0, semi)).trim().toLowerCase();
  return base.endsWith('/json') || base.endsWith('+json');
}
