/**
 * Consumer groups through the SDK over WebSocket (and Server-Sent Events), against an in-process server:
 * sharing, broadcast, windows, redelivery on timeout and on disconnect, nack, dead letters, resume,
 * replay, request-reply, watch, and the refusals of bad input.
 */
import { CloudEvent as SdkEvent } from 'cloudevents';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type Delivery, type Subscription, TrellisApiError, TrellisClient } from '../src/client/trellis.js';
import type { CloudEvent } from '../src/cloudevents/event.js';
import { eventFromProtobuf, eventToProtobuf } from '../src/cloudevents/protobuf.js';
import { broker, ceHeaders, mintToken, type TestServer, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const open: { close(): void }[] = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

/** Collects a subscription's deliveries; acks each unless told not to. */
function collect(sub: Subscription, opts: { ack?: boolean } = {}) {
  const got: Delivery[] = [];
  void (async () => {
    for await (const d of sub) {
      got.push(d);
      if (opts.ack !== false) d.ack();
    }
  })().catch(() => undefined);
  open.push(sub);
  return got;
}

const ids = (ds: readonly Delivery[]) => ds.map((d) => d.event.id);

async function setup(
  cfg: Parameters<typeof testServer>[0] = {},
): Promise<{ s: TestServer; c: TrellisClient }> {
  const s = await testServer(cfg);
  expect((await s.apply(broker('default'))).ok).toBe(true);
  await s.settled();
  const c = new TrellisClient({ url: s.url, ...(cfg.adminToken ? { token: cfg.adminToken } : {}) });
  open.push(c);
  return { s, c };
}

const events = (n: number, prefix = 'e', type = 'demo.type') =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, source: '/test', type, data: { i } }));

