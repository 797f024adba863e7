/** The NATS server the cluster tests use (NATS_URL, else this machine's): skipped loudly outside CI when down, a failure under CI. */
import { Socket } from 'node:net';
import { IN_CI } from './shared.js';

export const NATS_URL = process.env['NATS_URL'] ?? 'nats://127.0.0.1:4222';

function reachable(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = new Socket();
    s.setTimeout(1000);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
    s.connect(Number(u.port || 4222), u.hostname);
  });
}

/** True when NATS answers; otherwise says how to start it (and throws under CI). */
export async function natsUp(): Promise<boolean> {
  if (await reachable(NATS_URL)) return true;
  const msg = `NATS is not reachable at ${NATS_URL}: start it with 'nats-server -js' (the machine notes give the command)`;
  if (IN_CI) throw new Error(msg);
  console.warn(`SKIPPED: ${msg}`);
  return false;
}
