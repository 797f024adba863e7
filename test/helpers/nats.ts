/** The NATS server the cluster tests use (NATS_URL, else this machine's): skipped loudly outside CI when down, a failure under CI. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serverUp } from './reachable.js';
import { IN_CI } from './shared.js';

export const NATS_URL = process.env['NATS_URL'] ?? 'nats://127.0.0.1:4222';

/** True when NATS answers; otherwise says how to start it (and throws under CI). */
export function natsUp(): Promise<boolean> {
  return serverUp(NATS_URL, 4222, "NATS ('nats-server -js')");
}

/** A private nats-server with JetStream, for tests that stop and restart it. */
export interface PrivateNats {
  url: string;
  port: number;
  /** Stops it (SIGTERM: JetStream flushes) and waits for the exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port and storage. */
  start(): Promise<void>;
  output(): string;
  /** Stops it and removes its storage. */
  close(): Promise<void>;
}

const NATS_BIN = [process.env['NATS_SERVER_BIN'], '/usr/sbin/nats-server', '/usr/local/bin/nats-server'].find(
  (p) => p !== undefined && existsSync(p),
);

/** True when a nats-server binary is here to start; otherwise says so (and throws under CI). */
export function natsServerAvailable(): boolean {
  if (NATS_BIN !== undefined) return true;
  const msg = 'nats-server is not installed (apt install nats-server, or set NATS_SERVER_BIN)';
  if (IN_CI) throw new Error(msg);
  console.warn(`SKIPPED: ${msg}`);
  return false;
}

/** Starts nats-server on a port it picks (`-p -1`), storing JetStream data in a temporary directory. */
export async function startPrivateNats(extraArgs: string[] = []): Promise<PrivateNats> {
  const dir = mkdtempSync(join(tmpdir(), 'trellis-nats-'));
  let port = -1;
  let child: ChildProcess | undefined;
  let out = '';
  const start = () =>
    new Promise<void>((resolve, reject) => {
      const c = spawn(NATS_BIN!, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir, ...extraArgs], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child = c;
      const onData = (b: Buffer) => {
        out += b.toString();
        const m = /Listening for client connections on 127\.0\.0\.1:(\d+)/.exec(out);
        if (m && /Server is ready/.test(out)) {
          port = Number(m[1]);
          out = out.replace(/Server is ready/g, 'Server was ready');
          resolve();
        }
      };
      c.stdout!.on('data', onData);
      c.stderr!.on('data', onData);
      c.once('exit', (code) => reject(new Error(`nats-server exited with ${code}:\n${out}`)));
    });
  await start();
  return {
    get url() {
      return `nats://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    output: () => out,
    start,
    stop: async () => {
      const c = child;
      if (c === undefined || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await exited;
    },
    close: async function (this: PrivateNats) {
      await this.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