describe('consumer groups', () => {
  it('members of one group share the events; another group gets every event too', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const a = c.subscribe('default/default', { group: 'workers' });
    const b = c.subscribe('default/default', { group: 'workers' });
    const other = c.subscribe('default/default', { group: 'audit' });
    await Promise.all([a.ready, b.ready, other.ready]);
    const [ga, gb, go] = [collect(a), collect(b), collect(other)];
    await c.publish('default/default', events(200));
    await expect.poll(() => new Set([...ids(ga), ...ids(gb)]).size).toBe(200);
    await expect.poll(() => new Set(ids(go)).size).toBe(200);
    expect(ga.length).toBeGreaterThan(0);
    expect(gb.length).toBeGreaterThan(0);
    // Each event to one member (at least once: no repeats when every member acknowledges in time).
    expect(ga.length + gb.length).toBe(200);
    // The groups are resources, with status.
    const g = await c.get('consumergroup', 'workers');
    expect(g.kind).toBe('ConsumerGroup');
    expect(
      ((g.status?.['conditions'] ?? []) as { type: string; status: string }[]).find((x) => x.type === 'Ready')
        ?.status,
    ).toBe('True');
  });

  it('a member is never sent more than its window of unacknowledged events', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const slow = c.subscribe('default/default', { group: 'w', window: 3 });
    await slow.ready;
    const held = collect(slow, { ack: false });
    const fast = c.subscribe('default/default', { group: 'w' });
    await fast.ready;
    const done = collect(fast);
    await c.publish('default/default', events(40));
    await expect.poll(() => held.length + done.length).toBe(40);
    expect(held.length).toBe(3);
  });

  it('an event not acknowledged in time, or whose member leaves, goes to another member', async () => {
    const { s, c } = await setup();
    await using _s = s;
    expect(
      (
        await s.apply({
          apiVersion: 'eventing.trellis.dev/v1alpha1',
          kind: 'ConsumerGroup',
          metadata: { name: 'slow', namespace: 'default' },
          spec: { broker: 'default', delivery: { timeout: 'PT0.3S', retry: 5, backoffDelay: 'PT0.05S' } },
        })
      ).status,
    ).toBe(201);
    const sleepy = c.subscribe('default/default', { group: 'slow', window: 1 });
    await sleepy.ready;
    const kept = collect(sleepy, { ack: false });
    await c.publish('default/default', events(1, 't'));
    await expect.poll(() => kept.length).toBe(1);
    const awake = c.subscribe('default/default', { group: 'slow' });
    await awake.ready;
    const got = collect(awake);
    // Timed out at the sleepy member: the next attempt goes to the other one.
    await expect.poll(() => ids(got), { timeout: 10_000 }).toContain('t0');
    // A member that leaves: what it held goes to another member at once.
    const leaving = c.subscribe('default/default', { group: 'workers2', window: 5 });
    await leaving.ready;
    const unacked = collect(leaving, { ack: false });
    await c.publish('default/default', events(5, 'l'));
    await expect.poll(() => unacked.length).toBe(5);
    const stays = c.subscribe('default/default', { group: 'workers2' });
    await stays.ready;
    const after = collect(stays);
    leaving.close();
    await expect.poll(() => new Set(ids(after)).size).toBe(5);
  });

  it('nack with a delay brings the event back; nack without requeue sends it to the dead-letter sink', async () => {
    const { s, c } = await setup();
    await using _s = s;
    await using sink = await startSink((_r, res) => res.writeHead(202).end());
    expect(
      (
        await s.apply({
          apiVersion: 'eventing.trellis.dev/v1alpha1',
          kind: 'ConsumerGroup',
          metadata: { name: 'picky', namespace: 'default' },
          spec: {
            broker: 'default',
            delivery: { retry: 3, backoffDelay: 'PT0.01S', deadLetterSink: { uri: sink.url } },
          },
        })
      ).status,
    ).toBe(201);
    await s.settled();
    const sub = c.subscribe('default/default', { group: 'picky' });
    await sub.ready;
    const seen: { id: string; at: number }[] = [];
    void (async () => {
      for await (const d of sub) {
        seen.push({ id: d.event.id, at: Date.now() });
        if (d.event.id === 'again' && seen.filter((x) => x.id === 'again').length === 1)
          d.nack({ delay: 200 });
        else if (d.event.id === 'poison') d.nack({ requeue: false, reason: 'cannot parse' });
        else d.ack();
      }
    })();
    open.push(sub);
    await c.publish('default/default', [
      { id: 'again', source: '/t', type: 't' },
      { id: 'poison', source: '/t', type: 't' },
    ]);
    await expect.poll(() => seen.filter((x) => x.id === 'again').length).toBe(2);
    const times = seen.filter((x) => x.id === 'again').map((x) => x.at);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(190);
    await expect.poll(() => sink.received.length).toBe(1);
    const dl = sink.received[0]!.event.attrs;
    expect(dl['id']).toBe('poison');
    expect(dl['knativeerrorcode']).toBe('422');
    expect(Buffer.from(String(dl['knativeerrordata']), 'base64').toString()).toContain('cannot parse');
    expect(seen.filter((x) => x.id === 'poison')).toHaveLength(1);
  });

  it('an ordered group gives each partition key one event at a time, in order', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const sub = c.subscribe('default/default', { group: 'in-order', ordered: true, window: 10 });
    await sub.ready;
    const held = collect(sub, { ack: false });
    await c.publish(
      'default/default',
      ['a1', 'a2', 'a3', 'b1', 'b2'].map((id) => ({ id, source: '/t', type: 't', partitionkey: id[0] })),
    );
    // One per key is out; the others wait for it, though the window has room.
    await expect.poll(() => ids(held).sort()).toEqual(['a1', 'b1']);
    held.find((d) => d.event.id === 'a1')!.ack();
    await expect.poll(() => ids(held)).toContain('a2');
    expect(ids(held)).not.toContain('a3');
    for (const d of [...held]) d.ack();
    await expect.poll(() => ids(held).sort()).toEqual(['a1', 'a2', 'a3', 'b1', 'b2']);
    for (const d of held) d.ack();
    const order = ids(held).filter((x) => x.startsWith('a'));
    expect(order).toEqual(['a1', 'a2', 'a3']);
  });

  it('a group resumes where it acknowledged: events stored while no member was connected wait for it', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const first = c.subscribe('default/default', { group: 'resume' });
    await first.ready;
    const before = collect(first);
    await c.publish('default/default', events(5, 'a'));
    await expect.poll(() => before.length).toBe(5);
    first.close();
    // Gone: its worker stops here (the group has no member), and the events wait.
    await expect.poll(() => s.dispatcher.inflight()).toBe(0);
    await c.publish('default/default', events(5, 'b'));
    const again = c.subscribe('default/default', { group: 'resume' });
    await again.ready;
    const after = collect(again);
    await expect.poll(() => ids(after).sort()).toEqual(['b0', 'b1', 'b2', 'b3', 'b4']);
  });

  it('a member without a group gets every event while connected; its group goes when it does', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const a = c.subscribe('default/default');
    const b = c.subscribe('default/default');
    await Promise.all([a.ready, b.ready]);
    expect(a.group).not.toBe(b.group);
    const [ga, gb] = [collect(a), collect(b)];
    await c.publish('default/default', events(10));
    await expect.poll(() => [ga.length, gb.length]).toEqual([10, 10]);
    a.close();
    await expect
      .poll(async () => (await c.get('consumergroups')).items.map((g) => g.metadata.name))
      .toEqual([b.group]);
  });

  it('replays what the Broker retains: a new group from earliest, a time or a sequence; trellis replay to a Trigger', async () => {
    const { s, c } = await setup({ retentionMs: 3_600_000 });
    await using _s = s;
    await c.publish('default/default', events(3, 'old', 'old.type'));
    // Arrival times are in milliseconds: the boundary is one the clock has passed, and passes again.
    const tick = async () => {
      const t0 = Date.now();
      await expect.poll(() => Date.now(), { interval: 1 }).toBeGreaterThan(t0);
    };
    await tick();
    const t = new Date().toISOString();
    await tick();
    await c.publish('default/default', events(2, 'mid', 'mid.type'));
    const all = c.subscribe('default/default', { group: 'from-start', from: 'earliest' });
    await all.ready;
    const ga = collect(all);
    await expect.poll(() => ids(ga).sort()).toEqual(['mid0', 'mid1', 'old0', 'old1', 'old2']);
    const since = c.subscribe('default/default', { group: 'from-time', from: t });
    await since.ready;
    const gt = collect(since);
    await expect.poll(() => ids(gt).sort()).toEqual(['mid0', 'mid1']);
    const filtered = c.subscribe('default/default', {
      group: 'old-only',
      from: 'earliest',
      filter: "type = 'old.type'",
    });
    await filtered.ready;
    const gf = collect(filtered);
    await expect.poll(() => ids(gf).sort()).toEqual(['old0', 'old1', 'old2']);
    // From a sequence number: the stream's positions are what deliveries carry (gRPC's `sequence`).
    const seqs = (await (
      await fetch(
        `${s.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/default/history?limit=100`,
      )
    ).json()) as {
      items: { seq: number; event: { id: string } }[];
    };
    const midSeq = seqs.items.find((x) => x.event.id === 'mid0')?.seq;
    expect(midSeq).toBeGreaterThan(0);
    const fromSeq = c.subscribe('default/default', { group: 'from-seq', from: String(midSeq) });
    await fromSeq.ready;
    const gs = collect(fromSeq);
    await expect.poll(() => ids(gs).sort()).toEqual(['mid0', 'mid1']);
    // Live events keep coming after the replay.
    await c.publish('default/default', events(1, 'new', 'old.type'));
    await expect.poll(() => ids(gf)).toContain('new0');
    // The group records its replay.
    const g = await c.get('consumergroup', 'from-start');
    expect(g.status?.['replay']).toMatchObject({ events: 5 });
    // trellis replay: a Trigger gets the retained events again, through its filter.
    await using sink = await startSink((_r, res) => res.writeHead(202).end());
    expect(
      (
        await s.apply(
          trigger('mids', {
            broker: 'default',
            filter: { attributes: { type: 'mid.type' } },
            subscriber: { uri: sink.url },
          }),
        )
      ).ok,
    ).toBe(true);
    await s.settled();
    const r = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/default/replay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ from: 'earliest', to: { kind: 'Trigger', name: 'mids' } }),
    });
    expect(await r.json()).toEqual({ events: 2 });
    await expect.poll(() => sink.received.map((x) => x.event.attrs['id']).sort()).toEqual(['mid0', 'mid1']);
    // Bad replays: a position that is not one, a kind that is not a subscription.
    for (const [body, field] of [
      [{ from: 'yesterday', to: { kind: 'Trigger', name: 'mids' } }, 'from'],
      [{ from: 'earliest', to: { kind: 'Broker', name: 'default' } }, 'to.kind'],
      [{ from: 'earliest' }, 'to'],
    ] as const) {
      const bad = await fetch(
        `${s.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers/default/replay`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        },
      );
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { field: string }).field).toBe(field);
    }
  });

  it('request-reply: a responder in a group answers; no responder and no reply are explicit errors', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const responder = c.respond(
      'default/default',
      { group: 'quotes', filter: "type = 'quote.requested'" },
      (e) => {
        if ((e.data as { sku: string }).sku === 'silent') return undefined;
        return {
          source: '/quotes',
          type: 'quote.given',
          data: { sku: (e.data as { sku: string }).sku, price: 42 },
        };
      },
    );
    open.push(responder);
    // Subscribed: its group is in the data plane, so requests from now on reach it.
    await responder.ready;
    const reply = await c.request(
      'default/default',
      { source: '/shop', type: 'quote.requested', data: { sku: 'A1' } },
      { timeout: 10_000 },
    );
    expect(reply.type).toBe('quote.given');
    expect(reply.data).toEqual({ sku: 'A1', price: 42 });
    // The reply went into the Broker too, correlated to its request.
    expect(typeof reply['trellisinreplyto']).toBe('string');
    await expect(
      c.request('default/default', { source: '/shop', type: 'nobody.listens' }, { timeout: 5000 }),
    ).rejects.toMatchObject({ code: 'TRELLIS_ERR_NO_RESPONDER', status: 404 });
    await expect(
      c.request(
        'default/default',
        { source: '/shop', type: 'quote.requested', data: { sku: 'silent' } },
        { timeout: 300 },
      ),
    ).rejects.toMatchObject({ code: 'TRELLIS_ERR_REPLY_TIMEOUT', status: 504 });
    // A Trigger's HTTP subscriber may answer too: its reply event carries the request's token back.
    await using answering = await startSink((r, res) =>
      res
        .writeHead(200, {
          ...ceHeaders(`re-${String(r.event.attrs['id'])}`, 'price.given'),
          'ce-source': '/http',
        })
        .end('{"price":7}'),
    );
    expect(
      (
        await s.apply(
          trigger('prices', {
            broker: 'default',
            filter: { attributes: { type: 'price.asked' } },
            subscriber: { uri: answering.url },
          }),
        )
      ).ok,
    ).toBe(true);
    await s.settled();
    const viaHttp = await c.request(
      'default/default',
      { source: '/shop', type: 'price.asked' },
      { timeout: 10_000 },
    );
    expect(viaHttp).toMatchObject({ type: 'price.given', source: '/http', data: { price: 7 } });
  });

  it('interoperates with the cloudevents SDK: its events go in as they are and come out as its events', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const sub = c.subscribe('default/default', { group: 'sdk' });
    await sub.ready;
    const got = collect(sub);
    await c.publish(
      'default/default',
      new SdkEvent({ id: 'sdk-1', source: '/sdk', type: 'sdk.type', data: { ok: true } }),
    );
    const answer = await c.send(
      'default/default',
      new SdkEvent({ source: '/sdk', type: 'sdk.type', data: 'text', datacontenttype: 'text/plain' }),
    );
    expect(answer.status).toBe(202);
    await expect.poll(() => got.length).toBe(2);
    const back = new SdkEvent(got[0]!.event as never);
    expect(back.id).toBe('sdk-1');
    expect(back.data).toEqual({ ok: true });
    expect(new SdkEvent(got[1]!.event as never).data).toBe('text');
  });

  it('Server-Sent Events: a read-only member of a group', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const ac = new AbortController();
    const res = await fetch(`${s.url}/default/default?group=sse-readers`, {
      headers: { accept: 'text/event-stream' },
      signal: ac.signal,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const reader = res.body!.getReader();
    let text = '';
    const pump = (async () => {
      const dec = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
        if (done) return;
        text += dec.decode(value);
      }
    })();
    await c.publish('default/default', events(3, 's'));
    await expect.poll(() => (text.match(/event: cloudevent/g) ?? []).length).toBe(3);
    const first = JSON.parse(/data: (.*)\n/.exec(text.split('event: cloudevent')[1]!)![1]!);
    expect(first).toMatchObject({ id: 's0', type: 'demo.type', data: { i: 0 } });
    ac.abort();
    await pump;
    // Written events count as delivered: a second reader of the group gets only what came after.
    await c.publish('default/default', events(1, 'later'));
    const again = await fetch(`${s.url}/default/default?group=sse-readers`, {
      headers: { accept: 'text/event-stream' },
    });
    const r2 = again.body!.getReader();
    const { value } = await r2.read();
    let t2 = new TextDecoder().decode(value);
    while (!t2.includes('event: cloudevent')) t2 += new TextDecoder().decode((await r2.read()).value);
    expect(t2).toContain('"id":"later0"');
    expect(t2).not.toContain('"id":"s0"');
    await r2.cancel();
  });

  it('watch: resources of a kind, then each change', async () => {
    const { s, c } = await setup();
    await using _s = s;
    const ac = new AbortController();
    const seen: string[] = [];
    const w = (async () => {
      for await (const e of c.watch('brokers', { signal: ac.signal }))
        seen.push(`${e.type} ${e.object.metadata.name}`);
    })();
    await expect.poll(() => seen).toEqual(['ADDED default']);
    await c.apply({
      apiVersion: 'eventing.knative.dev/v1',
      kind: 'Broker',
      metadata: { name: 'second', namespace: 'default' },
    });
    await expect.poll(() => seen).toContain('ADDED second');
    await c.delete('broker', 'second');
    await expect.poll(() => seen).toContain('DELETED second');
    ac.abort();
    await w;
  });
});

