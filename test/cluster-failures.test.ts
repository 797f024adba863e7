/**
 * Cluster mode under failure: three processes sharing the work, one killed under load, and the NATS
 * server restarted under load. Nothing a process answered 202 for may be lost.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destroyNatsStore } from '../src/store/nats/nats-store.js';
import { NATS_URL, natsServerAvailable, natsUp, type PrivateNats, startPrivateNats } from './helpers/nats.js';
import { run, type Served, serve } from './helpers/process.js';
import { ceHeaders } from './helpers/server.js';
import { type Received, type Responder, type Sink, startSink } from './helpers/sink.js';

const up = await natsUp();
const haveBinary = natsServerAvailable();

const triggerYaml = (broker: string, sink: string) =>
  `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: ${broker}}\n---\n` +
  `apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: ${broker}-all}\nspec:\n  broker: ${broker}\n  subscriber: {uri: '${sink}'}\n`;

async function triggerReady(url: string, name: string): Promise<void> {
  await expect
    .poll(
      async () => {
        const r = await fetch(`${url}/apis/eventing.knative.dev/v1/namespaces/default/triggers/${name}`);
        if (r.status !== 200) return 'missing';
        const o = (await r.json()) as { status?: { conditions?: { type: string; status: string }[] } };
        return o.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? 'unknown';
      },
      { timeout: 20_000 },
    )
    .toBe('True');
}

/**
 * Sends events with `concurrency` requests at a time to the targets in turn until stopped, recording
 * every answer: status by id (0 when the connection failed).
 */
function producer(targets: () => string[], path: string, concurrency: number) {
  const answers = new Map<string, number>();
  let n = 0;
  let stopped = false;
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped) {
      const id = `e${n++}`;
      const t = targets();
      const url = t[n % t.length]!;
      let status = 0;
      try {
        const r = await fetch(`${url}${path}`, { method: 'POST', headers: ceHeaders(id), body: '{}' });
        status = r.status;
        await r.arrayBuffer();
      } catch {
        status = 0;
      }
      answers.set(id, status);
      // A refused request is retried later by a real producer: here it just moves on, letting the
      // server's other work run first.
      if (status !== 202) await new Promise((r) => setImmediate(r));
    }
  });
  return {
    answers,
    accepted: () => [...answers].filter(([, s]) => s === 202).map(([id]) => id),
    count: (status: number) => [...answers.values()].filter((s) => s === status).length,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** Which of `pids` holds the local TCP port `port` (Linux: /proc/net/tcp, then each process's fds). */
function ownerOfPort(port: number, pids: number[]): number | undefined {
  const inodes = new Set<string>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      if (Number.parseInt(cols[1]!.split(':')[1]!, 16) === port) inodes.add(`socket:[${cols[9]}]`);
    }
  }
  for (const pid of pids) {
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          if (inodes.has(readlinkSync(`/proc/${pid}/fd/${fd}`))) return pid;
        } catch {
          // the descriptor closed meanwhile
        }
      }
    } catch {
      // the process is gone
    }
  }
  return undefined;
}

