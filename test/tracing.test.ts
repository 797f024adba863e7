/**
 * Tracing end to end: W3C trace context from a producer's HTTP header through ingress, the store and a
 * delivery to a subscriber, and on through its reply, with the spans exported over OTLP/HTTP to a
 * receiver this test runs.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { serve } from './helpers/process.js';
import { ceHeaders } from './helpers/server.js';
import { startSink } from './helpers/sink.js';

interface ExportedSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  attributes: Record<string, unknown>;
}

/** OTLP/JSON ids are hex; some exporters send base64: both read as hex. */
const hex = (id: unknown) => {
  const s = String(id ?? '');
  return /^[0-9a-f]*$/.test(s) ? s : Buffer.from(s, 'base64').toString('hex');
};

/** An OTLP/HTTP (JSON) trace receiver: `POST /v1/traces`. */
async function startReceiver() {
  const spans: ExportedSpan[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/v1/traces') {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as {
          resourceSpans: { scopeSpans: { spans: Record<string, unknown>[] }[] }[];
        };
        for (const rs of body.resourceSpans)
          for (const ss of rs.scopeSpans)
            for (const sp of ss.spans) {
              const attrs: Record<string, unknown> = {};
              for (const a of (sp['attributes'] ?? []) as { key: string; value: Record<string, unknown> }[])
                attrs[a.key] = Object.values(a.value)[0];
              spans.push({
                name: String(sp['name']),
                kind: Number(sp['kind']),
                traceId: hex(sp['traceId']),
                spanId: hex(sp['spanId']),
                parentSpanId: hex(sp['parentSpanId']),
                attributes: attrs,
              });
            }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PRODUCER_SPAN = '00f067aa0ba902b7';
const PRODUCER = `00-${TRACE}-${PRODUCER_SPAN}-01`;

describe('tracing', () => {
  it('continues the producer’s trace through ingress, store, delivery and the reply, exported over OTLP', {
    timeout: 60_000,
  }, async () => {
    const otlp = await startReceiver();
    // t1's subscriber answers with a reply event; t2 takes the reply.
    await using replier = await startSink((_r, res) =>
      res
        .writeHead(200, {
          'ce-specversion': '1.0',
          'ce-id': 'r-1',
          'ce-source': '/r',
          'ce-type': 'reply.type',
        })
        .end(),
    );
    await using last = await startSink();
    const dir = mkdtempSync(join(tmpdir(), 'trellis-trace-'));
    const file = join(dir, 'r.yaml');
    writeFileSync(
      file,
      `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n---\n` +
        `apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t1}\nspec: {broker: b, filter: {attributes: {type: demo.type}}, subscriber: {uri: "${replier.url}"}}\n---\n` +
        `apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t2}\nspec: {broker: b, filter: {attributes: {type: reply.type}}, subscriber: {uri: "${last.url}"}}\n`,
    );
    const t = await serve(['--data-dir', join(dir, 'd'), '-f', file], {
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_SERVICE_NAME: 'trellis-under-test',
    });
    try {
      const sent = await fetch(`${t.url}/default/b`, {
        method: 'POST',
        headers: { ...ceHeaders('e-1'), traceparent: PRODUCER, tracestate: 'vendor=1' },
        body: '{"n":1}',
      });
      expect(sent.status).toBe(202);
      const [got] = await replier.waitFor(1);
      // The event carries where its transmission started; the request carries this hop's span.
      expect(got!.event.attrs['traceparent']).toBe(PRODUCER);
      expect(got!.event.attrs['tracestate']).toBe('vendor=1');
      const hop = String(got!.headers['traceparent']);
      expect(hop).toMatch(new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`));
      expect(hop).not.toBe(PRODUCER);
      // The reply continues the trace: its extension is the delivery that produced it.
      const [reply] = await last.waitFor(1);
      expect(reply!.event.attrs['type']).toBe('reply.type');
      expect(reply!.event.attrs['traceparent']).toBe(hop);
      expect(String(reply!.headers['traceparent'])).toMatch(new RegExp(`^00-${TRACE}-`));

      const named = (prefix: string) => otlp.spans.filter((s) => s.name.startsWith(prefix));
      await expect
        .poll(
          () => [
            named('ingress').length,
            named('deliver Trigger default/t1').length,
            named('deliver Trigger default/t2').length,
          ],
          {
            timeout: 20_000,
          },
        )
        .toEqual([1, 1, 1]);
      for (const s of otlp.spans) expect(s.traceId).toBe(TRACE);
      const ingress = named('ingress')[0]!;
      expect(ingress).toMatchObject({ name: 'ingress default/b', kind: 2, parentSpanId: PRODUCER_SPAN });
      expect(ingress.attributes).toMatchObject({
        'cloudevents.event_id': 'e-1',
        'cloudevents.event_type': 'demo.type',
      });
      await expect.poll(() => named('store append').length).toBeGreaterThanOrEqual(2); // the event, then the reply
      const firstAppend = named('store append').find((s) => s.parentSpanId === ingress.spanId);
      expect(firstAppend).toBeDefined();
      expect(
        named('filter').find((s) => s.parentSpanId === ingress.spanId)?.attributes['trellis.deliveries'],
      ).toBe(1);
      const d1 = named('deliver Trigger default/t1')[0]!;
      expect(d1).toMatchObject({ kind: 3, parentSpanId: PRODUCER_SPAN });
      expect(hop).toBe(`00-${TRACE}-${d1.spanId}-01`);
      expect(d1.attributes).toMatchObject({ 'http.response.status_code': 200, 'trellis.attempt': 1 });
      // The reply was stored under t1's delivery span, and t2's delivery of it is that span's child.
      expect(named('store append').some((s) => s.parentSpanId === d1.spanId)).toBe(true);
      expect(named('deliver Trigger default/t2')[0]!.parentSpanId).toBe(d1.spanId);
    } finally {
      t.child.kill('SIGTERM');
      await t.exited();
      await otlp.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps an event’s own trace extension; without an OTLP endpoint adds nothing', async () => {
    await using sink = await startSink();
    const dir = mkdtempSync(join(tmpdir(), 'trellis-trace-'));
    const file = join(dir, 'r.yaml');
    writeFileSync(
      file,
      `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec: {broker: b, subscriber: {uri: "${sink.url}"}}\n`,
    );
    const otlp = await startReceiver();
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '' };
    const off = await serve(['--data-dir', join(dir, 'off'), '-f', file], env);
    try {
      const r = await fetch(`${off.url}/default/b`, {
        method: 'POST',
        headers: { ...ceHeaders('plain'), traceparent: PRODUCER },
        body: '{}',
      });
      expect(r.status).toBe(202);
      const [got] = await sink.waitFor(1);
      expect(got!.event.attrs['traceparent']).toBeUndefined();
      expect(got!.headers['traceparent']).toBeUndefined();
    } finally {
      off.child.kill('SIGTERM');
      await off.exited();
    }
    const on = await serve(['--data-dir', join(dir, 'on'), '-f', file], {
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
    });
    try {
      const own = `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01`;
      const r = await fetch(`${on.url}/default/b`, {
        method: 'POST',
        headers: { ...ceHeaders('own'), 'ce-traceparent': own, traceparent: 'not-a-trace-context' },
        body: '{}',
      });
      expect(r.status).toBe(202);
      const [, got] = await sink.waitFor(2);
      expect(got!.event.attrs['traceparent']).toBe(own);
      expect(String(got!.headers['traceparent'])).toMatch(/^00-1{32}-[0-9a-f]{16}-01$/);
    } finally {
      on.child.kill('SIGTERM');
      await on.exited();
      await otlp.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
