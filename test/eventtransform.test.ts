/** EventTransform (eventing.knative.dev/v1alpha1): Knative's JSONata transform, with and without a sink. */
import { describe, expect, it } from 'vitest';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

function transform(name: string, spec: Record<string, unknown>) {
  return { apiVersion: 'eventing.knative.dev/v1alpha1', kind: 'EventTransform', metadata: { name }, spec };
}

const RESHAPE = `{
  "specversion": "1.0",
  "id": id,
  "source": source,
  "type": "order.summary",
  "datacontenttype": "application/json",
  "data": { "order": data.orderId, "total": $sum(data.lines.(price * qty)) }
}`;

const order = '{"orderId":"o-1","lines":[{"price":2,"qty":3},{"price":10,"qty":1}]}';

describe('EventTransform', () => {
  it('without a sink: answers with the transformed event (a reply)', async () => {
    await using s = await testServer();
    const res = await s.apply(transform('summary', { jsonata: { expression: RESHAPE } }));
    expect(res.status).toBe(201);
    const t = (await res.json()) as {
      status: { address: { url: string }; conditions: { type: string; status: string }[] };
    };
    expect(t.status.address.url).toBe(`${s.url}/eventtransforms/default/summary`);
    expect(t.status.conditions[0]).toMatchObject({ type: 'Ready', status: 'True' });
    const r = await s.post('/eventtransforms/default/summary', ceHeaders('o1', 'order.created'), order);
    expect(r.status).toBe(200);
    expect(r.headers.get('ce-type')).toBe('order.summary');
    expect(r.headers.get('ce-id')).toBe('o1');
    expect(await r.json()).toEqual({ order: 'o-1', total: 16 });
  });

  it('as a Trigger subscriber its reply goes back into the Broker', async () => {
    await using summaries = await startSink();
    await using s = await testServer();
    await s.apply(broker('b'));
    await s.apply(transform('summary', { jsonata: { expression: RESHAPE } }));
    await s.apply(
      trigger('to-transform', {
        broker: 'b',
        filter: { attributes: { type: 'order.created' } },
        subscriber: {
          ref: { apiVersion: 'eventing.knative.dev/v1alpha1', kind: 'EventTransform', name: 'summary' },
        },
      }),
    );
    await s.apply(
      trigger('summaries', {
        broker: 'b',
        filter: { attributes: { type: 'order.summary' } },
        subscriber: { uri: summaries.url },
      }),
    );
    expect((await s.post('/default/b', ceHeaders('o2', 'order.created'), order)).status).toBe(202);
    const [got] = await summaries.waitFor(1);
    expect(JSON.parse(got!.event.data!.toString())).toEqual({ order: 'o-1', total: 16 });
  });

  it('with a sink: forwards the transformed event, and transforms or discards the sink reply', async () => {
    await using sink = await startSink((r, res) =>
      res
        .writeHead(200, {
          'ce-specversion': '1.0',
          'ce-id': `ack-${String(r.event.attrs['id'])}`,
          'ce-source': '/sink',
          'ce-type': 'ack',
        })
        .end(),
    );
    await using s = await testServer();
    await s.apply(
      transform('fwd', {
        sink: { uri: sink.url },
        jsonata: { expression: RESHAPE },
        reply: { jsonata: { expression: '$merge([$, {"type": "ack.transformed"}])' } },
      }),
    );
    await s.apply(
      transform('quiet', {
        sink: { uri: sink.url },
        jsonata: { expression: RESHAPE },
        reply: { discard: true },
      }),
    );
    const r = await s.post('/eventtransforms/default/fwd', ceHeaders('o3', 'order.created'), order);
    expect(r.status).toBe(200);
    expect(r.headers.get('ce-type')).toBe('ack.transformed');
    expect(r.headers.get('ce-id')).toBe('ack-o3');
    expect(sink.received[0]!.event.attrs['type']).toBe('order.summary');
    expect(
      (await s.post('/eventtransforms/default/quiet', ceHeaders('o4', 'order.created'), order)).status,
    ).toBe(202);
  });

  it('bad expressions are refused at apply; failing ones answer 400 and a failing sink 502, with codes', async () => {
    await using down = await startSink((_r, res) => res.writeHead(503).end());
    await using s = await testServer();
    const bad = await s.apply(transform('bad', { jsonata: { expression: '{ "a": ' } }));
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { field: string }).field).toBe('spec.jsonata.expression');
    await s.apply(transform('notevent', { jsonata: { expression: '{"hello": "world"}' } }));
    const ne = await s.post('/eventtransforms/default/notevent', ceHeaders('x'), '{}');
    expect(ne.status).toBe(400);
    expect(((await ne.json()) as { code: string }).code).toBe('TRELLIS_ERR_TRANSFORM_FAILED');
    // An expression that would run for ever is stopped by the time guardrail.
    await s.apply(
      transform('forever', { jsonata: { expression: '($f := function($n){ $f($n + 1) }; $f(0))' } }),
    );
    const fe = await s.post('/eventtransforms/default/forever', ceHeaders('y'), '{}');
    expect(fe.status).toBe(400);
    expect(((await fe.json()) as { message: string }).message).toMatch(/deeper than|longer than/);
    await s.apply(transform('tosick', { sink: { uri: down.url }, jsonata: { expression: RESHAPE } }));
    const sk = await s.post('/eventtransforms/default/tosick', ceHeaders('z', 'order.created'), order);
    expect(sk.status).toBe(502);
    expect(((await sk.json()) as { code: string }).code).toBe('TRELLIS_ERR_SINK_FAILED');
    expect((await s.post('/eventtransforms/default/none', ceHeaders('n'), '{}')).status).toBe(404);
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
  });
});
