/**
 * Sends one event to a subscriber over HTTP in binary mode and reads the answer, bounded in size and in
 * total time. Each subscription has its own connection pools (undici Agent), so a subscriber that hangs
 * never takes the connections of another subscription, even one on the same host and port.
 * @module
 */

import { createHash, createHmac, X509Certificate } from 'node:crypto';
import { rootCertificates, type TLSSocket } from 'node:tls';
import { Agent, buildConnector, type Dispatcher, util } from 'undici';
import type { CloudEvent } from '../cloudevents/event.js';
import { encodeBinary, encodeStructured } from '../cloudevents/http.js';
import type { DestinationRules } from './destinations.js';

const PREFER_REPLY = { prefer: 'reply' };

/** What came back from one attempt. */
export type SendResult =
  | { kind: 'response'; status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }
  | { kind: 'error'; error: string; timeout: boolean };

export interface SenderOptions {
  /** Connections per origin, for each subscription. */
  connections: number;
  /** Largest response body read, in bytes; a longer one is cut (and not taken as a reply). */
  maxResponseBytes: number;
  /** Which addresses may be connected to (after DNS); the server's own URLs always may. */
  rules?: DestinationRules | undefined;
  /** The server's own certificate, when it serves https: deliveries to itself trust it (and only it). */
  selfCa?: string | undefined;
}

/** How a delivery is signed: the key, and the message id (the same for every attempt of a delivery). */
export interface WebhookSigning {
  key: Buffer;
  id: string;
}

/**
 * The Standard Webhooks signature: `webhook-id`, `webhook-timestamp` (seconds) and `webhook-signature`
 * (`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`), over the event in structured mode.
 */
function signed(
  event: CloudEvent,
  omit: string | undefined,
  extra: Record<string, string>,
  sign: WebhookSigning,
) {
  let e = event;
  if (omit !== undefined && e.attrs[omit] !== undefined) {
    const { [omit]: _, ...attrs } = e.attrs;
    e = { ...e, attrs };
  }
  const msg = encodeStructured(e);
  const body = String(msg.body);
  const ts = String(Math.floor(Date.now() / 1000));
  const mac = createHmac('sha256', sign.key).update(`${sign.id}.${ts}.${body}`).digest('base64');
  return {
    headers: {
      ...msg.headers,
      ...extra,
      'webhook-id': sign.id,
      'webhook-timestamp': ts,
      'webhook-signature': `v1,${mac}`,
    },
    body,
  };
}

/**
 * A signing key as Standard Webhooks writes secrets: `whsec_` and base64 bytes; any other value is used
 * as it is (its UTF-8 bytes).
 */
export function signingKey(secret: string): Buffer {
  const s = secret.trim();
  return s.startsWith('whsec_') ? Buffer.from(s.slice(6), 'base64') : Buffer.from(s, 'utf8');
}

/**
 * Connections to this server itself over https: its own certificate, pinned by fingerprint (the name in
 * it may not be the address used, and its CA may be one only its clients know).
 */
function pinned(fingerprint: string): buildConnector.connector {
  const base = buildConnector({ rejectUnauthorized: false });
  return (options, callback) =>
    base(options, (err, socket) => {
      if (err !== null) return callback(err, null);
      const got = (socket as TLSSocket).getPeerCertificate?.()?.fingerprint256;
      if (options.protocol === 'https:' && got !== fingerprint) {
        socket.destroy();
        return callback(new Error("the server's own address answered with another certificate"), null);
      }
      return callback(null, socket);
    });
}

/** An HTTP sender with connection pools per subscription. */
export class Sender {
  private readonly agents = new Map<string, Agent>();
  private selfCa: string | undefined;
  constructor(private readonly opts: SenderOptions) {
    this.selfCa = opts.selfCa;
  }

  /** Short names for CA bundles (hashed once each, not on every send). */
  private readonly caKeys = new Map<string, string>();

  private caKey(ca: string): string {
    let k = this.caKeys.get(ca);
    if (k === undefined) {
      k = createHash('sha256').update(ca).digest('hex').slice(0, 16);
      if (this.caKeys.size > 1000) this.caKeys.clear();
      this.caKeys.set(ca, k);
    }
    return k;
  }

  /** The server's certificate was renewed: deliveries to itself trust the new one. */
  trustSelf(cert: string): void {
    this.selfCa = cert;
    for (const [key, a] of this.agents) {
      if (!key.includes('\u0000self\u0000')) continue;
      this.agents.delete(key);
      void a.close().catch(() => undefined);
    }
  }

  /**
   * A subscription's pool; connections to the server itself go through their own, unchecked one, and
   * each set of extra CA certificates through its own.
   */
  private agent(pool: string, self: boolean, ca?: string): Agent {
    const key = `${pool}\u0000${self ? 'self' : ''}\u0000${ca === undefined ? '' : this.caKey(ca)}`;
    let a = this.agents.get(key);
    if (a === undefined) {
      const rules = self ? undefined : this.opts.rules;
      const connect = {
        ...(rules !== undefined ? { lookup: rules.lookup } : {}),
        ...(ca !== undefined ? { ca: [...rootCertificates, ca] } : {}),
      };
      a = new Agent({
        connections: this.opts.connections,
        keepAliveTimeout: 30_000,
        pipelining: 1,
        ...(self && this.selfCa !== undefined
          ? { connect: pinned(new X509Certificate(this.selfCa).fingerprint256) }
          : Object.keys(connect).length > 0
            ? { connect }
            : {}),
      });
      this.agents.set(key, a);
    }
    return a;
  }

