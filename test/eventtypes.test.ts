/** The EventType registry: declared (v1beta3, v1beta2, v1beta1), auto-registered, filtered, and checked at ingress. */
import { describe, expect, it } from 'vitest';
import { run, serve } from './helpers/process.js';
import { broker, ceHeaders, testServer } from './helpers/server.js';

const ET = '/apis/eventing.knative.dev/v1beta3/namespaces/default/eventtypes';

type EventTypeList = {
  items: {
    metadata: { name: string; labels?: Record<string, string> };
    spec: {
      attributes: { name: string; value?: string; required: boolean }[];
      reference?: { kind: string; name: string };
    };
    status?: { seen?: { count: number; lastSource: string }; conditions: { type: string; status: string }[] };
  }[];
};

function eventType(name: string, version: string, spec: Record<string, unknown>) {
  return { apiVersion: `eventing.knative.dev/${version}`, kind: 'EventType', metadata: { name }, spec };
}

const ORDER_SCHEMA = JSON.stringify({
  type: 'object',
  required: ['orderId', 'amount'],
  properties: { orderId: { type: 'string' }, amount: { type: 'number', minimum: 0 } },
});

describe('EventType', () => {
  it('accepts v1beta3, v1beta2 and v1beta1 and stores them as v1beta3', async () => {
    await using s = await testServer({ eventTypeAutoCreate: false });
    await s.apply(broker('default'));
    const ref = { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'default' };
    for (const doc of [
      eventType('a', 'v1beta3', {
        reference: ref,
        attributes: [{ name: 'type', value: 'order.created', required: true }],
      }),
      eventType('b', 'v1beta2', {
        type: 'order.shipped',
        source: '/shop',
        reference: ref,
        description: 'shipped',
      }),
      eventType('c', 'v1beta1', { type: 'order.cancelled', broker: 'default' }),
    ]) {
      const r = await s.apply(doc);
      expect([doc.metadata.name, r.status]).toEqual([doc.metadata.name, 201]);
      const o = (await r.json()) as {
        apiVersion: string;
        status: { conditions: { type: string; status: string }[] };
      };
      expect(o.apiVersion).toBe('eventing.knative.dev/v1beta3');
      expect(o.status.conditions[0]).toMatchObject({ type: 'Ready', status: 'True' });
    }
    const list = (await (await fetch(`${s.url}${ET}?type-prefix=order.s`)).json()) as EventTypeList;
    expect(list.items.map((i) => i.metadata.name)).toEqual(['b']);
    const byRef = (await (await fetch(`${s.url}${ET}?reference=broker/default`)).json()) as EventTypeList;
    expect(byRef.items.map((i) => i.metadata.name)).toEqual(['a', 'b', 'c']);
    const bad = await s.apply(
      eventType('d', 'v1beta3', {
        attributes: [{ name: 'source', required: true }],
        schemaData: '{"type": 5}',
      }),
    );
    expect(bad.status).toBe(400);
  });

  it('registers the types seen at ingress, with counts, and not past its limit', async () => {
    await using s = await testServer({ eventTypeFlushMs: 20 });
    await s.apply(broker('default'));
    for (let i = 0; i < 5; i++) await s.post('/default/default', ceHeaders(`x${i}`, 'user.signed-up'), '{}');
    await s.post('/default/default', ceHeaders('y', 'user.deleted'), '{}');
    await expect
      .poll(async () => {
        const l = (await (await fetch(`${s.url}${ET}`)).json()) as EventTypeList;
        return l.items.map((i) => [i.spec.attributes[0]!.value, i.status?.seen?.count]).sort();
      })
      .toEqual([
        ['user.deleted', 1],
        ['user.signed-up', 5],
      ]);
    const l = (await (await fetch(`${s.url}${ET}`)).json()) as EventTypeList;
    expect(l.items[0]!.metadata.labels?.['trellis.dev/auto-created']).toBe('true');
    expect(l.items[0]!.spec.reference).toMatchObject({ kind: 'Broker', name: 'default' });
    await s.post('/default/default', ceHeaders('z', 'user.signed-up'), '{}');
    await expect
      .poll(async () => {
        const x = (await (await fetch(`${s.url}${ET}?type-prefix=user.signed`)).json()) as EventTypeList;
        return x.items[0]?.status?.seen?.count;
      })
      .toBe(6);
  });

  it('a sender inventing types cannot create EventTypes without end', async () => {
    await using s = await testServer({ eventTypeFlushMs: 60_000, eventTypeLimit: 3 });
    await s.apply(broker('default'));
    for (let i = 0; i < 10; i++) await s.post('/default/default', ceHeaders(`r${i}`, `random.${i}`), '{}');
    await s.flushEventTypes();
    const count = async () => ((await (await fetch(`${s.url}${ET}`)).json()) as EventTypeList).items.length;
    expect(await count()).toBe(3);
    await s.post('/default/default', ceHeaders('r-more', 'random.more'), '{}');
    await s.flushEventTypes();
    expect(await count()).toBe(3);
  });

  it('checks events at ingress against declared EventTypes when the Broker asks for it', async () => {
    await using s = await testServer({ eventTypeAutoCreate: false });
    await s.apply({
      ...broker('shop'),
      metadata: {
        name: 'shop',
        namespace: 'default',
        annotations: { 'trellis.dev/validate-events': 'strict' },
      },
    });
    await s.apply(
      eventType('order-created', 'v1beta3', {
        reference: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'shop' },
        attributes: [
          { name: 'type', value: 'order.created', required: true },
          { name: 'subject', required: true },
        ],
        schemaData: ORDER_SCHEMA,
      }),
    );
    const post = (id: string, type: string, extra: Record<string, string>, body: string) =>
      s.post('/default/shop', ceHeaders(id, type, extra), body);
    expect(
      (await post('1', 'order.created', { 'ce-subject': 'o-1' }, '{"orderId":"o-1","amount":5}')).status,
    ).toBe(202);
    const noSubject = await post('2', 'order.created', {}, '{"orderId":"o-1","amount":5}');
    expect(noSubject.status).toBe(400);
    expect(await noSubject.json()).toMatchObject({
      code: 'TRELLIS_ERR_EVENT_TYPE_INVALID',
      attribute: 'subject',
      eventType: 'default/order-created',
    });
    const badData = await post(
      '3',
      'order.created',
      { 'ce-subject': 'o-1' },
      '{"orderId":"o-1","amount":-1}',
    );
    expect(badData.status).toBe(400);
    expect(((await badData.json()) as { message: string }).message).toMatch(/data\/amount must be >= 0/);
    const unknown = await post('4', 'order.refunded', {}, '{}');
    expect(((await unknown.json()) as { code: string }).code).toBe('TRELLIS_ERR_EVENT_TYPE_UNKNOWN');
  });

  it('trellis get eventtypes lists them with their type and reference', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'trellis-et-'));
    const server = await serve(['--data-dir', join(dir, 'data')]);
    try {
      const env = { TRELLIS_SERVER: server.url };
      const yaml =
        'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n---\n' +
        'apiVersion: eventing.knative.dev/v1beta2\nkind: EventType\nmetadata: {name: created}\nspec: {type: order.created, source: /shop, reference: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}\n';
      expect((await run(['apply', '-f', '-'], { input: yaml, env })).code).toBe(0);
      const got = await run(['get', 'eventtypes', '--type-prefix', 'order.'], { env });
      expect(got.stdout).toMatch(/NAME\s+TYPE\s+REFERENCE/);
      expect(got.stdout).toMatch(/created\s+order\.created\s+Broker\/default/);
    } finally {
      server.child.kill('SIGTERM');
      await server.exited();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
