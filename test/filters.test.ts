/** The filters dialect: validation paths, Knative's matching rules, the index, end to end, and explain. */
import { describe, expect, it } from 'vitest';
import type { CloudEvent } from '../src/cloudevents/event.js';
import { TriggerIndex, type TriggerRoute } from '../src/dataplane/routes.js';
import { compileAttributesFilter } from '../src/filter/attributes.js';
import {
  compileFilters,
  explainFilters,
  FilterError,
  filterWarnings,
  validateFilters,
} from '../src/filter/dialect.js';
import { anchorOf } from '../src/server/wiring.js';
import { broker, ceHeaders, testServer, trigger } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

const ev = (attrs: Record<string, string | number | boolean>): CloudEvent => ({
  attrs: { specversion: '1.0', id: '1', source: '/shop/orders', type: 'order.created', ...attrs },
});
const matches = (filters: unknown, e: CloudEvent) =>
  compileFilters(validateFilters('spec.filters', filters))(e);

function refused(filters: unknown): FilterError {
  try {
    validateFilters('spec.filters', filters);
  } catch (err) {
    if (err instanceof FilterError) return err;
    throw err;
  }
  throw new Error('accepted');
}

describe('validation', () => {
  it('names the path of the bad entry', () => {
    expect(refused([{ exact: { Type: 'x' } }]).path).toBe('spec.filters[0].exact.Type');
    expect(refused([{ exact: { type: '' } }]).path).toBe('spec.filters[0].exact.type');
    expect(refused([{ any: [{ exact: { a: 'b' } }, { nope: {} }] }]).path).toBe(
      'spec.filters[0].any[1].nope',
    );
    expect(refused([{ not: { exact: { a: 'b' }, suffix: { a: 'c' } } }]).rule).toMatch(/exactly one dialect/);
    // Knative's attribute-name rule, inside every dialect and at any depth.
    for (const d of ['exact', 'prefix', 'suffix'])
      expect(refused([{ all: [{ [d]: { '0invalid': 'x' } }] }]).rule).toMatch(/\^\[a-z\]\[a-z0-9\]\*\$/);
    expect(refused([{ not: { prefix: { 'a-b': 'x' } } }]).path).toBe('spec.filters[0].not.prefix.a-b');
    const cesql = refused([{ cesql: 'type = ' }]);
    expect(cesql.path).toBe('spec.filters[0].cesql');
    expect(cesql.rule).toMatch(/expected a value.*position 7/);
    expect(refused({ exact: { a: 'b' } }).rule).toMatch(/list/);
  });
});

