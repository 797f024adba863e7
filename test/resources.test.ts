/** Resource validation (field paths in every error), the admin API, and status conditions. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDuration } from '../src/resources/duration.js';
import { parseDocuments } from '../src/resources/registry.js';
import { broker, testServer, trigger } from './helpers/server.js';

const API = '/apis/eventing.knative.dev/v1/namespaces/default';

async function rejected(res: Response): Promise<{ code: string; message: string; field?: string }> {
  expect(res.status).toBeGreaterThanOrEqual(400);
  return (await res.json()) as { code: string; message: string; field?: string };
}

describe('validation names the field and the rule', () => {
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ['missing broker', trigger('t', { subscriber: { uri: 'http://x/' } }), 'spec.broker', /required/],
    [
      'bad filter key',
      trigger('t', {
        broker: 'b',
        filter: { attributes: { 'Bad-Key': 'x' } },
        subscriber: { uri: 'http://x/' },
      }),
      'spec.filter.attributes.Bad-Key',
      /\^\[a-z\]/,
    ],
    [
      'number in filter',
      trigger('t', { broker: 'b', filter: { attributes: { n: 1 } }, subscriber: { uri: 'http://x/' } }),
      'spec.filter.attributes.n',
      /string/,
    ],
    [
      'relative uri',
      trigger('t', { broker: 'b', subscriber: { uri: '/path' } }),
      'spec.subscriber.uri',
      /absolute URL/,
    ],
    ['no subscriber', trigger('t', { broker: 'b', subscriber: {} }), 'spec.subscriber', /uri or a ref/],
    [
      'bad retry',
      trigger('t', { broker: 'b', subscriber: { uri: 'http://x/' }, delivery: { retry: -1 } }),
      'spec.delivery.retry',
      /from 0 to 10000/,
    ],
    [
      'huge retry',
      trigger('t', { broker: 'b', subscriber: { uri: 'http://x/' }, delivery: { retry: 1e308 } }),
      'spec.delivery.retry',
      /from 0 to 10000/,
    ],
    [
      'backoff over a year',
      trigger('t', { broker: 'b', subscriber: { uri: 'http://x/' }, delivery: { backoffDelay: 'P400D' } }),
      'spec.delivery.backoffDelay',
      /longer than the most Trellis accepts, P365D/,
    ],
    [
      'timeout over a day',
      trigger('t', { broker: 'b', subscriber: { uri: 'http://x/' }, delivery: { timeout: 'P2D' } }),
      'spec.delivery.timeout',
      /PT24H/,
    ],
    ['namespace apis', broker('b', {}, 'apis'), 'metadata.namespace', /reserved/],
    [
      'label key',
      { ...broker('b'), metadata: { name: 'b', labels: { 'bad key!/../x': 'v' } } },
      'metadata.labels.bad key!/../x',
      /\[prefix\/\]name/,
    ],
    [
      'label value',
      { ...broker('b'), metadata: { name: 'b', labels: { app: 'has space' } } },
      'metadata.labels.app',
      /label value/,
    ],
    [
      'annotations size',
      { ...broker('b'), metadata: { name: 'b', annotations: { big: 'x'.repeat(300_000) } } },
      'metadata.annotations',
      /256 KiB/,
    ],
    [
      'bad policy',
      trigger('t', { broker: 'b', subscriber: { uri: 'http://x/' }, delivery: { backoffPolicy: 'random' } }),
      'spec.delivery.backoffPolicy',
      /linear/,
    ],
    [
      'bad duration',
      broker('b', { delivery: { backoffDelay: '5s' } }),
      'spec.delivery.backoffDelay',
      /ISO-8601/,
    ],
    ['bad name', broker('Bad_Name'), 'metadata.name', /DNS-1123/],
    ['unknown field', broker('b', { colour: 'red' }), 'spec.colour', /unknown field/],
    [
      'filters: two dialects in one entry',
      trigger('t', {
        broker: 'b',
        filters: [{ exact: { type: 'x' }, prefix: { type: 'y' } }],
        subscriber: { uri: 'http://x/' },
      }),
      'spec.filters[0]',
      /exactly one dialect/,
    ],
    [
      'filters: CESQL that does not parse',
      trigger('t', {
        broker: 'b',
        filters: [{ all: [{ cesql: "type = 'a' AND" }] }],
        subscriber: { uri: 'http://x/' },
      }),
      'spec.filters[0].all[0].cesql',
      /position 14/,
    ],
  ];
  for (const [name, doc, field, rule] of cases) {
    it(name, async () => {
      await using s = await testServer();
      const e = await rejected(await s.apply(doc));
      expect(e.code).toBe('TRELLIS_ERR_RESOURCE_INVALID');
      expect(e.field).toBe(field);
      expect(e.message).toMatch(rule);
      expect(e.message.startsWith(field)).toBe(true);
    });
  }

  it('a ref to a Service is accepted, not Ready, and resolves once a v1 Service gives it an address', async () => {
    await using s = await testServer();
    await s.apply(broker('b'));
    const doc = trigger('t', {
      broker: 'b',
      subscriber: { ref: { apiVersion: 'serving.knative.dev/v1', kind: 'Service', name: 'event-display' } },
    });
    const res = await s.apply(doc);
    expect(res.status).toBe(201);
    type Status = {
      status: {
        subscriberUri?: string;
        conditions: { type: string; status: string; reason?: string; message?: string }[];
      };
    };
    const t = (await res.json()) as Status;
    const readyCond = t.status.conditions.find((c) => c.type === 'Ready')!;
    expect(readyCond).toMatchObject({ status: 'False', reason: 'Unresolvable' });
    expect(readyCond.message).toMatch(/runs without Kubernetes/);
    expect(readyCond.message).toMatch(/ExternalName/);
    expect(readyCond.message).toMatch(/uri: http:\/\//);
    // A v1 Service of type ExternalName gives the target an address: the Trigger turns Ready.
    const svc = await fetch(`${s.url}/api/v1/namespaces/default/services`, {
      method: 'POST',
      headers: { 'content-type': 'application/yaml' },
      body: 'apiVersion: v1\nkind: Service\nmetadata:\n  name: event-display\nspec:\n  type: ExternalName\n  externalName: 127.0.0.1\n  ports:\n    - port: 8081\n',
    });
    expect(svc.status).toBe(201);
    const after = (await (await fetch(`${s.url}${API}/triggers/t`)).json()) as Status;
    expect(after.status.conditions[0]).toMatchObject({ type: 'Ready', status: 'True' });
    expect(after.status.subscriberUri).toBe('http://127.0.0.1:8081/');
    // The annotation works too, and wins.
    await fetch(`${s.url}/api/v1/namespaces/default/services`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: {
          name: 'event-display',
          annotations: { 'trellis.dev/address': 'http://127.0.0.1:9999/display' },
        },
        spec: {},
      }),
    });
    const again = (await (await fetch(`${s.url}${API}/triggers/t`)).json()) as Status;
    expect(again.status.subscriberUri).toBe('http://127.0.0.1:9999/display');
  });

  it('names up to 253 characters can be created, read, updated and deleted', async () => {
    await using s = await testServer();
    const name = `${'a'.repeat(200)}.${'b'.repeat(52)}`;
    expect((await s.apply(broker(name))).status).toBe(201);
    expect((await fetch(`${s.url}${API}/brokers/${name}`)).status).toBe(200);
    expect((await s.apply(broker(name, { delivery: { retry: 1 } }))).status).toBe(200);
    expect((await fetch(`${s.url}${API}/brokers/${name}`, { method: 'DELETE' })).status).toBe(200);
    const e = await rejected(await s.apply(broker('x'.repeat(254))));
    expect(e.field).toBe('metadata.name');
  });

  it('a misspelled kind is named as one; a field in the wrong place is an unknown field', async () => {
    await using s = await testServer();
    const lower = await fetch(`${s.url}${API}/brokers`, {
      method: 'POST',
      headers: { 'content-type': 'application/yaml' },
      body: 'apiVersion: eventing.knative.dev/v1\nkind: broker\nmetadata:\n  name: b\n',
    });
    expect(lower.status).toBe(404);
    expect(((await lower.json()) as { message: string }).message).toMatch(/did you mean 'Broker'/);
    const bulk = (await (
      await fetch(`${s.url}/apis/apply`, {
        method: 'POST',
        headers: { 'content-type': 'application/yaml' },
        body: 'apiVersion: eventing.knative.dev/v1\nkind: trigger\nmetadata:\n  name: t\nspec: {broker: b}\n',
      })
    ).json()) as { items: { error: { message: string } }[] };
    expect(bulk.items[0]!.error.message).toMatch(/did you mean 'Trigger'/);
    const misplaced = await rejected(
      await s.apply(trigger('t', { broker: 'b', filter: { subscriber: { uri: 'http://x/' } } })),
    );
    expect(misplaced.field).toBe('spec.filter.subscriber');
    expect(misplaced.message).toMatch(/unknown field/);
  });

  it("accepts Knative's 'config:' with nothing after it", async () => {
    await using s = await testServer();
    const res = await fetch(`${s.url}${API}/brokers`, {
      method: 'POST',
      headers: { 'content-type': 'application/yaml' },
      body: 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: c\nspec:\n  config:\n',
    });
    expect(res.status).toBe(201);
  });

  it('refuses documents nested too deeply, before any parser recurses', async () => {
    await using s = await testServer();
    const deep = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;
    for (const [ct, body] of [
      ['application/json', `{"kind":"Broker","metadata":{"name":"x","labels":${deep(5000)}}}`],
      ['application/yaml', `kind: Broker\nmetadata: {name: x, labels: ${deep(100_000)}}`],
      ['application/yaml', `${'- '.repeat(5000)}x`],
      ['application/yaml', Array.from({ length: 200 }, (_, i) => `${' '.repeat(i)}a:`).join('\n')],
    ] as const) {
      const res = await fetch(`${s.url}${API}/brokers`, {
        method: 'POST',
        headers: { 'content-type': ct },
        body,
      });
      const e = await rejected(res);
      expect([ct, res.status, e.code]).toEqual([ct, 400, 'TRELLIS_ERR_RESOURCE_PARSE']);
      expect(e.message).toMatch(/nests deeper than 64 levels/);
    }
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
  });

  it('unknown kinds, wrong apiVersion and unparseable bodies', async () => {
    await using s = await testServer();
    const wrongVersion = await s.apply({ ...broker('b'), apiVersion: 'eventing.knative.dev/v1beta1' });
    expect((await rejected(wrongVersion)).field).toBe('apiVersion');
    const yaml = await fetch(`${s.url}${API}/brokers`, {
      method: 'POST',
      body: 'kind: Broker\n  bad: [indent',
      headers: { 'content-type': 'application/yaml' },
    });
    expect((await rejected(yaml)).code).toBe('TRELLIS_ERR_RESOURCE_PARSE');
    const kind = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/widgets`);
    expect((await rejected(kind)).code).toBe('TRELLIS_ERR_KIND_UNKNOWN');
    const mismatch = await fetch(`${s.url}${API}/brokers`, {
      method: 'POST',
      body: JSON.stringify(broker('b', {}, 'other')),
      headers: { 'content-type': 'application/json' },
    });
    expect((await rejected(mismatch)).field).toBe('metadata.namespace');
    expect((await fetch(`${s.url}${API}/brokers`)).status).toBe(200);
  });
});

describe('admin API', () => {
  it('creates, updates (generation), lists, gets and deletes', async () => {
    await using s = await testServer();
    const created = await s.apply(broker('b'));
    expect(created.status).toBe(201);
    expect(created.headers.get('trellis-apply-action')).toBe('created');
    const same = await s.apply(broker('b'));
    expect(same.headers.get('trellis-apply-action')).toBe('unchanged');
    const changed = await s.apply(broker('b', { delivery: { retry: 2 } }));
    expect(changed.status).toBe(200);
    const obj = (await changed.json()) as {
      metadata: { generation: number };
      status: { observedGeneration: number; address: { url: string } };
    };
    expect(obj.metadata.generation).toBe(2);
    expect(obj.status.observedGeneration).toBe(2);
    expect(obj.status.address.url).toBe(`${s.url}/default/b`);
    const yaml = await fetch(`${s.url}${API}/brokers`, {
      method: 'POST',
      body: 'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: from-yaml\n',
      headers: { 'content-type': 'application/yaml' },
    });
    expect(yaml.status).toBe(201);
    const list = (await (await fetch(`${s.url}${API}/brokers`)).json()) as {
      kind: string;
      items: { metadata: { name: string } }[];
    };
    expect(list.kind).toBe('BrokerList');
    expect(list.items.map((i) => i.metadata.name)).toEqual(['b', 'from-yaml']);
    const all = (await (await fetch(`${s.url}/apis/eventing.knative.dev/v1/brokers`)).json()) as {
      items: unknown[];
    };
    expect(all.items).toHaveLength(2);
    expect((await fetch(`${s.url}${API}/brokers/b`, { method: 'DELETE' })).status).toBe(200);
    const gone = await fetch(`${s.url}${API}/brokers/b`);
    expect(gone.status).toBe(404);
    expect(((await gone.json()) as { code: string }).code).toBe('TRELLIS_ERR_RESOURCE_NOT_FOUND');
    expect(
      (
        await s.post('/default/b', {
          'ce-specversion': '1.0',
          'ce-id': '1',
          'ce-source': 's',
          'ce-type': 't',
        })
      ).status,
    ).toBe(404);
  });

  it('applies while the writer thread is committing events (no SQLITE_BUSY_SNAPSHOT)', async () => {
    await using s = await testServer();
    await s.apply(broker('busy'));
    await s.apply(
      trigger('t', { broker: 'busy', subscriber: { uri: 'http://127.0.0.1:1/' }, delivery: { retry: 0 } }),
    );
    const failures: string[] = [];
    for (let i = 0; i < 60; i++) {
      const traffic = Array.from({ length: 5 }, (_, k) =>
        s.post('/default/busy', {
          'ce-specversion': '1.0',
          'ce-id': `${i}-${k}`,
          'ce-source': 's',
          'ce-type': 't',
        }),
      );
      const res = await s.apply(broker(`b${i}`));
      if (res.status !== 201) failures.push(`b${i}: ${res.status} ${await res.text()}`);
      await Promise.all(traffic);
    }
    expect(failures).toEqual([]);
  });

  it('rejects a stale resourceVersion with 409', async () => {
    await using s = await testServer();
    const first = (await (await s.apply(broker('b'))).json()) as { metadata: { resourceVersion: string } };
    await s.apply(broker('b', { delivery: { retry: 1 } }));
    const stale = broker('b', { delivery: { retry: 2 } });
    (stale.metadata as Record<string, unknown>)['resourceVersion'] = first.metadata.resourceVersion;
    const res = await s.apply(stale);
    expect(res.status).toBe(409);
    expect(((await res.json()) as { code: string }).code).toBe('TRELLIS_ERR_CONFLICT');
  });

  it('resources survive a restart on the same data directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-restart-'));
    const a = await testServer({ dataDir: dir });
    await a.apply(broker('keep'));
    await a.close();
    const b = await testServer({ dataDir: dir });
    expect((await fetch(`${b.url}${API}/brokers/keep`)).status).toBe(200);
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('parsing', () => {
  it('reads multi-document YAML and skips empty documents', () => {
    const docs = parseDocuments('a: 1\n---\n---\nb: 2\n');
    expect(docs).toEqual([{ a: 1 }, { b: 2 }]);
    expect(() => parseDocuments('a: [1\n')).toThrow(/document 1 line/);
  });
  it('reads ISO-8601 durations', () => {
    expect(parseDuration('PT0.2S')).toBe(200);
    expect(parseDuration('PT1M30S')).toBe(90_000);
    expect(parseDuration('P1DT1H')).toBe(90_000_000);
    expect(parseDuration('P1M')).toBeUndefined();
    expect(parseDuration('PT')).toBeUndefined();
    expect(parseDuration('5s')).toBeUndefined();
  });
});
