/** Whether a server the tests use answers: skipped loudly outside CI when it does not, a failure under CI. */
import { Socket } from 'node:net';
import { IN_CI } from './shared.js';

/** True when something accepts TCP connections at the URL's host and port. */
export function reachable(url: string, defaultPort: number): Promise<boolean> {
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
    s.connect(Number(u.port || defaultPort), u.hostname);
  });
}

/** True when the server answers; otherwise says how to start it (and throws under CI). */
export async function serverUp(url: string, defaultPort: number, what: string): Promise<boolean> {
  if (await reachable(url, defaultPort)) return true;
  const msg = `${what} is not reachable at ${url}: start it (the machine notes give the command)`;
  if (IN_CI) throw new Error(msg);
  console.warn(`SKIPPED: ${msg}`);
  return false;
}
