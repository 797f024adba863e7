/**
 * Bad input, against the real process: a seeded corpus of malformed requests over raw sockets. Every
 * complete request gets a 4xx with a JSON code and message; the server never crashes or hangs; memory
 * stays bounded; valid events sent in between are all accepted and delivered.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { prng } from './helpers/prng.js';
import { serve } from './helpers/process.js';
import { peakRssMiB, report } from './helpers/report.js';
import { startSink } from './helpers/sink.js';

const CASES = Number(process.env['TRELLIS_FUZZ_CASES'] ?? 400);

interface Case {
  name: string;
  bytes: Buffer;
  /** Expected status range; undefined: the request is incomplete and may get no answer. */
  expect?: [number, number];
}

const HEAD = (extra: string, body = '', len = Buffer.byteLength(body)) =>
  Buffer.concat([
    Buffer.from(
      `POST /default/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${len}\r\n${extra}\r\n`,
      'latin1',
    ),
    Buffer.from(body),
  ]);
const CE = 'ce-specversion: 1.0\r\nce-id: x\r\nce-source: /f\r\nce-type: t\r\n';
const valid = JSON.stringify({
  specversion: '1.0',
  id: 'v',
  source: '/f',
  type: 't',
  data: { a: [1, 2, 3] },
});

function makeCase(r: () => number): Case {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const kind = Math.floor(r() * 12);
  switch (kind) {
    case 0: {
      const cut = valid.slice(0, Math.floor(r() * (valid.length - 1)));
      return {
        name: 'truncated JSON',
        bytes: HEAD('Content-Type: application/cloudevents+json\r\n', cut),
        expect: [400, 400],
      };
    }
    case 1: {
      const bad = pick([
        'ce-id: a\r\nce-id: b\r\n',
        'ce-specversion: 0.9\r\n',
        'ce-Bad_Name: v\r\n',
        'ce-time: lunchtime\r\n',
        'ce-dataschema: rel\r\n',
        'ce-knativebrokerttl: -1\r\n',
      ]);
      return {
        name: `bad ce- header ${JSON.stringify(bad)}`,
        bytes: HEAD(`${CE}${bad}Content-Type: text/plain\r\n`, 'x'),
        expect: [400, 400],
      };
    }
    case 2: {
      const v = pick(['%zz', '%C0%A0', '%E2%82', 'abc%', '%F0%9F%98', '"unterminated', '"bad\\']);
      return { name: `bad encoding ${v}`, bytes: HEAD(`${CE}ce-subject: ${v}\r\n`, ''), expect: [400, 400] };
    }
    case 3: {
      const bytes = Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xff]).subarray(0, 1 + Math.floor(r() * 5));
      return {
        name: 'invalid UTF-8 in a header',
        bytes: Buffer.concat([HEAD(`${CE}ce-subject: `).subarray(0, -2), bytes, Buffer.from('\r\n\r\n')]),
        expect: [400, 400],
      };
    }
    case 4:
      return {
        name: 'huge header',
        bytes: HEAD(`${CE}ce-big: ${'x'.repeat(20_000 + Math.floor(r() * 50_000))}\r\n`),
        expect: [431, 431],
      };
    case 5:
      return {
        name: 'huge declared body',
        bytes: HEAD(`${CE}Content-Type: text/plain\r\n`, 'x'.repeat(1000), 5_000_000),
        expect: [413, 413],
      };
    case 6: {
      const ct = pick([
        'application/cloudevents+xml',
        'application/cloudevents+json; charset=latin1',
        'application/json',
        'text/plain',
        'application/cloudevents-batch+protobuf',
      ]);
      return {
        name: `content type ${ct}`,
        bytes: HEAD(`Content-Type: ${ct}\r\n`, valid),
        expect: [400, 415],
      };
    }
    case 7: {
      const batch = pick([
        '{}',
        '[1,2]',
        `[${valid},{}]`,
        `[${valid},{"specversion":"1.0","id":5,"source":"s","type":"t"}]`,
        '[null]',
        `[${valid}`,
      ]);
      return {
        name: `bad batch ${batch.slice(0, 30)}`,
        bytes: HEAD('Content-Type: application/cloudevents-batch+json\r\n', batch),
        expect: [400, 400],
      };
    }
    case 8: {
      const line = pick([
        'GARBAGE\r\n\r\n',
        'POST /default/b HTTP/9.9\r\n\r\n',
        'POST /default/b HTTP/1.1\r\nContent-Length: abc\r\n\r\n',
        'POST /default/b HTTP/1.1\r\nBad Header\r\n\r\n',
        '\x00\x01\x02\r\n\r\n',
      ]);
      return {
        name: `broken HTTP ${JSON.stringify(line.slice(0, 20))}`,
        bytes: Buffer.from(line, 'latin1'),
        expect: [400, 400],
      };
    }
    case 9: {
      const n = Math.floor(r() * 2000);
      const junk = Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256)));
      return {
        name: 'random body, structured',
        bytes: Buffer.concat([HEAD('Content-Type: application/cloudevents+json\r\n', '', n), junk]),
        expect: [400, 400],
      };
    }
    case 10:
      return {
        name: 'truncated body',
        bytes: HEAD(`${CE}Content-Type: text/plain\r\n`, 'x'.repeat(10), 100),
      };
    default: {
      const path = pick(['/default', '/a/b/c', '/default/nope', '/%zz/b', '/apis/x']);
      return {
        name: `path ${path}`,
        bytes: Buffer.from(
          `POST ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n${CE}\r\n`,
        ),
        expect: [400, 404],
      };
    }
  }
}

