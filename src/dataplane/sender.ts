/**
 * Sends one event to a subscriber over HTTP in binary mode (undici, keep-alive pools per origin) and
 * reads the answer, bounded in size and time.
 * @module
 */
import { Agent, request } from 'undici';
import type { CloudEvent } from '../cloudevents/event.js';
import { encodeBinary } from '../cloudevents/http.js';

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

  /** POSTs `event` in binary mode with `Prefer: reply` and extra headers. */
  async send(
    url: string,
    event: CloudEvent,
    timeoutMs: number,
    extraHeaders?: Record<string, string>,
  ): Promise<SendResult> {
    const msg = encodeBinary(event);
    const headers = { ...msg.headers, prefer: 'reply', ...extraHeaders };
    const signal = AbortSignal.timeout(timeoutMs);
    try {
      const res = await request(url, {
        method: 'POST',
        headers,
        body: msg.body ?? '',
        dispatcher: this.agent,
        signal,
      });
      const chunks: Buffer[] = [];
      let size = 0;
      let cut = false;
      for await (const chunk of res.body) {
        const b = chunk as Buffer;
        if (size + b.length > this.opts.maxResponseBytes) {
          cut = true;
          chunks.push(b.subarray(0, this.opts.maxResponseBytes - size));
          res.body.destroy();
          break;
        }
        size += b.length;
        chunks.push(b);
      }
      const body = Buffer.concat(chunks);
      return { kind: 'response', status: res.statusCode, headers: cut ? {} : res.headers, body };
    } catch (err) {
      const timeout = signal.aborted;
      const e = err as Error & { code?: string; cause?: { code?: string } };
      const detail = timeout ? `timed out after ${timeoutMs} ms` : (e.code ?? e.cause?.code ?? e.message);
      return { kind: 'error', error: detail, timeout };
    }
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
