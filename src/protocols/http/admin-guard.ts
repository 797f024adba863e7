/**
 * Who may drive the admin API (`/apis/...`): requests from a browser page of another origin are refused
 * (Origin, Sec-Fetch-Site), a Host that is not one of the server's names is refused (DNS rebinding), and
 * when an admin token is set, every request needs `Authorization: Bearer <token>`.
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { TrellisError } from '../../errors.js';

export interface AdminGuardOptions {
  /** The address the server is bound to (`127.0.0.1`, `0.0.0.0`, a name). */
  host: string;
  /** The port it listens on. */
  port: number;
  /** The public URL, when one is configured: its host is one of the server's names. */
  publicUrl?: string | undefined;
  /** More names (`--allowed-hosts`); `*` allows any Host. */
  allowedHosts: readonly string[];
  /** When set, every admin request needs this bearer token. */
  token?: string | undefined;
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];

/** True for a loopback address or name: 127.0.0.0/8, ::1, localhost and *.localhost. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return (
    h === 'localhost' ||
    h.endsWith('.localhost') ||
    h === '::1' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) ||
    h === '::ffff:127.0.0.1'
  );
}

/** Splits a Host header value into name and port (`[::1]:8080`, `example:80`, `example`). */
function splitHost(v: string): { name: string; port: string | undefined } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(v) ?? /^([^:]+)(?::(\d+))?$/.exec(v);
  if (m === null) return { name: v.toLowerCase(), port: undefined };
  return { name: m[1]!.toLowerCase(), port: m[2] };
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Returns a check that throws the TrellisError an admin request should get, or returns when it may go on. */
export function adminGuard(
  opts: AdminGuardOptions,
): (headers: Record<string, string | string[] | undefined>) => void {
  const anyHost = opts.allowedHosts.includes('*');
  const names = new Set<string>(LOOPBACK_NAMES);
  const wildcard = opts.host === '0.0.0.0' || opts.host === '::' || opts.host === '';
  if (!wildcard) names.add(opts.host.toLowerCase().replace(/^\[|\]$/g, ''));
  else {
    // Bound to every interface: each of the machine's own addresses is one of its names.
    for (const list of Object.values(networkInterfaces()))
      for (const a of list ?? []) names.add(a.address.toLowerCase());
  }
  if (opts.publicUrl) names.add(new URL(opts.publicUrl).hostname.toLowerCase().replace(/^\[|\]$/g, ''));
  for (const h of opts.allowedHosts) if (h !== '*') names.add(h.toLowerCase());
  const known = (name: string) => anyHost || names.has(name) || isLoopback(name);
  // Behind a proxy, pages of the public URL's origin are the server's own, whatever port it listens on.
  const publicOrigin = opts.publicUrl ? new URL(opts.publicUrl).origin : undefined;
  const want = opts.token === undefined ? undefined : digest(opts.token);

  return (headers) => {
    const host = typeof headers['host'] === 'string' ? headers['host'] : '';
    const h = splitHost(host);
    if (!known(h.name)) {
      throw new TrellisError(
        'TRELLIS_ERR_HOST_FORBIDDEN',
        `the admin API does not answer to Host '${host.slice(0, 100)}'; add the name with --allowed-hosts (TRELLIS_ALLOWED_HOSTS) if it is this server's`,
      );
    }
    const origin = headers['origin'];
    if (typeof origin === 'string') {
      let ok = false;
      try {
        const u = new URL(origin);
        const port = u.port || (u.protocol === 'https:' ? '443' : '80');
        ok =
          u.origin === publicOrigin ||
          ((u.protocol === 'http:' || u.protocol === 'https:') &&
            known(u.hostname.toLowerCase().replace(/^\[|\]$/g, '')) &&
            port === String(opts.port));
      } catch {
        ok = false;
      }
      if (!ok) {
        throw new TrellisError(
          'TRELLIS_ERR_ORIGIN_FORBIDDEN',
          `the admin API refuses requests from web pages of another origin ('${origin.slice(0, 100)}')`,
        );
      }
    } else if (headers['sec-fetch-site'] === 'cross-site') {
      throw new TrellisError(
        'TRELLIS_ERR_ORIGIN_FORBIDDEN',
        'the admin API refuses requests from web pages of another site',
      );
    }
    if (want !== undefined) {
      const auth = headers['authorization'];
      const m = typeof auth === 'string' ? /^Bearer +(\S+) *$/i.exec(auth) : null;
      if (m === null) {
        throw new TrellisError(
          'TRELLIS_ERR_UNAUTHORIZED',
          'the admin API needs Authorization: Bearer <token>; the CLI sends TRELLIS_ADMIN_TOKEN',
        );
      }
      if (!timingSafeEqual(digest(m[1]!), want)) {
        throw new TrellisError('TRELLIS_ERR_UNAUTHORIZED', 'the admin token is not the right one');
      }
    }
  };
}

/**
 * A check of the admin token alone (for connections that carry it where a header cannot go): throws the
 * 401 unless `authorization` is `Bearer <token>`.
 */
export function bearerCheck(token: string): (authorization: string | undefined) => void {
  const want = digest(token);
  return (authorization) => {
    const m = typeof authorization === 'string' ? /^Bearer +(\S+) *$/i.exec(authorization) : null;
    if (m === null || !timingSafeEqual(digest(m[1]!), want))
      throw new TrellisError(
        'TRELLIS_ERR_UNAUTHORIZED',
        'subscribing needs the admin token (Authorization: Bearer <token>, or access_token=<token> where headers cannot be set)',
      );
  };
}