  /** Closes the connections of a subscription that is gone; requests in flight are aborted. */
  release(pool: string): void {
    for (const [key, a] of this.agents) {
      if (!key.startsWith(`${pool}\u0000`)) continue;
      this.agents.delete(key);
      void a.destroy().catch(() => undefined);
    }
  }

  /**
   * POSTs `event` in binary mode with `Prefer: reply`, leaving out the attribute `omit`, on the
   * connections of `pool` (a subscription id). `timeoutMs` bounds the whole exchange, from sending to the
   * last byte of the answer.
   */
  send(
    pool: string,
    url: string,
    event: CloudEvent,
    timeoutMs: number,
    omit?: string,
    /** More headers (a trace context). */
    extra?: Record<string, string>,
    /**
     * `sign`: sign the delivery (Standard Webhooks), sent in structured mode so that the signature covers
     * the attributes; `ca`: PEM certificates trusted for https besides the system's (a destination's CACerts).
     */
    opts: { sign?: WebhookSigning | undefined; ca?: string | undefined } = {},
  ): Promise<SendResult> {
    const sign = opts.sign;
    const more = extra === undefined ? PREFER_REPLY : { ...PREFER_REPLY, ...extra };
    const msg = sign === undefined ? encodeBinary(event, omit, more) : signed(event, omit, more, sign);
    const headers = msg.headers;
    const target = this.target(url);
    if (target.denied !== undefined)
      return Promise.resolve({
        kind: 'error',
        error: `destination denied: ${target.denied}`,
        timeout: false,
      });
    const max = this.opts.maxResponseBytes;
    const agent = this.agent(pool, target.self, opts.ca);
    return new Promise((resolve) => {
      let status = 0;
      let abort: ((err: Error) => void) | undefined;
      let timedOut = false;
      let settled = false;
      // The whole exchange is bounded: a subscriber that streams its answer forever is cut at the timeout.
      const timer = setTimeout(() => {
        timedOut = true;
        abort?.(new Error('timeout'));
      }, timeoutMs);
      const finish = (r: SendResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(r);
      };
      let rawHeaders: Buffer[] = [];
      const chunks: Buffer[] = [];
      let size = 0;
      let cut = false;
      // undici's dispatch API: no stream or promise per request (measured on the delivery hot path).
      // headersTimeout bounds the wait for the answer, bodyTimeout the gaps while reading it.
      const options: Dispatcher.DispatchOptions = {
        origin: target.origin,
        path: target.path,
        method: 'POST',
        headers,
        body: msg.body ?? '',
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      };
      const handler = {
        onConnect(a: (err: Error) => void) {
          abort = a;
          if (timedOut) a(new Error('timeout'));
        },
        onHeaders(statusCode: number, raw: Buffer[]) {
          status = statusCode;
          rawHeaders = raw;
          return true;
        },
        onData(chunk: Buffer) {
          if (cut) return true;
          if (size + chunk.length > max) {
            cut = true;
            chunks.push(chunk.subarray(0, max - size));
            size = max;
            return true;
          }
          size += chunk.length;
          chunks.push(chunk);
          return true;
        },
        onComplete() {
          const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          finish({ kind: 'response', status, headers: cut ? {} : util.parseHeaders(rawHeaders), body });
        },
        onError(err: Error) {
          const e = err as Error & { code?: string };
          const timeout =
            timedOut || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT';
          finish({
            kind: 'error',
            error: timeout
              ? `timed out after ${timeoutMs} ms`
              : e.code === 'EDESTINATIONDENIED'
                ? e.message
                : (e.code ?? e.message),
            timeout,
          });
        },
      } as unknown as Dispatcher.DispatchHandler;
      try {
        agent.dispatch(options, handler);
      } catch (err) {
        finish({ kind: 'error', error: (err as Error).message, timeout: false });
      }
    });
  }

  private readonly targets = new Map<
    string,
    { origin: string; path: string; self: boolean; denied?: string | undefined }
  >();
  private target(url: string): { origin: string; path: string; self: boolean; denied?: string | undefined } {
    let t = this.targets.get(url);
    if (t === undefined) {
      const u = new URL(url);
      const rules = this.opts.rules;
      const self = rules?.isSelf(url) ?? false;
      t = {
        origin: u.origin,
        path: `${u.pathname}${u.search}`,
        self,
        // An address written in the URL is checked here: connecting to it skips DNS, so the lookup does not.
        denied: self || rules === undefined ? undefined : rules.denied(u.hostname),
      };
      if (this.targets.size > 10_000) this.targets.clear();
      this.targets.set(url, t);
    }
    return t;
  }

  /** Closes the pools; requests still in flight are aborted (their deliveries stay pending). */
  async close(): Promise<void> {
    const all = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(all.map((a) => a.destroy().catch(() => undefined)));
  }
}

/** Statuses that are retried (Knative's data-plane contract): 404, 408, 409, 429 and every 5xx. */
export function isRetryable(status: number): boolean {
  return status === 404 || status === 408 || status === 409 || status === 429 || status >= 500;
}

/** Parses Retry-After (seconds or an HTTP date) into milliseconds from now. */
export function parseRetryAfter(v: string | string[] | undefined, now = Date.now()): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  if (s === undefined) return undefined;
  if (/^\d+$/.test(s.trim())) return Number(s.trim()) * 1000;
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}
