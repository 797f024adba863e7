/** The CloudEvents core: validation, the HTTP binding's three modes, and agreement with the cloudevents SDK. */
import { HTTP, CloudEvent as SdkEvent } from 'cloudevents';
import { describe, expect, it } from 'vitest';
import { type CloudEvent, EventValidationError, isRfc3339, validateEvent } from '../src/cloudevents/event.js';
import {
  decodeHeaderValue,
  decodeHttp,
  encodeBinary,
  encodeStructured,
  flattenHeaders,
  MalformedEventError,
  percentEncode,
  UnsupportedMediaTypeError,
} from '../src/cloudevents/http.js';

const base = { specversion: '1.0', id: 'e1', source: '/src', type: 't.created' };

function invalidAttr(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof EventValidationError) return err.attribute;
    throw err;
  }
  throw new Error('expected an EventValidationError');
}

describe('validation', () => {
  it('accepts a minimal event', () => {
    expect(validateEvent({ attrs: { ...base } }).attrs['id']).toBe('e1');
  });
  it('names the missing required attribute', () => {
    for (const k of ['id', 'source', 'type', 'specversion']) {
      const attrs: Record<string, string> = { ...base };
      delete attrs[k];
      expect(invalidAttr(() => validateEvent({ attrs }))).toBe(k);
    }
  });
  it('rejects 0.3 with a message that says what to send', () => {
    expect(() => validateEvent({ attrs: { ...base, specversion: '0.3' } })).toThrow(
      /0\.3 is not supported; send '1\.0'/,
    );
  });
  it('checks the type system', () => {
    expect(invalidAttr(() => validateEvent({ attrs: { ...base, time: '2020-13-01T00:00:00Z' } }))).toBe(
      'time',
    );
    expect(invalidAttr(() => validateEvent({ attrs: { ...base, dataschema: 'relative/path' } }))).toBe(
      'dataschema',
    );
    expect(invalidAttr(() => validateEvent({ attrs: { ...base, datacontenttype: 'json' } }))).toBe(
      'datacontenttype',
    );
    expect(invalidAttr(() => validateEvent({ attrs: { ...base, big: 2 ** 31 } }))).toBe('big');
    expect(invalidAttr(() => validateEvent({ attrs: { ...base, 'Bad-Name': 'x' } }))).toBe('Bad-Name');
    expect(invalidAttr(() => validateEvent({ attrs: { ...base, source: 'has space' } }))).toBe('source');
    expect(validateEvent({ attrs: { ...base, n: -2147483648, ok: true } }).attrs['n']).toBe(-2147483648);
  });
  it('knows RFC 3339', () => {
    expect(isRfc3339('2018-04-05T17:31:00.123456789+01:00')).toBe(true);
    expect(isRfc3339('2018-04-05 17:31:00Z')).toBe(false);
    expect(isRfc3339('2018-04-05T24:00:00Z')).toBe(false);
  });
});

describe('HTTP binary mode', () => {
  it('reads ce- headers case-insensitively and the body as data', () => {
    const e = decodeHttp(
      [
        'CE-SpecVersion',
        '1.0',
        'Ce-Id',
        'x',
        'ce-source',
        '/s',
        'ce-type',
        't',
        'Content-Type',
        'text/plain',
        'ce-myext',
        'v',
      ],
      Buffer.from('hello'),
    ).events[0]!;
    expect(e.attrs).toEqual({
      specversion: '1.0',
      id: 'x',
      source: '/s',
      type: 't',
      datacontenttype: 'text/plain',
      myext: 'v',
    });
    expect(e.data?.toString()).toBe('hello');
  });
  it('percent-decodes and unquotes header values (§3.1.3.2)', () => {
    expect(decodeHeaderValue('x', 'Euro%20%E2%82%AC%20%F0%9F%98%80')).toBe('Euro € 😀');
    expect(decodeHeaderValue('x', '%e2%82%ac')).toBe('€');
    expect(decodeHeaderValue('x', '"quoted \\"value\\" here"')).toBe('quoted "value" here');
    expect(decodeHeaderValue('x', '%41BC')).toBe('ABC');
  });
  it('rejects invalid percent-encoding and invalid UTF-8', () => {
    expect(() => decodeHeaderValue('x', '%C0%A0')).toThrow(/not valid UTF-8/);
    expect(() => decodeHeaderValue('x', '%zz')).toThrow(/two hex digits/);
    expect(() => decodeHeaderValue('x', 'abc%4')).toThrow(/two hex digits/);
    expect(() => decodeHeaderValue('x', '"unterminated')).toThrow(/double quote/);
    expect(() => decodeHeaderValue('x', Buffer.from([0xc3, 0x28]).toString('latin1'))).toThrow(/UTF-8/);
  });
  it('encodes what must be encoded and nothing else', () => {
    expect(percentEncode('plain-value_1.0')).toBe('plain-value_1.0');
    expect(percentEncode('Euro € 😀')).toBe('Euro%20%E2%82%AC%20%F0%9F%98%80');
    expect(percentEncode('100% "sure"')).toBe('100%25%20%22sure%22');
  });
  it('rejects duplicated ce- headers', () => {
    const h = ['ce-specversion', '1.0', 'ce-id', 'a', 'ce-id', 'b', 'ce-source', '/s', 'ce-type', 't'];
    expect(() => decodeHttp(h, Buffer.alloc(0))).toThrow(/appears more than once/);
  });
  it('rejects a request with no CloudEvent in it', () => {
    expect(() => decodeHttp(['content-type', 'application/json'], Buffer.from('{}'))).toThrow(
      MalformedEventError,
    );
  });
  it('round-trips an event with unicode attributes', () => {
    const e: CloudEvent = {
      attrs: { ...base, subject: 'naïve "quote" 100%', ext: 'a b' },
      data: Buffer.from([0, 1, 2]),
    };
    const msg = encodeBinary(e);
    const back = decodeHttp(flattenHeaders(msg.headers), msg.body as Buffer).events[0]!;
    expect(back).toEqual(e);
  });
});

