/**
 * Subscriber outages, with the real process: one subscriber answers 503 for a while, one refuses
 * connections for a while, one never recovers. Every event ends up delivered, or dead-lettered with the
 * knativeerror* extensions once its DeliverySpec is exhausted; each one is accounted for exactly.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { serve } from './helpers/process.js';
import { peakRssMiB, report } from './helpers/report.js';
import { type Sink, startSink } from './helpers/sink.js';

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

it('every event is delivered after an outage, or dead-lettered once retries run out', {
  timeout: 90_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-outage-'));
  const outageMs = 1500;
  const start = Date.now();
  await using flaky = await startSink((_r, res) =>
    res.writeHead(Date.now() - start < outageMs ? 503 : 200).end(),
  );
  await using down = await startSink((_r, res) => res.writeHead(503).end('still down'));
  await using dls = await startSink();
  const laterPort = await freePort(); // nothing listens here until the outage is over
  let later: Sink | undefined;
  const delivery =
    'delivery:\n    retry: 60\n    backoffPolicy: linear\n    backoffDelay: PT0.05S\n    backoffMax: PT0.2S\n';
  const t = (name: string, uri: string, d: string) =>
    `---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: ${name}\nspec:\n  broker: b\n  subscriber:\n    uri: ${uri}\n  ${d}`;
  const file = join(dir, 'res.yaml');
  writeFileSync(
    file,
    `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n${t('flaky', flaky.url, delivery)}${t('refused', `http://127.0.0.1:${laterPort}/`, delivery)}${t(
      'never',
      down.url,
      `delivery:\n    retry: 2\n    backoffDelay: PT0.05S\n    deadLetterSink:\n      uri: ${dls.url}\n`,
    )}`,
  );
  const server = await serve(['--data-dir', join(dir, 'data'), '-f', file]);
  try {
    const ids = Array.from({ length: 200 }, (_, i) => `o${i}`);
    for (const id of ids) {
      const res = await fetch(`${server.url}/default/b`, {
        method: 'POST',
        headers: { 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/outage', 'ce-type': 't' },
      });
      expect(res.status).toBe(202);
    }
    await new Promise((r) => setTimeout(r, Math.max(0, outageMs - (Date.now() - start))));
    // The refused subscriber comes up on its port.
    later = await startSink(undefined, laterPort);
    try {
      const distinct = (s: Sink) => new Set(s.received.map((r) => String(r.event.attrs['id'])));
      await expect.poll(() => distinct(dls).size, { timeout: 30_000 }).toBe(200);
      await expect.poll(() => distinct(later!).size, { timeout: 30_000 }).toBe(200);
      const afterOutage = () =>
        new Set(
          flaky.received.filter((r) => r.at - start >= outageMs).map((r) => String(r.event.attrs['id'])),
        );
      await expect.poll(() => afterOutage().size, { timeout: 30_000 }).toBe(200);
      for (const r of dls.received) {
        expect(r.event.attrs['knativeerrorcode']).toBe('503');
        expect(r.event.attrs['knativeerrordest']).toBe(down.url);
        expect(Buffer.from(String(r.event.attrs['knativeerrordata']), 'base64').toString()).toBe(
          'still down',
        );
      }
      expect(down.received.length).toBe(600); // 1 attempt + 2 retries each, then the dead-letter sink
      console.log(
        `outage: 200 events; flaky (503 for ${outageMs} ms): 200 delivered after ${flaky.received.length - 200} failed attempts; ` +
          `refused: 200 delivered; never: 200 dead-lettered after 600 attempts`,
      );
      report({
        scenario: 'subscriber outage: 503 for 1.5 s, refused for 1.5 s, never up (dead letter)',
        sent: 200,
        acknowledged: 200,
        delivered: 400,
        duplicated:
          later.received.length - 200 + (flaky.received.filter((r) => r.at - start >= outageMs).length - 200),
        lost: 0,
        deadLettered: dls.received.length,
        peakRssMiB: peakRssMiB(server.child.pid!),
      });
    } finally {
      await later.close();
    }
  } finally {
    server.child.kill('SIGTERM');
    await server.exited();
    rmSync(dir, { recursive: true, force: true });
  }
});
