/**
 * Knative's own flow examples, in their shapes: steps, filters and replies that `ref` Knative Serving
 * Services (given addresses with v1 Services, as docs/channel.md says), a Sequence replying to another
 * Sequence, a Parallel of filters and transformers, applied as YAML end to end.
 */
import type { ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { parseDocuments } from '../src/resources/registry.js';
import { ceHeaders, testServer } from './helpers/server.js';
import { type Received, type Sink, startSink } from './helpers/sink.js';

/** A v1 Service that gives a Knative Serving Service's name an address on this machine. */
function addressFor(name: string, sink: Sink): string {
  const port = new URL(sink.url).port;
  return `---\napiVersion: v1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n  type: ExternalName\n  externalName: 127.0.0.1\n  ports:\n    - port: ${port}\n`;
}

function step(tag: string, keep?: (n: number) => boolean) {
  return (r: Received, res: ServerResponse) => {
    const d = JSON.parse(r.event.data?.toString() || '{}') as { n?: number; path?: string[] };
    if (keep !== undefined && !keep(d.n ?? 0)) return void res.writeHead(202).end();
    res
      .writeHead(200, {
        'ce-specversion': '1.0',
        'ce-id': String(r.event.attrs['id']),
        'ce-source': `/${tag}`,
        'ce-type': `${tag}.out`,
        'content-type': 'application/json',
      })
      .end(JSON.stringify({ ...d, path: [...(d.path ?? []), tag] }));
  };
}

async function applyAll(s: Awaited<ReturnType<typeof testServer>>, yaml: string): Promise<void> {
  for (const doc of parseDocuments(yaml)) {
    const res = await s.apply(doc as Record<string, unknown>);
    expect(res.status, await res.clone().text()).toBeLessThan(300);
  }
}

describe("Knative's flow examples", () => {
  it('a Parallel of odd and even filters and transformers, replying to an event display', async () => {
    await using evenFilter = await startSink(step('even-filter', (n) => n % 2 === 0));
    await using oddFilter = await startSink(step('odd-filter', (n) => n % 2 === 1));
    await using evenT = await startSink(step('even-transformer'));
    await using oddT = await startSink(step('odd-transformer'));
    await using display = await startSink();
    await using s = await testServer();
    await applyAll(
      s,
      `apiVersion: flows.knative.dev/v1
kind: Parallel
metadata:
  name: odd-even-parallel
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1
    kind: InMemoryChannel
  branches:
  - filter:
      ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: even-filter
    subscriber:
      ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: even-transformer
  - filter:
      ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: odd-filter
    subscriber:
      ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: odd-transformer
  reply:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: event-display
${addressFor('even-filter', evenFilter)}${addressFor('odd-filter', oddFilter)}${addressFor('even-transformer', evenT)}${addressFor('odd-transformer', oddT)}${addressFor('event-display', display)}`,
    );
    for (let n = 0; n < 10; n++)
      expect(
        (await s.post('/parallels/default/odd-even-parallel', ceHeaders(`p${n}`), JSON.stringify({ n })))
          .status,
      ).toBe(202);
    await display.waitFor(10);
    const paths = display.received.map(
      (r) => JSON.parse(r.event.data!.toString()) as { n: number; path: string[] },
    );
    for (const p of paths)
      expect(p.path).toEqual(
        p.n % 2 === 0 ? ['even-filter', 'even-transformer'] : ['odd-filter', 'odd-transformer'],
      );
  });

  it('a Sequence replying to another Sequence, which replies to a Broker', async () => {
    await using first = await startSink(step('first'));
    await using second = await startSink(step('second'));
    await using third = await startSink(step('third'));
    await using display = await startSink();
    await using s = await testServer();
    await applyAll(
      s,
      `apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: display
spec:
  broker: default
  filter:
    attributes:
      type: third.out
  subscriber:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: event-display
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata:
  name: first-sequence
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1
    kind: InMemoryChannel
  steps:
    - ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: first
    - ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: second
  reply:
    ref:
      kind: Sequence
      apiVersion: flows.knative.dev/v1
      name: second-sequence
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata:
  name: second-sequence
spec:
  steps:
    - ref:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: third
  reply:
    ref:
      kind: Broker
      apiVersion: eventing.knative.dev/v1
      name: default
${addressFor('first', first)}${addressFor('second', second)}${addressFor('third', third)}${addressFor('event-display', display)}`,
    );
    for (let i = 0; i < 5; i++)
      expect((await s.post('/sequences/default/first-sequence', ceHeaders(`q${i}`), '{}')).status).toBe(202);
    await display.waitFor(5);
    for (const r of display.received)
      expect(JSON.parse(r.event.data!.toString()).path).toEqual(['first', 'second', 'third']);
  });
});