describe.runIf(up)('three processes on one NATS', () => {
  const prefix = `k${randomBytes(5).toString('hex')}`;
  let dir: string;
  const procs: Served[] = [];
  let sink: Sink;
  /** Which process made each delivery, by the pid owning the connection it came on. */
  const deliveredBy = new Map<number, number>();
  /** The pid that made the n-th delivery the sink received. */
  const pidAt = new Map<number, number>();
  const args = () => [
    '--store',
    'nats',
    '--nats-url',
    NATS_URL,
    '--nats-prefix',
    prefix,
    '--nats-ack-wait',
    'PT2S',
    '--data-dir',
    join(dir, 'unused'),
  ];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trellis-cluster3-'));
    for (let i = 0; i < 3; i++) procs.push(await serve(args()));
    const pids = procs.map((p) => p.child.pid!);
    sink = await startSink((_r, res) => res.writeHead(202).end());
    const respond = sink.respond;
    // Every answer goes through this: it notes which process the delivery came from first.
    let inner = respond;
    Object.defineProperty(sink, 'respond', {
      get: () => (r: Received, res: ServerResponse, n: number) => {
        const port = res.socket?.remotePort;
        const pid = port === undefined ? undefined : ownerOfPort(port, pids);
        if (pid !== undefined) {
          deliveredBy.set(pid, (deliveredBy.get(pid) ?? 0) + 1);
          pidAt.set(n, pid);
        }
        inner(r, res, n);
      },
      set: (f: Responder) => {
        inner = f;
      },
    });
  });
  afterAll(async () => {
    for (const s of procs) {
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM');
      await s.exited();
    }
    await sink?.close();
    await destroyNatsStore(NATS_URL, prefix);
    rmSync(dir, { recursive: true, force: true });
  });

  it('config from any process is served by all; every event is delivered, and the work is spread', async () => {
    const [a, b, c] = procs as [Served, Served, Served];
    const r = await run(['apply', '-f', '-'], {
      input: triggerYaml('spread', sink.url),
      env: { TRELLIS_SERVER: c.url },
    });
    expect(r.code, r.stderr).toBe(0);
    for (const p of [a, b, c]) await triggerReady(p.url, 'spread-all');
    const before = sink.received.length;
    const ids: string[] = [];
    await Promise.all(
      Array.from({ length: 6 }, async (_, w) => {
        for (let i = w; i < 300; i += 6) {
          const target = procs[i % 3]!;
          const res = await fetch(`${target.url}/default/spread`, {
            method: 'POST',
            headers: ceHeaders(`s${i}`),
            body: '{}',
          });
          expect(res.status).toBe(202);
          ids.push(`s${i}`);
        }
      }),
    );
    await expect
      .poll(() => new Set(sink.received.slice(before).map((x) => String(x.event.attrs['id']))).size, {
        timeout: 30_000,
      })
      .toBe(300);
    const dupes = sink.received.length - before - 300;
    const shares = procs.map((p) => deliveredBy.get(p.child.pid!) ?? 0);
    console.log(
      `cluster of 3: 300 events, ${dupes} duplicates; deliveries per process: ${shares.join(', ')}`,
    );
    expect(dupes).toBe(0);
    // Every process took part in delivering.
    expect(shares.filter((n) => n > 0).length).toBe(3);
  });

  // Kills and restarts: their own waits allow up to a minute on a busy machine.
  it('one process killed under load: the others carry on and nothing acknowledged is lost', {
    timeout: 120_000,
  }, async () => {
    const [a, b, c] = procs as [Served, Served, Served];
    // A subscriber slow enough that the killed process holds deliveries in flight when it dies.
    sink.respond = (_r, res) => setTimeout(() => res.writeHead(202).end(), 5);
    const r = await run(['apply', '-f', '-'], {
      input: triggerYaml('kill', sink.url),
      env: { TRELLIS_SERVER: a.url },
    });
    expect(r.code, r.stderr).toBe(0);
    for (const p of [a, b, c]) await triggerReady(p.url, 'kill-all');
    const before = sink.received.length;
    let alive = [a.url, b.url, c.url];
    const load = producer(() => alive, '/default/kill', 6);
    await expect.poll(() => load.accepted().length, { timeout: 30_000 }).toBeGreaterThan(150);
    c.child.kill('SIGKILL');
    await c.exited();
    const atKill = load.accepted().length;
    // Requests to the dead process fail; a load balancer takes it out of rotation.
    await expect.poll(() => load.count(0), { timeout: 10_000 }).toBeGreaterThan(0);
    alive = [a.url, b.url];
    await expect.poll(() => load.accepted().length, { timeout: 30_000 }).toBeGreaterThan(atKill + 150);
    await load.stop();
    const accepted = load.accepted();
    const got = () => new Set(sink.received.slice(before).map((x) => String(x.event.attrs['id'])));
    await expect.poll(() => accepted.filter((id) => !got().has(id)).length, { timeout: 60_000 }).toBe(0);
    const statuses = new Set(load.answers.values());
    console.log(
      `kill under load: ${accepted.length} accepted, all delivered; ${sink.received.length - before - got().size} duplicates; answers ${[...statuses].join(',')}`,
    );
    // The survivors never refused anything: only the dead process failed requests.
    expect([...statuses].every((s) => s === 202 || s === 0)).toBe(true);
  });

  // Kills and restarts: their own waits allow up to a minute on a busy machine.
  it('ordered delivery holds across processes, and across the death of the process that delivers', {
    timeout: 120_000,
  }, async () => {
    const live = procs.filter((p) => p.child.exitCode === null && p.child.signalCode === null);
    expect(live.length).toBeGreaterThanOrEqual(2);
    sink.respond = (_r, res) => setTimeout(() => res.writeHead(202).end(), 20);
    const yaml =
      `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: ord}\n---\n` +
      `apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: ord-all\n  annotations: {kafka.eventing.knative.dev/delivery.order: ordered}\n` +
      `spec:\n  broker: ord\n  subscriber: {uri: '${sink.url}'}\n`;
    const r = await run(['apply', '-f', '-'], { input: yaml, env: { TRELLIS_SERVER: live[0]!.url } });
    expect(r.code, r.stderr).toBe(0);
    for (const p of live) await triggerReady(p.url, 'ord-all');
    const before = sink.received.length;
    const send = async (i: number, targets: Served[]) => {
      const h = { ...ceHeaders(`o${i}`), 'ce-partitionkey': `k${i % 4}` };
      const res = await fetch(`${targets[i % targets.length]!.url}/default/ord`, {
        method: 'POST',
        headers: h,
        body: '{}',
      });
      expect(res.status).toBe(202);
    };
    // One at a time, to alternating processes: the order they were accepted in is the order sent.
    for (let i = 0; i < 100; i++) await send(i, live);
    // Late redeliveries of the earlier tests' events may still reach the shared sink: count only these.
    const ours = () => sink.received.slice(before).filter((x) => /^o\d+$/.test(String(x.event.attrs['id'])));
    await expect.poll(() => ours().length, { timeout: 20_000 }).toBeGreaterThan(20);
    // The process delivering now is the one to kill.
    const lastOurs = sink.received.lastIndexOf(ours().at(-1)!);
    const lastPid = pidAt.get(lastOurs + 1);
    const owner = live.find((p) => p.child.pid === lastPid);
    expect(owner).toBeDefined();
    owner!.child.kill('SIGKILL');
    await owner!.exited();
    const survivors = live.filter((p) => p !== owner);
    for (let i = 100; i < 160; i++) await send(i, survivors);
    const mine = () => ours().map((x) => String(x.event.attrs['id']));
    await expect.poll(() => new Set(mine()).size, { timeout: 60_000 }).toBe(160);
    const byKey = new Map<string, number[]>();
    for (const x of ours()) {
      const n = Number(String(x.event.attrs['id']).slice(1));
      const k = String(x.event.attrs['partitionkey']);
      const seq = byKey.get(k) ?? [];
      // At least once: a redelivery repeats the event just delivered, never an older one.
      if (seq.at(-1) !== n) seq.push(n);
      byKey.set(k, seq);
    }
    for (const [k, seq] of byKey) expect(seq, `key ${k}`).toEqual([...seq].sort((a, b) => a - b));
    console.log(
      `ordered across processes: 160 events of 4 keys in order, ${ours().length - 160} repeated after the kill`,
    );
  });
});