describe('HTTP structured and batched modes', () => {
  it('accepts content-type parameters in any case', () => {
    const body = Buffer.from(JSON.stringify({ ...base, data: { a: 1 } }));
    const e = decodeHttp(['Content-Type', 'Application/CloudEvents+JSON; Charset=UTF-8'], body).events[0]!;
    expect(e.attrs['datacontenttype']).toBe('application/json');
    expect(JSON.parse(e.data!.toString())).toEqual({ a: 1 });
  });
  it('reads data_base64 as bytes and text data as text', () => {
    const b = decodeHttp(
      ['content-type', 'application/cloudevents+json'],
      Buffer.from(JSON.stringify({ ...base, data_base64: 'AAEC' })),
    ).events[0]!;
    expect([...b.data!]).toEqual([0, 1, 2]);
    const t = decodeHttp(
      ['content-type', 'application/cloudevents+json'],
      Buffer.from(JSON.stringify({ ...base, datacontenttype: 'text/plain', data: 'hi' })),
    ).events[0]!;
    expect(t.data!.toString()).toBe('hi');
  });
  it('treats */*+json data as JSON', () => {
    const e = decodeHttp(
      ['content-type', 'application/cloudevents+json'],
      Buffer.from(JSON.stringify({ ...base, datacontenttype: 'application/vnd.x+json', data: { a: [1] } })),
    ).events[0]!;
    expect(e.data!.toString()).toBe('{"a":[1]}');
  });
  it('answers unsupported formats and charsets with UnsupportedMediaTypeError', () => {
    expect(() => decodeHttp(['content-type', 'application/cloudevents+xml'], Buffer.from('<x/>'))).toThrow(
      UnsupportedMediaTypeError,
    );
    expect(() =>
      decodeHttp(['content-type', 'application/cloudevents+json; charset=latin1'], Buffer.from('{}')),
    ).toThrow(UnsupportedMediaTypeError);
  });
  it('rejects broken JSON and invalid UTF-8 bodies', () => {
    expect(() => decodeHttp(['content-type', 'application/cloudevents+json'], Buffer.from('{"id":'))).toThrow(
      MalformedEventError,
    );
    expect(() =>
      decodeHttp(['content-type', 'application/cloudevents+json'], Buffer.from([0x7b, 0xff, 0x7d])),
    ).toThrow(/UTF-8/);
  });
  it('names the failing member of a batch', () => {
    const body = Buffer.from(JSON.stringify([base, { ...base, id: '' }]));
    expect(invalidAttr(() => decodeHttp(['content-type', 'application/cloudevents-batch+json'], body))).toBe(
      '[1].id',
    );
  });
});

describe('agreement with the cloudevents SDK', () => {
  const sdkEvent = new SdkEvent({
    specversion: '1.0',
    id: 'sdk-1',
    source: 'https://example.com/src',
    type: 'com.example.t',
    subject: 'sub ject €',
    time: '2024-01-02T03:04:05.000Z',
    datacontenttype: 'application/json',
    data: { hello: 'wörld', n: 1 },
    myext: 'ext value',
  });

  function sameAsSdk(e: CloudEvent): void {
    expect(e.attrs['id']).toBe(sdkEvent.id);
    expect(e.attrs['source']).toBe(sdkEvent.source);
    expect(e.attrs['type']).toBe(sdkEvent.type);
    expect(e.attrs['subject']).toBe(sdkEvent.subject);
    expect(e.attrs['time']).toBe(sdkEvent.time);
    expect(e.attrs['myext']).toBe('ext value');
    expect(JSON.parse(e.data!.toString())).toEqual(sdkEvent.data);
  }

  it('decodes what the SDK emits in binary mode', () => {
    const msg = HTTP.binary(sdkEvent);
    const body = Buffer.from(typeof msg.body === 'string' ? msg.body : JSON.stringify(msg.body));
    sameAsSdk(decodeHttp(flattenHeaders(msg.headers as Record<string, string>), body).events[0]!);
  });
  it('decodes what the SDK emits in structured mode', () => {
    const msg = HTTP.structured(sdkEvent);
    sameAsSdk(
      decodeHttp(flattenHeaders(msg.headers as Record<string, string>), Buffer.from(msg.body as string))
        .events[0]!,
    );
  });
  it('writes binary and structured messages the SDK reads back unchanged', () => {
    // The SDK (v10) does not percent-decode header values (§3.1.3.2), so in binary mode the values are
    // ones that need no encoding; structured mode carries the rest.
    const ascii: CloudEvent = {
      attrs: {
        ...base,
        source: 'https://example.com/x',
        subject: 'plain-subject',
        datacontenttype: 'application/json',
        myext: 'v1',
      },
      data: Buffer.from('{"k":"v"}'),
    };
    const unicode: CloudEvent = {
      ...ascii,
      attrs: { ...ascii.attrs, subject: 'naïve 100% €', myext: 'a "b"' },
    };
    for (const [e, msg] of [
      [ascii, encodeBinary(ascii)],
      [unicode, encodeStructured(unicode)],
    ] as const) {
      const body = Buffer.isBuffer(msg.body) ? msg.body.toString() : msg.body;
      const sdk = HTTP.toEvent({ headers: msg.headers, body }) as SdkEvent;
      expect(sdk.id).toBe('e1');
      expect(sdk.subject).toBe(e.attrs['subject']);
      expect(sdk['myext']).toBe(e.attrs['myext']);
      expect(sdk.data).toEqual({ k: 'v' });
    }
  });
});
