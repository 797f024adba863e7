/** ApiServerSource: events for changes to Trellis's own resources, in Knative's types and shapes. */
import { describe, expect, it } from 'vitest';
import { broker, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

function apiSource(name: string, spec: Record<string, unknown>) {
  return {
    apiVersion: 'sources.knative.dev/v1',
    kind: 'ApiServerSource',
    metadata: { name, namespace: 'default' },
    spec,
  };
}

const labelled = (name: string, labels: Record<string, string>) => ({
  ...trigger(name, { broker: 'default', subscriber: { uri: 'http://127.0.0.1:9/' } }),
  metadata: { name, namespace: 'default', labels },
});

describe('ApiServerSource', () => {
  it('Reference mode: a reference to each matching Trigger added, updated and deleted', async () => {
    await using s = await testServer();
    await using sink = await startSink();
    await s.apply(broker('default'));
    const r = await s.apply(
      apiSource('watch-triggers', {
        mode: 'Reference',
        resources: [
          {
            apiVersion: 'eventing.knative.dev/v1',
            kind: 'Trigger',
            selector: { matchLabels: { team: 'a' } },
          },
        ],
        sink: { uri: sink.url },
        ceOverrides: { extensions: { origin: 'trellis' } },
      }),
    );
    expect(r.status, await r.text()).toBeLessThan(300);
    await s.settled();
    await s.apply(labelled('other-team', { team: 'b' }));
    await s.apply(labelled('mine', { team: 'a' }));
    await expect
      .poll(() => sink.received.some((x) => x.event.attrs['type'] === 'dev.knative.apiserver.ref.add'))
      .toBe(true);
    const add = sink.received.find((x) => x.event.attrs['type'] === 'dev.knative.apiserver.ref.add')!.event;
    expect(add.attrs).toMatchObject({
      source: s.url,
      subject: '/apis/eventing.knative.dev/v1/namespaces/default/triggers/mine',
      datacontenttype: 'application/json',
      origin: 'trellis',
    });
    expect(JSON.parse(add.data!.toString())).toEqual({
      apiVersion: 'eventing.knative.dev/v1',
      kind: 'Trigger',
      name: 'mine',
      namespace: 'default',
    });
    const del = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/mine`, {
      method: 'DELETE',
    });
    expect(del.status).toBe(200);
    await expect
      .poll(() => sink.received.some((x) => x.event.attrs['type'] === 'dev.knative.apiserver.ref.delete'))
      .toBe(true);
    // Nothing about the Trigger the selector leaves out.
    expect(sink.received.filter((x) => String(x.event.attrs['subject']).endsWith('/other-team'))).toEqual([]);
    // Status writes are updates, as in Kubernetes.
    expect(sink.received.some((x) => x.event.attrs['type'] === 'dev.knative.apiserver.ref.update')).toBe(
      true,
    );
  });

  it('Resource mode: the whole object; namespaceSelector {} watches every namespace', async () => {
    await using s = await testServer();
    await using sink = await startSink();
    await s.apply(
      apiSource('watch-brokers', {
        mode: 'Resource',
        resources: [{ apiVersion: 'eventing.knative.dev/v1', kind: 'Broker' }],
        namespaceSelector: {},
        sink: { uri: sink.url },
      }),
    );
    await s.settled();
    await s.apply(broker('elsewhere', {}, 'team-b'));
    await expect
      .poll(() => sink.received.some((x) => x.event.attrs['type'] === 'dev.knative.apiserver.resource.add'))
      .toBe(true);
    const add = sink.received.find(
      (x) => x.event.attrs['type'] === 'dev.knative.apiserver.resource.add',
    )!.event;
    const obj = JSON.parse(add.data!.toString()) as {
      kind: string;
      metadata: { namespace: string; name: string };
    };
    expect(obj).toMatchObject({ kind: 'Broker', metadata: { namespace: 'team-b', name: 'elsewhere' } });
    expect(add.attrs['subject']).toBe('/apis/eventing.knative.dev/v1/namespaces/team-b/brokers/elsewhere');
  });

  it("spec.filters (Knative's new-apiserversource-filters): only the events that pass are sent", async () => {
    await using s = await testServer();
    await using sink = await startSink();
    await s.apply(broker('default'));
    const r = await s.apply(
      apiSource('deletes-only', {
        resources: [
          { apiVersion: 'eventing.knative.dev/v1', kind: 'Trigger' },
          { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker' },
        ],
        filters: [
          {
            any: [
              { exact: { type: 'dev.knative.apiserver.ref.delete' } },
              { suffix: { subject: '/brokers/marker' } },
            ],
          },
        ],
        sink: { uri: sink.url },
      }),
    );
    expect(r.status, await r.text()).toBeLessThan(300);
    await s.settled();
    await s.apply(labelled('short-lived', { team: 'a' }));
    await s.settled();
    const del = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/short-lived`, {
      method: 'DELETE',
    });
    expect(del.status).toBe(200);
    // A marker change after the delete: by the time it and the delete are in, the Trigger's add and
    // updates would have been too, had the filter let them through.
    await s.apply(broker('marker'));
    const has = (suffix: string) =>
      sink.received.some((x) => String(x.event.attrs['subject']).endsWith(suffix));
    await expect.poll(() => has('/brokers/marker') && has('/triggers/short-lived')).toBe(true);
    await s.settled();
    const triggers = sink.received.filter((x) => String(x.event.attrs['subject']).includes('/triggers/'));
    expect(triggers.map((x) => x.event.attrs['type'])).toEqual(['dev.knative.apiserver.ref.delete']);
  });

  it('is not Ready for a kind Trellis does not serve (Knative docs watch v1 Event), saying what it serves', async () => {
    await using s = await testServer();
    await s.apply(
      apiSource('k8s-events', {
        resources: [{ apiVersion: 'v1', kind: 'Event' }],
        sink: { uri: 'http://127.0.0.1:9/' },
      }),
    );
    const o = (await (
      await fetch(`${s.url}/apis/sources.knative.dev/v1/namespaces/default/apiserversources/k8s-events`)
    ).json()) as {
      status: { conditions: { type: string; status: string; reason?: string; message?: string }[] };
    };
    const c = o.status.conditions.find((x) => x.type === 'Ready')!;
    expect(c).toMatchObject({ status: 'False', reason: 'UnknownResource' });
    expect(c.message).toContain('has no v1 Event');
    expect(c.message).toContain('eventing.knative.dev/v1 Trigger');
  });

  it('refuses bad specs with the field and the rule', async () => {
    await using s = await testServer();
    const sink = { uri: 'http://127.0.0.1:9/' };
    const res = [{ apiVersion: 'eventing.knative.dev/v1', kind: 'Trigger' }];
    const cases: [Record<string, unknown>, string][] = [
      [{ sink }, 'spec.resources: must list at least one resource kind'],
      [{ resources: res, mode: 'Everything', sink }, 'spec.mode: must be Reference or Resource'],
      [{ resources: [{ kind: 'Trigger' }], sink }, 'spec.resources[0].apiVersion: is required'],
      [
        {
          resources: [{ ...res[0], selector: { matchExpressions: [{ key: 'a', operator: 'Like' }] } }],
          sink,
        },
        'spec.resources[0].selector.matchExpressions[0].operator: must be one of In, NotIn, Exists, DoesNotExist',
      ],
      [
        { resources: [{ ...res[0], selector: { matchExpressions: [{ key: 'a', operator: 'In' }] } }], sink },
        'spec.resources[0].selector.matchExpressions[0].values: must not be empty with In',
      ],
      [{ resources: res }, 'spec.sink: is required'],
      [{ resources: res, sink, filters: [{ exact: { type: 5 } }] }, 'spec.filters[0].exact.type'],
    ];
    for (const [spec, message] of cases) {
      const r = await s.apply(apiSource('bad', spec));
      const body = (await r.json()) as { code: string; message: string };
      expect([r.status, body.code, body.message]).toEqual([
        400,
        'TRELLIS_ERR_RESOURCE_INVALID',
        expect.stringContaining(message),
      ]);
    }
  });
});