describe.runIf(up)('ordered retries on a shared store', () => {
  const prefix = `r${randomBytes(5).toString('hex')}`;
  let dir: string;
  const procs: Served[] = [];
  const args = () => [
    '--store',
    'nats',
    '--nats-url',
    NATS_URL,
    '--nats-prefix',
    prefix,
    '--nats-ack-wait',
    'PT2S',
    '--data-dir',
    join(dir, 'unused'),
  ];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trellis-ordretry-'));
    for (let i = 0; i < 2; i++) procs.push(await serve(args()));
  });
  afterAll(async () => {
    for (const s of procs) {
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM');
      await s.exited();
    }
    await destroyNatsStore(NATS_URL, prefix);
    rmSync(dir, { recursive: true, force: true });
  });

  const orderedYaml = (name: string, uri: string, delivery: string) =>
    `apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: ${name}}\n---\n` +
    `apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: ${name}-t\n  annotations: {kafka.eventing.knative.dev/delivery.order: ordered}\n` +
    `spec:\n  broker: ${name}\n  subscriber: {uri: '${uri}'}\n  delivery: ${delivery}\n`;

  it('a retry holding a key does not wait behind the 1,500 newer events it holds up', async () => {
    const [a, b] = procs as [Served, Served];
    await using sink = await startSink((_r, res, n) => res.writeHead(n === 1 ? 500 : 202).end());
    const r = await run(['apply', '-f', '-'], {
      input: orderedYaml('backlog', sink.url, '{retry: 3, backoffDelay: PT0.5S}'),
      env: { TRELLIS_SERVER: a.url },
    });
    expect(r.code, r.stderr).toBe(0);
    for (const p of [a, b]) await triggerReady(p.url, 'backlog-t');
    // More than the pull buffer, the worker's buffer and JetStream's default ack window together.
    for (let i = 0; i < 1500; i += 50)
      await Promise.all(
        Array.from({ length: 50 }, async (_, j) => {
          const res = await fetch(`${procs[(i + j) % 2]!.url}/default/backlog`, {
            method: 'POST',
            headers: ceHeaders(`b${i + j}`),
            body: '{}',
          });
          expect(res.status).toBe(202);
        }),
      );
    await expect
      .poll(() => new Set(sink.received.map((x) => String(x.event.attrs['id']))).size, { timeout: 30_000 })
      .toBe(1500);
    // The first event failed once and was delivered again before anything after it.
    expect(sink.received[0]!.event.attrs['id']).toBe(sink.received[1]!.event.attrs['id']);
    expect(sink.received).toHaveLength(1501);
  });

  // Kills and restarts: their own waits allow up to a minute on a busy machine.
  it('the attempt count of an ordered retry survives the death of the process that held it', {
    timeout: 120_000,
  }, async () => {
    await using failing = await startSink((_r, res) => res.writeHead(500).end());
    await using dls = await startSink();
    const live = procs.filter((p) => p.child.exitCode === null && p.child.signalCode === null);
    const r = await run(['apply', '-f', '-'], {
      input: orderedYaml(
        'count',
        failing.url,
        `{retry: 2, backoffPolicy: linear, backoffDelay: PT2S, deadLetterSink: {uri: '${dls.url}'}}`,
      ),
      env: { TRELLIS_SERVER: live[0]!.url },
    });
    expect(r.code, r.stderr).toBe(0);
    for (const p of live) await triggerReady(p.url, 'count-t');
    const pids = live.map((p) => p.child.pid!);
    let holder: number | undefined;
    const log: string[] = [];
    failing.respond = (_r, res) => {
      const port = res.socket?.remotePort;
      const pid = port === undefined ? undefined : ownerOfPort(port, pids);
      holder ??= pid;
      log.push(`${Date.now() % 100000} ${pid}`);
      res.writeHead(500).end();
    };
    const res = await fetch(`${live[0]!.url}/default/count`, {
      method: 'POST',
      headers: ceHeaders('c1'),
      body: '{}',
    });
    expect(res.status).toBe(202);
    await failing.waitFor(1, 10_000);
    // Once the failed attempt is recorded (a crash before that makes the attempt again: at least once),
    // the process that made it dies while it waits for the second.
    const nc = await connect({ servers: NATS_URL });
    try {
      const kv = await new Kvm(nc).open(`${prefix}_attempts`);
      await expect
        .poll(async () => {
          let n = 0;
          for await (const _k of await kv.keys()) n++;
          return n;
        })
        .toBe(1);
    } finally {
      await nc.close();
    }
    const owner = live.find((p) => p.child.pid === holder)!;
    expect(owner).toBeDefined();
    owner.child.kill('SIGKILL');
    await owner.exited();
    await dls.waitFor(1, 30_000);
    // Two retries after the first attempt, whoever made them: three in all, not three more.
    expect(failing.received, log.join('\n')).toHaveLength(3);
    expect(dls.received).toHaveLength(1);
  });
});