describe('empty dialects, as Knative accepts them', () => {
  const empties: unknown[] = [
    { all: [] },
    { any: [] },
    { not: {} },
    { cesql: '' },
    { all: null },
    { exact: {} },
    {},
  ];
  it('accepts each, matches every event, and warns', () => {
    for (const f of empties) {
      expect(matches([f], ev({}))).toBe(true);
      expect(matches([f, { exact: { type: 'nope' } }], ev({}))).toBe(false);
      expect(filterWarnings([f]).join()).toMatch(/matches every event/);
    }
    expect(filterWarnings([{ exact: { type: 'x' } }])).toEqual([]);
    expect(filterWarnings([{ all: [{ exact: { a: 'b' } }, { any: [] }] }])).toEqual([
      'spec.filters[0].all[1].any: is empty, so it is no filter and matches every event (as in Knative)',
    ]);
    // An empty dialect beside a real one is not a second dialect (Knative counts non-empty ones).
    expect(matches([{ exact: { type: 'order.created' }, all: [] }], ev({}))).toBe(true);
    expect(matches([{ not: { all: [] } }], ev({}))).toBe(true);
  });

  it('applies unchanged, with a warning in the apply answer and in the status', async () => {
    await using s = await testServer();
    await s.apply(broker('b'));
    const res = await s.apply(
      trigger('t', {
        broker: 'b',
        subscriber: { uri: 'http://127.0.0.1:9/' },
        filters: [{ all: [] }, { cesql: '' }],
      }),
    );
    expect(res.status).toBe(201);
    expect(res.headers.get('warning')).toMatch(/299 - "spec.filters\[0\].all: is empty/);
    const t = (await res.json()) as {
      spec: { filters: unknown[] };
      status: { conditions: { type: string; status: string; message?: string }[] };
    };
    expect(t.spec.filters).toEqual([{ all: [] }, { cesql: '' }]);
    const c = t.status.conditions.find((x) => x.type === 'FiltersValid');
    expect(c?.message).toMatch(/spec.filters\[1\].cesql: is empty/);
    expect(t.status.conditions.find((x) => x.type === 'Ready')?.status).toBe('True');
  });
});

describe('schemaurl and datamediatype', () => {
  const e = ev({
    dataschema: 'https://schemas.example/order',
    datacontenttype: 'Application/JSON; charset=utf-8',
  });
  it('schemaurl is dataschema, datamediatype is the content type without parameters', () => {
    expect(compileAttributesFilter({ schemaurl: 'https://schemas.example/order' })(e)).toBe(true);
    expect(compileAttributesFilter({ datamediatype: 'application/json' })(e)).toBe(true);
    expect(compileAttributesFilter({ datamediatype: 'text/plain' })(e)).toBe(false);
    expect(compileAttributesFilter({ datamediatype: '' })(ev({}))).toBe(false);
    expect(matches([{ exact: { datamediatype: 'application/json' } }], e)).toBe(true);
    expect(matches([{ prefix: { schemaurl: 'https://schemas.example/' } }], e)).toBe(true);
    // Not used as an index anchor: the event has no attribute of that name.
    expect(
      anchorOf({
        broker: 'b',
        subscriber: { uri: 'http://x/' },
        filter: { attributes: { datamediatype: 'application/json' } },
      }),
    ).toBeUndefined();
  });
});

describe('matching', () => {
  it('exact, prefix and suffix are ANDed maps, case-sensitive, on the canonical string', () => {
    const e = ev({ count: 42, urgent: true });
    expect(matches([{ exact: { type: 'order.created', count: '42', urgent: 'true' } }], e)).toBe(true);
    expect(matches([{ exact: { type: 'Order.Created' } }], e)).toBe(false);
    expect(matches([{ prefix: { type: 'order.', source: '/shop' } }], e)).toBe(true);
    expect(matches([{ suffix: { type: '.created' } }, { prefix: { source: '/other' } }], e)).toBe(false);
  });
  it('a missing attribute never matches, even under not-less dialects', () => {
    expect(matches([{ prefix: { region: 'e' } }], ev({}))).toBe(false);
    expect(matches([{ not: { exact: { region: 'eu' } } }], ev({}))).toBe(true);
  });
  it('all, any, not nest', () => {
    const f = [
      {
        any: [
          { exact: { type: 'a' } },
          { all: [{ prefix: { type: 'order.' } }, { not: { suffix: { source: '/test' } } }] },
        ],
      },
    ];
    expect(matches(f, ev({}))).toBe(true);
    expect(matches(f, ev({ source: '/x/test' }))).toBe(false);
  });
  it('cesql and sql: an error or a non-Boolean result does not match', () => {
    expect(matches([{ cesql: "type LIKE 'order.%' AND INT(amount) > 100" }], ev({ amount: '150' }))).toBe(
      true,
    );
    expect(matches([{ sql: 'INT(amount) > 100' }], ev({ amount: 'abc' }))).toBe(false);
    expect(matches([{ cesql: 'missing = 1 OR TRUE' }], ev({}))).toBe(false);
    expect(matches([{ cesql: 'amount' }], ev({ amount: '5' }))).toBe(false);
  });
  it('explains which clause rejected an event', () => {
    const filters = validateFilters('spec.filters', [
      { prefix: { type: 'order.' } },
      { all: [{ exact: { region: 'eu' } }] },
    ]);
    expect(explainFilters(filters, ev({ region: 'eu' }))).toBeUndefined();
    expect(explainFilters(filters, ev({}))).toBe(
      "spec.filters[1].all[0].exact.region: the event has no attribute 'region'",
    );
    expect(explainFilters(filters, ev({ type: 'user.created' }))).toBe(
      "spec.filters[0].prefix.type: 'user.created' does not start with 'order.'",
    );
    const sql = validateFilters('spec.filters', [{ cesql: 'INT(amount) > 100' }]);
    expect(explainFilters(sql, ev({ amount: 'x' }))).toMatch(/evaluates to false with errors \(cast/);
  });
});

describe('the index', () => {
  it('finds the one matching Trigger among 10,000 by lookup, and still checks the rest', () => {
    const routes: TriggerRoute[] = [];
    for (let i = 0; i < 10_000; i++) {
      const spec = {
        broker: 'b',
        filter: { attributes: { type: `t.${i}` } },
        subscriber: { uri: 'http://x/' },
      };
      routes.push({
        id: `exact-${i}`,
        kind: 'Trigger',
        namespace: 'default',
        name: `t${i}`,
        broker: 'default/b',
        stream: 'default/b',
        reply: { kind: 'ingest', stream: 'default/b' },
        predicate: (e) => e.attrs['type'] === `t.${i}`,
        anchor: anchorOf(spec),
        subscriberUri: 'http://x/',
        policy: {
          retry: 0,
          backoffPolicy: 'linear',
          backoffDelayMs: 1,
          timeoutMs: 1,
          retryAfterMaxMs: undefined,
          backoffMaxMs: undefined,
          deadLetterUri: undefined,
        },
      });
    }
    const prefix = {
      ...routes[0]!,
      id: 'prefix',
      predicate: (e: CloudEvent) => String(e.attrs['type']).startsWith('t.'),
      anchor: undefined,
    };
    const index = new TriggerIndex([...routes, prefix]);
    expect(index.match(ev({ type: 't.4242' })).sort()).toEqual(['exact-4242', 'prefix']);
    expect(index.match(ev({ type: 'other' }))).toEqual([]);
  });
  it('anchors on type first, then source, then any exact attribute; "" is not exact', () => {
    expect(
      anchorOf({ broker: 'b', subscriber: {}, filter: { attributes: { source: 's', type: 't' } } }),
    ).toEqual({ attribute: 'type', value: 't' });
    expect(
      anchorOf({ broker: 'b', subscriber: {}, filter: { attributes: { type: '', region: 'eu' } } }),
    ).toEqual({ attribute: 'region', value: 'eu' });
    expect(anchorOf({ broker: 'b', subscriber: {}, filters: [{ prefix: { type: 'a' } }] })).toBeUndefined();
    expect(anchorOf({ broker: 'b', subscriber: {}, filters: [{ exact: { source: '/s' } }] })).toEqual({
      attribute: 'source',
      value: '/s',
    });
  });
});

describe('end to end', () => {
  it('a non-empty filters overrides filter.attributes; an empty one does not', async () => {
    await using a = await startSink();
    await using b = await startSink();
    await using s = await testServer();
    await s.apply(broker('br'));
    await s.apply(
      trigger('dialect', {
        broker: 'br',
        filter: { attributes: { type: 'never.sent' } },
        filters: [{ prefix: { type: 'order.' } }, { cesql: "subject IN ('eu', 'us')" }],
        subscriber: { uri: a.url },
      }),
    );
    await s.apply(
      trigger('empty', {
        broker: 'br',
        filter: { attributes: { type: 'order.created' } },
        filters: [],
        subscriber: { uri: b.url },
      }),
    );
    await s.post('/default/br', ceHeaders('1', 'order.created', { 'ce-subject': 'eu' }), '{}');
    await s.post('/default/br', ceHeaders('2', 'order.shipped', { 'ce-subject': 'asia' }), '{}');
    await s.post('/default/br', ceHeaders('3', 'user.created', { 'ce-subject': 'us' }), '{}');
    await a.waitFor(1);
    await b.waitFor(1);
    await expect.poll(() => s.dispatcher.inflight() + s.ingress.lag.get('default/br')).toBe(0);
    expect(a.received.map((r) => r.event.attrs['id'])).toEqual(['1']);
    expect(b.received.map((r) => r.event.attrs['id'])).toEqual(['1']);
  });
});
