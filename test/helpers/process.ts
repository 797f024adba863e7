/** Runs the real `trellis` binary (dist/cli/main.js, built by `npm test` before vitest) as a child process. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './shared.js';

export const BIN = join(ROOT, 'dist', 'cli', 'main.js');

function checkBuilt(): void {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run 'npm run build' first (npm test does it)`);
}

export interface Served {
  url: string;
  child: ChildProcess;
  output(): string;
  /** Waits for the process to exit; resolves with its exit code or signal. */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `trellis serve` and resolves once it prints its URL. */
export function serve(args: string[], env: Record<string, string> = {}): Promise<Served> {
  checkBuilt();
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--log-level', 'warn', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
  return new Promise((resolve, reject) => {
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /trellis serving on (http:\/\/\S+)/.exec(out);
      if (m) {
        resolve({ url: m[1]!, child, output: () => out, exited: () => exit });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exit.then(({ code }) =>
      reject(new Error(`trellis serve exited with ${code} before it was ready:\n${out}`)),
    );
    setTimeout(() => reject(new Error(`trellis serve did not start in 15 s:\n${out}`)), 15_000).unref();
  });
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs one `trellis` command to completion. */
export function run(
  args: string[],
  opts: { input?: string; env?: Record<string, string> } = {},
): Promise<RunResult> {
  checkBuilt();
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  child.stdin.end(opts.input ?? '');
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}