describe.runIf(haveBinary)('a NATS restart under load', () => {
  let nats: PrivateNats;
  let dir: string;
  let t: Served;
  beforeAll(async () => {
    nats = await startPrivateNats();
    dir = mkdtempSync(join(tmpdir(), 'trellis-natsrestart-'));
    t = await serve([
      '--store',
      'nats',
      '--nats-url',
      nats.url,
      '--nats-ack-wait',
      'PT2S',
      '--data-dir',
      join(dir, 'unused'),
    ]);
  });
  afterAll(async () => {
    t?.child.kill('SIGTERM');
    await t?.exited();
    await nats?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // Kills and restarts: their own waits allow up to a minute on a busy machine.
  it('ingress answers 503 while NATS is down and 202 once it is back; nothing acknowledged is lost', {
    timeout: 120_000,
  }, async () => {
    await using sink = await startSink();
    const r = await run(['apply', '-f', '-'], {
      input: triggerYaml('restart', sink.url),
      env: { TRELLIS_SERVER: t.url },
    });
    expect(r.code, r.stderr).toBe(0);
    await triggerReady(t.url, 'restart-all');
    const load = producer(() => [t.url], '/default/restart', 4);
    await expect.poll(() => load.accepted().length, { timeout: 30_000 }).toBeGreaterThan(100);
    await nats.stop();
    await expect.poll(() => load.count(503), { timeout: 30_000 }).toBeGreaterThan(0);
    await expect.poll(async () => (await fetch(`${t.url}/readyz`)).status, { timeout: 30_000 }).toBe(503);
    const duringOutage = load.accepted().length;
    await nats.start();
    await expect.poll(() => load.accepted().length, { timeout: 60_000 }).toBeGreaterThan(duringOutage + 100);
    await load.stop();
    expect(load.count(0)).toBe(0);
    const accepted = load.accepted();
    const got = () => new Set(sink.received.map((x) => String(x.event.attrs['id'])));
    await expect.poll(() => accepted.filter((id) => !got().has(id)).length, { timeout: 60_000 }).toBe(0);
    console.log(
      `NATS restart under load: ${accepted.length} accepted and delivered, ${load.count(503)} answered 503, ${sink.received.length - got().size} duplicates`,
    );
    await expect.poll(async () => (await fetch(`${t.url}/readyz`)).status).toBe(200);
  });
});
