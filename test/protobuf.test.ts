/**
 * The CloudEvents Protobuf format: round trips, and interoperation with protobufjs reading the
 * specification's own cloudevents.proto (../shared/reference/cloudevents/), both ways; bad input.
 */
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import type { CloudEvent } from '../src/cloudevents/event.js';
import { EventValidationError } from '../src/cloudevents/event.js';
import { eventFromProtobuf, eventToProtobuf } from '../src/cloudevents/protobuf.js';
import { sharedPath } from './helpers/shared.js';

const full: CloudEvent = {
  attrs: {
    specversion: '1.0',
    id: 'e-1',
    source: '/shop/checkout',
    type: 'order.created',
    subject: 'order/42',
    time: '2026-12-01T10:00:00.123456789Z',
    dataschema: 'https://example.com/schema.json',
    datacontenttype: 'application/json',
    partitionkey: 'k1',
    amount: -42,
    urgent: false,
    priority: true,
  },
  data: Buffer.from('{"id":42}'),
};

describe('CloudEvents protobuf format', () => {
  it('round-trips every attribute type and each kind of data', () => {
    expect(eventFromProtobuf(eventToProtobuf(full))).toEqual(full);
    const binary: CloudEvent = {
      attrs: { specversion: '1.0', id: 'b', source: '/s', type: 't', datacontenttype: 'image/png' },
      data: Buffer.from([0, 1, 2, 255]),
    };
    expect(eventFromProtobuf(eventToProtobuf(binary))).toEqual(binary);
    const none: CloudEvent = { attrs: { specversion: '1.0', id: 'n', source: '/s', type: 't' } };
    expect(eventFromProtobuf(eventToProtobuf(none))).toEqual(none);
    const emptyText: CloudEvent = {
      attrs: { specversion: '1.0', id: 'x', source: '/s', type: 't', datacontenttype: 'text/plain' },
      data: Buffer.alloc(0),
    };
    expect(eventFromProtobuf(eventToProtobuf(emptyText))).toEqual(emptyText);
  });

  const proto = sharedPath('reference/cloudevents/cloudevents.proto');
  it.skipIf(proto === undefined)(
    'interoperates with protobufjs on the specification’s cloudevents.proto',
    async () => {
      const root = await protobuf.load(join(proto!));
      const T = root.lookupType('io.cloudevents.v1.CloudEvent');
      // Ours → theirs.
      const theirs = T.toObject(T.decode(eventToProtobuf(full)), { longs: Number, bytes: Buffer }) as {
        textData?: string;
        attributes: Record<string, Record<string, unknown>>;
      };
      expect(theirs).toMatchObject({
        id: 'e-1',
        source: '/shop/checkout',
        specVersion: '1.0',
        type: 'order.created',
      });
      expect(theirs['textData']).toBe('{"id":42}');
      expect(theirs['attributes']['amount']).toEqual({ ceInteger: -42 });
      expect(theirs['attributes']['urgent']).toEqual({ ceBoolean: false });
      expect(theirs['attributes']['dataschema']).toEqual({ ceUri: 'https://example.com/schema.json' });
      expect(theirs['attributes']['time']?.['ceTimestamp']).toEqual({
        seconds: 1796119200,
        nanos: 123456789,
      });
      // Theirs → ours: every attribute value kind, and protobuf data.
      const msg = T.fromObject({
        id: 'p-1',
        source: '/sensors',
        specVersion: '1.0',
        type: 'reading',
        attributes: {
          time: { ceTimestamp: { seconds: 1796119200, nanos: 5_000_000 } },
          sig: { ceBytes: Buffer.from('hi') },
          origin: { ceUriRef: '/a/b' },
          count: { ceInteger: 7 },
        },
        protoData: { type_url: 'type.googleapis.com/sensors.Reading', value: Buffer.from([8, 1]) },
      });
      const ours = eventFromProtobuf(T.encode(msg).finish());
      expect(ours.attrs).toMatchObject({
        id: 'p-1',
        time: '2026-12-01T10:00:00.005Z',
        sig: Buffer.from('hi').toString('base64'),
        origin: '/a/b',
        count: 7,
        datacontenttype: 'application/protobuf',
        dataschema: 'type.googleapis.com/sensors.Reading',
      });
      expect(ours.data).toEqual(Buffer.from([8, 1]));
    },
  );

  it('refuses what is not an event, naming why', () => {
    const whole = eventToProtobuf(full);
    const truncated = whole.subarray(0, whole.length - 1);
    expect(() => eventFromProtobuf(truncated)).toThrow(EventValidationError);
    expect(() => eventFromProtobuf(truncated)).toThrow(/past the end/);
    // A required attribute in the attributes map is refused (it has its own field).
    const root = protobuf.Root.fromJSON({
      nested: {
        E: {
          fields: {
            id: { type: 'string', id: 1 },
            source: { type: 'string', id: 2 },
            specVersion: { type: 'string', id: 3 },
            type: { type: 'string', id: 4 },
            attributes: { keyType: 'string', type: 'V', id: 5 },
          },
        },
        V: { fields: { ceString: { type: 'string', id: 3 } } },
      },
    } as protobuf.INamespace);
    const E = root.lookupType('E');
    const noType = E.encode(E.fromObject({ id: 'a', source: '/s', specVersion: '1.0' })).finish();
    expect(() => eventFromProtobuf(noType)).toThrow(/type/);
    const dup = E.encode(
      E.fromObject({
        id: 'a',
        source: '/s',
        specVersion: '1.0',
        type: 't',
        attributes: { id: { ceString: 'b' } },
      }),
    ).finish();
    expect(() => eventFromProtobuf(dup)).toThrow(/own field/);
    // A bad attribute name, and a varint that never ends.
    const badName = E.encode(
      E.fromObject({
        id: 'a',
        source: '/s',
        specVersion: '1.0',
        type: 't',
        attributes: { 'Bad-Name': { ceString: 'x' } },
      }),
    ).finish();
    expect(() => eventFromProtobuf(badName)).toThrow(EventValidationError);
    expect(() =>
      eventFromProtobuf(
        Buffer.from([0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
      ),
    ).toThrow(/varint/);
  });
});
