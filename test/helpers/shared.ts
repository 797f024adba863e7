/** Locates ../shared/ material; outside this workplace the tests that need it skip, under CI they fail. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SHARED = join(ROOT, '..', 'shared');
export const IN_CI = process.env['CI'] === 'true';

/** The path of a shared folder, or undefined (after a loud message) when it is missing outside CI. */
export function sharedPath(rel: string): string | undefined {
  const p = join(SHARED, rel);
  if (existsSync(p)) return p;
  const msg = `${p} is missing: the conformance material lives in ../shared/ beside the project`;
  if (IN_CI) throw new Error(msg);
  console.warn(`SKIPPED: ${msg}`);
  return undefined;
}