/** Sends raw bytes on a new connection; resolves with the status and body, or undefined if closed without an answer. */
function raw(
  port: number,
  bytes: Buffer,
  endAfterWrite: boolean,
): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const finish = () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve(m ? { status: Number(m[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) } : undefined);
    };
    sock.setTimeout(10_000, () => sock.destroy());
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', () => undefined);
    sock.on('close', finish);
    sock.write(bytes, () => {
      if (endAfterWrite) sock.end();
    });
  });
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

it(`survives ${CASES} malformed requests and slow-loris senders, delivering every valid event`, {
  timeout: 60_000 + CASES * 50,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-fuzz-'));
  await using sink = await startSink();
  const file = join(dir, 'res.yaml');
  writeFileSync(
    file,
    `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  subscriber:\n    uri: ${sink.url}\n`,
  );
  const server = await serve(['--data-dir', join(dir, 'data'), '-f', file, '--request-timeout', 'PT2S']);
  const port = Number(new URL(server.url).port);
  try {
    // Slow-loris: connections that trickle a request and never finish it.
    const slow = Array.from({ length: 20 }, () => {
      const sock = connect(port, '127.0.0.1');
      const state = { closedByServer: false, answer: '' };
      sock.on('error', () => undefined);
      sock.on('data', (b: Buffer) => (state.answer += b.toString()));
      sock.on('close', () => (state.closedByServer = true));
      let i = 0;
      const head = `POST /default/b HTTP/1.1\r\nHost: x\r\n${CE}`;
      const t = setInterval(
        () => (i < head.length && !sock.destroyed ? sock.write(head[i++]!) : undefined),
        200,
      );
      const stop = () => {
        clearInterval(t);
        sock.destroy();
      };
      return { state, stop };
    });
    const seed = Number(process.env['TRELLIS_FUZZ_SEED'] ?? 20261130);
    const r = prng(seed);
    const validIds: string[] = [];
    const failures: string[] = [];
    let answered = 0;
    for (let i = 0; i < CASES; i++) {
      if (i % 10 === 0) {
        const id = `valid-${i}`;
        const res = await raw(
          port,
          HEAD(
            `ce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /f\r\nce-type: t\r\nContent-Type: application/json\r\n`,
            '{"ok":true}',
          ),
          false,
        );
        if (res?.status !== 202) failures.push(`valid event ${id} got ${res?.status}`);
        validIds.push(id);
      }
      const c = makeCase(r);
      const res = await raw(port, c.bytes, c.expect === undefined);
      if (c.expect === undefined) continue;
      answered++;
      if (res === undefined) {
        failures.push(`#${i} ${c.name}: no answer`);
        continue;
      }
      if (res.status < c.expect[0] || res.status > c.expect[1])
        failures.push(`#${i} ${c.name}: status ${res.status}, expected ${c.expect.join('-')}`);
      let body: { code?: string; message?: string } = {};
      try {
        body = JSON.parse(res.body) as typeof body;
      } catch {
        failures.push(`#${i} ${c.name}: body is not JSON: ${res.body.slice(0, 80)}`);
      }
      if (!body.code?.startsWith('TRELLIS_ERR_') || !body.message)
        failures.push(`#${i} ${c.name}: no code/message: ${res.body.slice(0, 80)}`);
    }
    // The slow senders are cut off by the request timeout (2 s, checked every second); the server still
    // answers at once. Wait for the condition, not for a time.
    await expect
      .poll(() => slow.every((s) => s.state.closedByServer), { timeout: 15_000, interval: 100 })
      .toBe(true);
    for (const s of slow) {
      expect(s.state.answer).toMatch(/^HTTP\/1\.1 408/);
      s.stop();
    }
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect(failures, failures.slice(0, 10).join('\n')).toEqual([]);
    await sink.waitFor(validIds.length);
    expect(new Set(sink.received.map((x) => String(x.event.attrs['id'])))).toEqual(new Set(validIds));
    const rss = rssMiB(server.child.pid!);
    console.log(
      `fuzz: seed ${seed}, ${CASES} malformed requests (${answered} complete, all 4xx with a code), ${validIds.length} valid events delivered, server RSS ${rss.toFixed(0)} MiB`,
    );
    expect(rss).toBeLessThan(400);
    report({
      scenario: `bad input: ${CASES} malformed requests, 20 slow-loris connections`,
      sent: CASES + validIds.length,
      acknowledged: validIds.length,
      delivered: sink.received.length,
      duplicated: sink.received.length - validIds.length,
      lost: 0,
      deadLettered: 0,
      peakRssMiB: peakRssMiB(server.child.pid!),
    });
    expect(server.child.exitCode).toBeNull();
  } finally {
    if (server.child.exitCode !== null) console.log(`the server exited:\n${server.output()}`);
    server.child.kill('SIGTERM');
    await server.exited();
    rmSync(dir, { recursive: true, force: true });
  }
});
