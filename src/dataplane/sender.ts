/**
 * Sends one event to a subscriber over HTTP in binary mode (undici, keep-alive pools per origin) and
 * reads the answer, bounded in size and time.
 * @module
 */
import { Agent, type Dispatcher, util } from 'undici';
import type { CloudEvent } from '../cloudevents/event.js';
import { encodeBinary } from '../cloudevents/http.js';

const PREFER_REPLY = { prefer: 'reply' };

/** What came back from one attempt. */
export type SendResult =
  | { kind: 'response'; status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }
  | { kind: 'error'; error: string; timeout: boolean };

export interface SenderOptions {
  /** Connections per origin. */
  connections: number;
  /** Largest response body read, in bytes; a longer one is cut (and not taken as a reply). */
  maxResponseBytes: number;
}

/** An HTTP sender with its own connection pools. */
export class Sender {
  private readonly agent: Agent;
  constructor(private readonly opts: SenderOptions) {
    this.agent = new Agent({ connections: opts.connections, keepAliveTimeout: 30_000, pipelining: 1 });
  }

  /** POSTs `event` in binary mode with `Prefer: reply`, leaving out the attribute `omit`. */
  send(url: string, event: CloudEvent, timeoutMs: number, omit?: string): Promise<SendResult> {
    const msg = encodeBinary(event, omit, PREFER_REPLY);
    const headers = msg.headers;
    const target = this.target(url);
    const max = this.opts.maxResponseBytes;
    return new Promise((resolve) => {
      let status = 0;
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
        onConnect() {},
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
          resolve({ kind: 'response', status, headers: cut ? {} : util.parseHeaders(rawHeaders), body });
        },
        onError(err: Error) {
          const e = err as Error & { code?: string };
          const timeout = e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT';
          resolve({
            kind: 'error',
            error: timeout ? `timed out after ${timeoutMs} ms` : (e.code ?? e.message),
            timeout,
          });
        },
      } as unknown as Dispatcher.DispatchHandler;
      try {
        this.agent.dispatch(options, handler);
      } catch (err) {
        resolve({ kind: 'error', error: (err as Error).message, timeout: false });
      }
    });
  }

  private readonly targets = new Map<string, { origin: string; path: string }>();
  private target(url: string): { origin: string; path: string } {
    let t = this.targets.get(url);
    if (t === undefined) {
      const u = new URL(url);
      t = { origin: u.origin, path: `${u.pathname}${u.search}` };
      if (this.targets.size > 10_000) this.targets.clear();
      this.targets.set(url, t);
    }
    return t;
  }

  /** Closes the pools; requests still in flight are aborted (their deliveries stay pending). */
  async close(): Promise<void> {
    await this.agent.destroy();
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
