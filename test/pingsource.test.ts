/** PingSource (`sources.knative.dev/v1`): Knative's scheduled events, fired once per scheduled time. */
import { describe, expect, it } from 'vitest';
import { FIRING_KIND, ScheduledSources } from '../src/sources/scheduler.js';
import { run } from './helpers/process.js';
import { broker, testServer } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

function ping(name: string, spec: Record<string, unknown>, apiVersion = 'sources.knative.dev/v1') {
  return { apiVersion, kind: 'PingSource', metadata: { name, namespace: 'default' }, spec };
}

describe('PingSource', () => {
  it('sends its event on schedule to its sink, with Knative attributes and the overrides', async () => {
    await using s = await testServer();
    await using sink = await startSink();
    const r = await s.apply(
      ping('every-second', {
        schedule: '* * * * * *',
        contentType: 'application/json',
        data: '{"message": "Hello world!"}',
        sink: { uri: sink.url },
        ceOverrides: { extensions: { team: 'payments' } },
      }),
    );
    expect(r.status, await r.text()).toBeLessThan(300);
    const got = await sink.waitFor(2, 10_000);
    const e = got[0]!.event;
    expect(e.attrs['type']).toBe('dev.knative.sources.ping');
    expect(e.attrs['source']).toBe('/apis/v1/namespaces/default/pingsources/every-second');
    expect(e.attrs['datacontenttype']).toBe('application/json');
    expect(e.attrs['team']).toBe('payments');
    expect(e.attrs['knativearrivaltime']).toBeUndefined();
    expect(JSON.parse(e.data!.toString())).toEqual({ message: 'Hello world!' });
    // Each firing is stamped with its scheduled time, a whole second here, one second apart.
    const times = got.slice(0, 2).map((x) => Date.parse(String(x.event.attrs['time'])));
    expect(times[0]! % 1000).toBe(0);
    expect(times[1]! - times[0]!).toBe(1000);
    const st = (await (
      await fetch(`${s.url}/apis/sources.knative.dev/v1/namespaces/default/pingsources/every-second`)
    ).json()) as { status: Record<string, unknown> };
    expect(st.status['sinkUri']).toBe(sink.url);
    const table = await run(['get', 'pingsources'], { env: { TRELLIS_SERVER: s.url } });
    expect(table.stdout).toMatch(/NAME\s+SINK\s+SCHEDULE\s+AGE\s+READY/);
    expect(table.stdout).toContain(`every-second   ${sink.url}   * * * * * *`);
    expect(st.status['ceAttributes']).toEqual([
      { type: 'dev.knative.sources.ping', source: '/apis/v1/namespaces/default/pingsources/every-second' },
    ]);
  });

  it('sends dataBase64 as bytes, to a Broker by ref; v1beta2 documents are accepted', async () => {
    await using s = await testServer();
    await using sink = await startSink();
    await s.apply(broker('default'));
    await s.apply({
      apiVersion: 'eventing.knative.dev/v1',
      kind: 'Trigger',
      metadata: { name: 'pings', namespace: 'default' },
      spec: {
        broker: 'default',
        filter: { attributes: { type: 'dev.knative.sources.ping' } },
        subscriber: { uri: sink.url },
      },
    });
    const r = await s.apply(
      ping(
        'bytes',
        {
          schedule: '@every 1s',
          contentType: 'application/octet-stream',
          dataBase64: Buffer.from([0, 1, 2, 255]).toString('base64'),
          sink: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'default' } },
        },
        'sources.knative.dev/v1beta2',
      ),
    );
    expect(r.status, await r.text()).toBeLessThan(300);
    const [got] = await sink.waitFor(1, 10_000);
    expect([...got!.event.data!]).toEqual([0, 1, 2, 255]);
    expect(got!.event.attrs['datacontenttype']).toBe('application/octet-stream');
  });

  it('refuses bad specs with the field and the rule', async () => {
    await using s = await testServer();
    const sink = { uri: 'http://127.0.0.1:9/' };
    const cases: [Record<string, unknown>, string][] = [
      [{ sink }, 'spec.schedule: is required'],
      [{ schedule: 'every minute', sink }, 'spec.schedule: is not a cron schedule'],
      [{ schedule: '61 * * * *', sink }, 'spec.schedule: is not a cron schedule'],
      [{ schedule: '0 0 31 2 *', sink }, 'spec.schedule: never fires'],
      [{ schedule: '@every 0s', sink }, "spec.schedule: '@every' needs a duration"],
      [{ schedule: '* * * * *', timezone: 'Mars/Olympus', sink }, 'spec.timezone: '],
      [{ schedule: 'CRON_TZ=UTC * * * * *', timezone: 'UTC', sink }, 'spec.schedule: sets CRON_TZ='],
      [{ schedule: '* * * * *' }, 'spec.sink: is required'],
      [{ schedule: '* * * * *', sink, data: 'x', dataBase64: 'eA==' }, 'spec.data: set data or dataBase64'],
      [
        { schedule: '* * * * *', sink, dataBase64: 'not base64!' },
        'spec.dataBase64: must be standard base64',
      ],
      [{ schedule: '* * * * *', sink, contentType: 'json' }, 'spec.contentType: must be a media type'],
      [{ schedule: '* * * * *', sink, data: 'x'.repeat(256 * 1024 + 1) }, 'spec.data: is over'],
      [
        { schedule: '* * * * *', sink, ceOverrides: { extensions: { type: 'x' } } },
        'spec.ceOverrides.extensions.type: is a core attribute',
      ],
      [
        { schedule: '* * * * *', sink, ceOverrides: { extensions: { 'Bad-Name': 'x' } } },
        'spec.ceOverrides.extensions.Bad-Name',
      ],
      [{ schedule: '* * * * *', sink, jsonData: '{}' }, 'spec.jsonData: unknown field'],
    ];
    for (const [spec, message] of cases) {
      const r = await s.apply(ping('bad', spec));
      const body = (await r.json()) as { code: string; message: string };
      expect([r.status, body.code, body.message]).toEqual([
        400,
        'TRELLIS_ERR_RESOURCE_INVALID',
        expect.stringContaining(message),
      ]);
    }
    // Nothing was stored by the refused documents.
    expect(
      (await fetch(`${s.url}/apis/sources.knative.dev/v1/namespaces/default/pingsources/bad`)).status,
    ).toBe(404);
  });

  it('is not Ready while its sink does not resolve, and fires nothing', async () => {
    await using s = await testServer();
    await s.apply(
      ping('orphan', {
        schedule: '* * * * * *',
        sink: { ref: { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', name: 'missing' } },
      }),
    );
    const o = (await (
      await fetch(`${s.url}/apis/sources.knative.dev/v1/namespaces/default/pingsources/orphan`)
    ).json()) as { status: { conditions: { type: string; status: string; message?: string }[] } };
    const c = o.status.conditions.find((x) => x.type === 'SinkProvided');
    expect(c?.status).toBe('False');
    expect(c?.message).toContain('spec.sink');
  });

  it('fires each scheduled time once, however many times it is asked (a restart, or several processes)', async () => {
    await using s = await testServer();
    await using sink = await startSink();
    // A schedule that does not fire during the test: the firings below are made by hand.
    const r = await s.apply(ping('once', { schedule: '0 0 1 1 *', sink: { uri: sink.url } }));
    expect(r.status).toBeLessThan(300);
    await s.settled();
    const o = (await s.store.resources.get('PingSource', 'default', 'once'))!;
    const accepted: string[] = [];
    const schedulers = [1, 2].map(
      () =>
        new ScheduledSources({
          resources: s.store.resources,
          accept: async (stream, events) => {
            accepted.push(String(events[0]!.attrs['time']));
            await s.ingress.accept(stream, events);
          },
          logger: { debug() {}, info() {}, warn() {}, error() {} },
        }),
    );
    const at = new Date('2026-12-01T10:00:00Z');
    const results = await Promise.all([
      schedulers[0]!.fire(o, at),
      schedulers[1]!.fire(o, at),
      schedulers[0]!.fire(o, at),
    ]);
    expect(results.filter(Boolean)).toHaveLength(1);
    // An earlier time than the last one made is not made either (a clock or a restart going back).
    expect(await schedulers[1]!.fire(o, new Date('2026-12-01T09:59:00Z'))).toBe(false);
    expect(await schedulers[1]!.fire(o, new Date('2026-12-01T10:01:00Z'))).toBe(true);
    expect(accepted).toEqual(['2026-12-01T10:00:00.000Z', '2026-12-01T10:01:00.000Z']);
    await sink.waitFor(2, 10_000);
    // The record of the last firing is the store's, under a kind no API serves.
    expect((await s.store.resources.get(FIRING_KIND, 'default', o.metadata.uid))?.spec['last']).toBe(
      Date.parse('2026-12-01T10:01:00Z'),
    );
  });
});