/** Opens a raw WebSocket and resolves with it, or with the HTTP refusal (status and body). */
function raw(url: string, protocols: string[] = ['cloudevents.json'], headers: Record<string, string> = {}) {
  return new Promise<{
    ws?: WebSocket;
    got: Record<string, unknown>[];
    status?: number;
    body?: Record<string, unknown>;
  }>((resolve) => {
    const ws = new WebSocket(url, protocols, { headers });
    // Collected from the start: the server's first message may come with its answer to the upgrade.
    const got: Record<string, unknown>[] = [];
    ws.on('message', (m) => got.push(JSON.parse(String(m))));
    ws.on('open', () => resolve({ ws, got }));
    ws.on('unexpected-response', (_req, res) => {
      let b = '';
      res.on('data', (c: Buffer) => (b += c));
      res.on('end', () => resolve({ got, status: res.statusCode, body: JSON.parse(b) }));
    });
    ws.on('error', () => undefined);
  });
}

describe('the WebSocket binding, with bad input', () => {
  it('refuses upgrades it cannot serve, with a status and a message naming the problem', async () => {
    const { s } = await setup();
    await using _s = s;
    const ws = s.url.replace('http', 'ws');
    const cases: [string, string[], number, string][] = [
      [`${ws}/default/default`, ['mqtt'], 400, 'cloudevents.json'],
      [`${ws}/default/nope?subscribe`, ['cloudevents.json'], 404, 'TRELLIS_ERR_BROKER_NOT_FOUND'],
      [`${ws}/default/default?group=Bad_Name`, ['cloudevents.json'], 400, 'group'],
      [`${ws}/default/default?subscribe&window=0`, ['cloudevents.json'], 400, 'window'],
      [`${ws}/default/default?subscribe&filter=type%20%3D`, ['cloudevents.json'], 400, 'filter'],
      [`${ws}/default/default?subscribe&from=yesterday`, ['cloudevents.json'], 400, 'from'],
      [`${ws}/apis/x`, ['cloudevents.json'], 404, 'TRELLIS_ERR_ROUTE_NOT_FOUND'],
    ];
    for (const [url, protocols, status, text] of cases) {
      const r = await raw(url, protocols);
      expect(r.status, url).toBe(status);
      expect(JSON.stringify(r.body), url).toContain(text);
    }
    // A group that exists reads one stream with one filter: a member asking for another is refused.
    await s.apply(broker('other'));
    await s.settled();
    const first = await raw(`${ws}/default/default?group=g&filter=${encodeURIComponent("type = 'a'")}`);
    expect(first.ws).toBeDefined();
    const clash = await raw(`${ws}/default/other?group=g`);
    expect(clash).toMatchObject({ status: 409, body: { code: 'TRELLIS_ERR_GROUP_MISMATCH' } });
    const filterClash = await raw(`${ws}/default/default?group=g&filter=${encodeURIComponent("type = 'b'")}`);
    expect(filterClash).toMatchObject({ status: 409, body: { code: 'TRELLIS_ERR_GROUP_MISMATCH' } });
    // A page of another site may not open one (the browser sends its Origin).
    const cross = await raw(`${ws}/default/default`, ['cloudevents.json'], {
      origin: 'https://evil.example',
    });
    expect(cross).toMatchObject({ status: 403, body: { code: 'TRELLIS_ERR_ORIGIN_FORBIDDEN' } });
    first.ws!.close();
  });

  it('answers every message: stored events with 202, bad ones with the rule, control mistakes with an error; the connection stays', async () => {
    const { s } = await setup();
    await using _s = s;
    const { ws, got } = await raw(`${s.url.replace('http', 'ws')}/default/default?subscribe`);
    const send = (o: unknown) => ws!.send(typeof o === 'string' ? o : JSON.stringify(o));
    send({ specversion: '1.0', id: 'ok', source: '/t', type: 't' });
    send({ specversion: '1.0', id: 'bad', source: '/t' });
    send('not json');
    send('[{"specversion":"1.0"}]');
    send({ specversion: '1.0', id: 'c1', source: '/t', type: 'dev.trellis.control.explode', data: {} });
    send({ specversion: '1.0', id: 'c2', source: '/t', type: 'dev.trellis.control.ack', data: { ids: 'x' } });
    send({
      specversion: '1.0',
      id: 'c3',
      source: '/t',
      type: 'dev.trellis.control.nack',
      data: { id: '1', delay: -5 },
    });
    ws!.send(Buffer.from([1, 2, 3]), { binary: true });
    send({ specversion: '1.0', id: 'ok2', source: '/t', type: 't' });
    await expect
      .poll(() => got.filter((m) => String(m['type']).startsWith('dev.trellis.control.')).length)
      .toBe(10);
    const data = (type: string) =>
      got
        .filter((m) => m['type'] === `dev.trellis.control.${type}`)
        .map((m) => m['data'] as Record<string, unknown>);
    expect(data('subscribed')).toHaveLength(1);
    const published = data('published');
    expect(published.find((p) => p['id'] === 'ok')).toMatchObject({ status: 202 });
    expect(published.find((p) => p['id'] === 'ok2')).toMatchObject({ status: 202 });
    expect(published.find((p) => p['id'] === 'bad')).toMatchObject({
      status: 400,
      code: 'TRELLIS_ERR_INVALID_EVENT',
    });
    const errors = data('error');
    expect(errors.map((e) => e['code']).sort()).toEqual([
      'TRELLIS_ERR_BAD_REQUEST',
      'TRELLIS_ERR_BAD_REQUEST',
      'TRELLIS_ERR_BAD_REQUEST',
      'TRELLIS_ERR_MALFORMED_EVENT',
      'TRELLIS_ERR_MALFORMED_EVENT',
      'TRELLIS_ERR_UNSUPPORTED_MEDIA_TYPE',
    ]);
    expect(errors.find((e) => e['about'] === 'c1')?.['message']).toContain('not a control event');
    expect(errors.find((e) => e['about'] === 'c3')?.['message']).toContain('data.delay');
    // The stored events reached this subscriber, with the id it acknowledges them by.
    await expect
      .poll(() => got.filter((m) => m['trellisdelivery'] !== undefined).map((m) => m['id']))
      .toEqual(['ok', 'ok2']);
    expect(got.find((m) => m['id'] === 'ok')).not.toHaveProperty('knativebrokerttl');
    ws!.close();
  });

  it('speaks the protobuf format too (cloudevents.proto: binary messages), control events included', async () => {
    const { s } = await setup();
    await using _s = s;
    const ws = new WebSocket(`${s.url.replace('http', 'ws')}/default/default?group=proto`, [
      'cloudevents.proto',
    ]);
    const got: CloudEvent[] = [];
    ws.on('message', (m: Buffer, binary: boolean) => {
      expect(binary).toBe(true);
      got.push(eventFromProtobuf(m));
    });
    await new Promise((r) => ws.once('open', r));
    expect(ws.protocol).toBe('cloudevents.proto');
    const body = (e: CloudEvent) => JSON.parse(String(e.data)) as Record<string, unknown>;
    ws.send(
      eventToProtobuf({
        attrs: {
          specversion: '1.0',
          id: 'p1',
          source: '/proto',
          type: 'proto.type',
          datacontenttype: 'text/plain',
        },
        data: Buffer.from('hello'),
      }),
    );
    await expect.poll(() => got.find((e) => e.attrs['id'] === 'p1')).toBeDefined();
    const delivered = got.find((e) => e.attrs['id'] === 'p1')!;
    expect(String(delivered.data)).toBe('hello');
    const published = got.find((e) => e.attrs['type'] === 'dev.trellis.control.published')!;
    expect(body(published)).toMatchObject({ id: 'p1', status: 202 });
    expect(body(got.find((e) => e.attrs['type'] === 'dev.trellis.control.subscribed')!)).toMatchObject({
      group: 'proto',
    });
    // Acknowledged with a control event in the same format: nothing comes again.
    ws.send(
      eventToProtobuf({
        attrs: {
          specversion: '1.0',
          id: 'a1',
          source: '/c',
          type: 'dev.trellis.control.ack',
          datacontenttype: 'application/json',
        },
        data: Buffer.from(JSON.stringify({ ids: [delivered.attrs['trellisdelivery']] })),
      }),
    );
    await expect
      .poll(
        async () =>
          (
            (await (await fetch(`${s.url}/apis/stats`)).json()) as {
              subscriptions: { name: string; delivered: number }[];
            }
          ).subscriptions.find((x) => x.name === 'proto')?.delivered,
      )
      .toBe(1);
    // A text message, or bytes that are not an event, get an error in the connection's format.
    ws.send('{"specversion":"1.0"}');
    ws.send(Buffer.from([0x0a, 0x05, 0x61]), { binary: true });
    await expect
      .poll(() =>
        got.filter((e) => e.attrs['type'] === 'dev.trellis.control.error').map((e) => body(e)['code']),
      )
      .toEqual(['TRELLIS_ERR_UNSUPPORTED_MEDIA_TYPE', 'TRELLIS_ERR_INVALID_EVENT']);
    ws.close();
  });

  it('with OIDC on: publishing and subscribing need a token for the address, and the EventPolicy decides', async () => {
    const { s } = await setup({ authentication: 'oidc', defaultAuthorizationMode: 'deny-all' });
    await using _s = s;
    expect(
      (
        await s.apply({
          apiVersion: 'eventing.knative.dev/v1alpha1',
          kind: 'EventPolicy',
          metadata: { name: 'app', namespace: 'default' },
          spec: {
            to: [{ ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'default' } }],
            from: [{ sub: 'app' }],
            filters: [{ prefix: { type: 'app.' } }],
          },
        })
      ).status,
    ).toBe(201);
    await s.settled();
    const token = (subject: string, audience = 'eventing.knative.dev/broker/default/default') =>
      mintToken(s.url, audience, subject);
    const ws = s.url.replace('http', 'ws');
    expect(await raw(`${ws}/default/default?subscribe`)).toMatchObject({
      status: 401,
      body: { code: 'TRELLIS_ERR_TOKEN_MISSING' },
    });
    const wrongAudience = await token('app', 'eventing.knative.dev/broker/default/other');
    expect(await raw(`${ws}/default/default?subscribe&access_token=${wrongAudience}`)).toMatchObject({
      status: 401,
      body: { code: 'TRELLIS_ERR_TOKEN_AUDIENCE' },
    });
    expect(
      await raw(`${ws}/default/default?subscribe&access_token=${await token('stranger')}`),
    ).toMatchObject({
      status: 403,
      body: { code: 'TRELLIS_ERR_FORBIDDEN' },
    });
    const sse = await fetch(`${s.url}/default/default?group=x&access_token=${await token('stranger')}`, {
      headers: { accept: 'text/event-stream' },
    });
    expect(sse.status).toBe(403);
    // The allowed subject subscribes (the SDK sends the token as Authorization) and publishes what its
    // policy lets through; another type is refused per event.
    const c = new TrellisClient({ url: s.url, token: () => token('app') });
    open.push(c);
    const sub = c.subscribe('default/default', { group: 'apps' });
    await sub.ready;
    const got = collect(sub);
    expect(await c.send('default/default', { source: '/app', type: 'app.did' })).toMatchObject({
      status: 202,
    });
    expect(await c.send('default/default', { source: '/app', type: 'other.thing' })).toMatchObject({
      status: 403,
      code: 'TRELLIS_ERR_FORBIDDEN',
    });
    await expect.poll(() => got.map((d) => d.event.type)).toEqual(['app.did']);
  });

  it('holds at most --max-members subscribers per process', async () => {
    const { s } = await setup({ maxMembers: 2 });
    await using _s = s;
    const ws = `${s.url.replace('http', 'ws')}/default/default?subscribe`;
    const [a, b] = [await raw(ws), await raw(ws)];
    expect(a.ws && b.ws).toBeDefined();
    expect(await raw(ws)).toMatchObject({ status: 429, body: { code: 'TRELLIS_ERR_TOO_MANY_MEMBERS' } });
    // Publishing is not subscribing: it still connects.
    const pub = await raw(`${s.url.replace('http', 'ws')}/default/default`);
    expect(pub.ws).toBeDefined();
    pub.ws!.close();
    b.ws!.close();
    a.ws!.close();
    await expect
      .poll(async () => {
        const r = await raw(ws);
        r.ws?.close();
        return r.status;
      })
      .toBeUndefined();
  });

  it('with an admin token set, subscribing needs it (header, or access_token where headers cannot be set)', async () => {
    const { s } = await setup({ adminToken: 'sekret-token' });
    await using _s = s;
    const ws = s.url.replace('http', 'ws');
    expect(await raw(`${ws}/default/default?subscribe`)).toMatchObject({
      status: 401,
      body: { code: 'TRELLIS_ERR_UNAUTHORIZED' },
    });
    expect((await raw(`${ws}/default/default?subscribe&access_token=wrong`)).status).toBe(401);
    const ok = await raw(`${ws}/default/default?subscribe&access_token=sekret-token`);
    expect(ok.ws).toBeDefined();
    ok.ws!.close();
    const viaHeader = await raw(`${ws}/default/default?subscribe`, ['cloudevents.json'], {
      authorization: 'Bearer sekret-token',
    });
    expect(viaHeader.ws).toBeDefined();
    viaHeader.ws!.close();
    // Publishing is as open as HTTP ingress is.
    const pub = await raw(`${ws}/default/default`);
    expect(pub.ws).toBeDefined();
    pub.ws!.close();
    // The SDK says why.
    const c = new TrellisClient({ url: s.url });
    const sub = c.subscribe('default/default', { group: 'x' });
    await expect(sub.ready).rejects.toBeInstanceOf(TrellisApiError);
    await expect(sub.ready).rejects.toMatchObject({ status: 401 });
  });
});
