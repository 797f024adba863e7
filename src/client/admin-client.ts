/**
 * A small client for the Trellis admin API and Broker ingress, used by the CLI.
 * @module
 */

import type { CloudEvent } from '../cloudevents/event.js';
import { encodeBinary } from '../cloudevents/http.js';

/** An error answered by the server: its code, message and HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface KindPath {
  group: string;
  version: string;
  plural: string;
}

/** A resource as the admin API returns it. */
export interface ApiResource {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; [k: string]: unknown };
  spec: Record<string, unknown>;
  status?: Record<string, unknown>;
}

/** One document's outcome in a bulk apply (`POST /apis/apply`). */
export type BulkOutcome =
  | { apiVersion: string; kind: string; namespace: string; name: string; action: string; warnings: string[] }
  | { error: { code: string; message: string } };

/** `/apis/{group}/{version}`, or `/api/{version}` for Kubernetes' core group. */
function groupPath(k: KindPath): string {
  return k.group === '' ? `/api/${k.version}` : `/apis/${k.group}/${k.version}`;
}

/** What a tail yields: a stored event (in the JSON format), or how many were dropped for a slow reader. */
export type TailMessage =
  | { type: 'event'; seq: number; event: Record<string, unknown> }
  | { type: 'dropped'; dropped: number };

/** A kept dead letter, as the admin API shows it. */
export interface DeadLetter {
  seq: number;
  subscription: { id: string; kind?: string; namespace?: string; name?: string };
  failedAt?: string;
  attempts?: number;
  errorDest?: string;
  errorCode?: number;
  errorData?: string;
  event: Record<string, unknown>;
}

/** A delivery waiting for its next attempt. */
export interface PendingRetry {
  subscription: { kind: string; namespace: string; name: string };
  seq: number;
  eventId: string;
  type: string;
  failedAttempts: number;
  nextAttemptAt: string;
  lastAnswer?: { code?: number; answer: string; at: string };
}

/**
 * What `GET /apis/stats` answers: each subscription's live counts with its lag, and each stream's. (The
 * client's own copy of the server's shape: the client depends on nothing of the server.)
 */
export interface Stats {
  subscriptions: {
    kind: string;
    namespace: string;
    name: string;
    delivered: number;
    failedAttempts: number;
    retried: number;
    deadLettered: number;
    dropped: number;
    replies: number;
    lag: number;
    oldestPendingSeconds: number;
    recentFailures: { time: string; code?: number; answer: string }[];
  }[];
  streams: { kind: string; stream: string; accepted: number; rejected: number }[];
}

export class AdminClient {
  /** `token`: the admin token, sent as a bearer token (the CLI passes TRELLIS_ADMIN_TOKEN). */
  constructor(
    readonly server: string,
    private readonly token: string | undefined = process.env['TRELLIS_ADMIN_TOKEN']?.trim() || undefined,
  ) {}

  private async call(
    method: string,
    path: string,
    body?: string,
    contentType?: string,
  ): Promise<{ status: number; json: unknown; headers: Headers }> {
    let res: Response;
    try {
      res = await fetch(new URL(path, this.server), {
        method,
        ...(body !== undefined ? { body } : {}),
        headers: {
          ...(contentType ? { 'content-type': contentType } : {}),
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
        },
      });
    } catch (err) {
      throw unreachable(this.server, err, "; is 'trellis serve' running? Set --server or TRELLIS_SERVER");
    }
    if (res.status >= 400) throw await answered(res);
    const text = await res.text();
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, json, headers: res.headers };
  }

  private base(k: KindPath, ns: string): string {
    return `${groupPath(k)}/namespaces/${encodeURIComponent(ns)}/${k.plural}`;
  }

  async list(
    k: KindPath,
    ns: string | undefined,
    query: Record<string, string> = {},
  ): Promise<ApiResource[]> {
    const qs = new URLSearchParams(query).toString();
    const path = `${ns === undefined ? `${groupPath(k)}/${k.plural}` : this.base(k, ns)}${qs ? `?${qs}` : ''}`;
    return ((await this.call('GET', path)).json as { items: ApiResource[] }).items;
  }

  /** One page of a Broker's or Channel's stored events, oldest first, after a sequence number. */
  async history(
    k: KindPath,
    ns: string,
    name: string,
    after: number,
    limit = 1000,
  ): Promise<{ items: { seq: number; event: Record<string, unknown> }[]; next: number | null }> {
    const path = `${this.base(k, ns)}/${encodeURIComponent(name)}/history?after=${after}&limit=${limit}`;
    return (await this.call('GET', path)).json as {
      items: { seq: number; event: Record<string, unknown> }[];
      next: number | null;
    };
  }

  /** Stores events (structured JSON objects) as a Broker's or Channel's history, sending them nowhere. */
  async importHistory(k: KindPath, ns: string, name: string, events: unknown[]): Promise<number> {
    const path = `${this.base(k, ns)}/${encodeURIComponent(name)}/history`;
    const r = await this.call('POST', path, JSON.stringify(events), 'application/cloudevents-batch+json');
    return (r.json as { imported: number }).imported;
  }

  /**
   * Follows a Broker or Channel: yields each event it stores from now on (filtered on the server by a
   * CESQL expression), and notices of events dropped because this reader fell behind. Ends when the
   * server closes the stream or `signal` aborts.
   */
  async *tail(
    k: KindPath,
    ns: string,
    name: string,
    filter?: string,
    signal?: AbortSignal,
  ): AsyncGenerator<TailMessage> {
    const qs = filter !== undefined && filter !== '' ? `?${new URLSearchParams({ filter })}` : '';
    let res: Response;
    try {
      res = await fetch(new URL(`${this.base(k, ns)}/${encodeURIComponent(name)}/tail${qs}`, this.server), {
        headers: {
          accept: 'text/event-stream',
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
        },
        ...(signal !== undefined ? { signal } : {}),
      });
    } catch (err) {
      if (signal?.aborted) return;
      throw unreachable(this.server, err);
    }
    if (res.status >= 400) throw await answered(res);
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const fields = new Map<string, string>();
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const i = line.indexOf(':');
            if (i > 0) fields.set(line.slice(0, i), line.slice(i + 1).replace(/^ /, ''));
          }
          const data = fields.get('data');
          if (data === undefined) continue;
          if (fields.get('event') === 'cloudevent')
            yield {
              type: 'event',
              seq: Number(fields.get('id')),
              event: JSON.parse(data) as Record<string, unknown>,
            };
          else if (fields.get('event') === 'dropped')
            yield { type: 'dropped', dropped: (JSON.parse(data) as { dropped: number }).dropped };
        }
      }
    } catch (err) {
      if (signal?.aborted) return;
      throw err;
    }
  }

  /** A page of the dead letters a Broker, Channel or flow keeps, oldest first (`next`: the `after` of the next page). */
  async deadLetters(
    k: KindPath,
    ns: string,
    name: string,
    q: { filter?: string | undefined; after?: number; limit?: number } = {},
  ): Promise<{ items: DeadLetter[]; next: number | null }> {
    const qs = new URLSearchParams();
    if (q.filter) qs.set('filter', q.filter);
    if (q.after !== undefined) qs.set('after', String(q.after));
    if (q.limit !== undefined) qs.set('limit', String(q.limit));
    const path = `${this.base(k, ns)}/${encodeURIComponent(name)}/deadletters${qs.size ? `?${qs}` : ''}`;
    return (await this.call('GET', path)).json as { items: DeadLetter[]; next: number | null };
  }

  async deadLetter(k: KindPath, ns: string, name: string, seq: number): Promise<DeadLetter> {
    return (await this.call('GET', `${this.base(k, ns)}/${encodeURIComponent(name)}/deadletters/${seq}`))
      .json as DeadLetter;
  }

  /** Redrives (`to` a URL, else to their subscriptions) or purges the dead letters a selection names. */
  async deadLetterAction(
    action: 'redrive' | 'purge',
    k: KindPath,
    ns: string,
    name: string,
    sel: { seqs?: number[]; filter?: string; all?: boolean; to?: string },
  ): Promise<{
    redriven?: number;
    purged?: number;
    seqs: number[];
    failed?: { seq: number; reason: string }[];
  }> {
    const path = `${this.base(k, ns)}/${encodeURIComponent(name)}/deadletters/${action}`;
    return (await this.call('POST', path, JSON.stringify(sel), 'application/json')).json as {
      seqs: number[];
    };
  }

  /** Delivers a Broker's retained events again to a Trigger or consumer group; resolves with how many. */
  async replay(
    ns: string,
    broker: string,
    body: { from: string; to: { kind: string; name: string }; until?: string },
  ): Promise<{ events: number }> {
    const path = `/apis/eventing.knative.dev/v1/namespaces/${encodeURIComponent(ns)}/brokers/${encodeURIComponent(broker)}/replay`;
    return (await this.call('POST', path, JSON.stringify(body), 'application/json')).json as {
      events: number;
    };
  }

  /** A token Trellis mints for `audience`, as `subject` (`POST /apis/tokens`). */
  async mintToken(audience: string, subject: string, ttl?: string): Promise<string> {
    const r = await this.call(
      'POST',
      '/apis/tokens',
      JSON.stringify({ audience, subject, ...(ttl ? { ttl } : {}) }),
      'application/json',
    );
    return (r.json as { token: string }).token;
  }

  /** Deliveries waiting for their next attempt, with the last answer (`GET /apis/retries`). */
  async retries(): Promise<{ items: PendingRetry[] }> {
    return (await this.call('GET', '/apis/retries')).json as { items: PendingRetry[] };
  }

  /** Live counts per subscription and stream, from this server's start, with lag (`GET /apis/stats`). */
  async stats(): Promise<Stats> {
    return (await this.call('GET', '/apis/stats')).json as Stats;
  }

  async get(k: KindPath, ns: string, name: string): Promise<ApiResource> {
    return (await this.call('GET', `${this.base(k, ns)}/${encodeURIComponent(name)}`)).json as ApiResource;
  }

  /** Creates or updates; resolves with the stored object and what happened. */
  async apply(
    k: KindPath,
    ns: string,
    doc: unknown,
  ): Promise<{ object: ApiResource; action: string; warnings: string[] }> {
    const r = await this.call('POST', this.base(k, ns), JSON.stringify(doc), 'application/json');
    return {
      object: r.json as ApiResource,
      action: r.headers.get('trellis-apply-action') ?? 'configured',
      warnings: parseWarnings(r.headers.get('warning')),
    };
  }

  /**
   * Applies many documents with as few requests as possible (each request at most `maxBytes` of JSON);
   * resolves with one outcome per document, in order.
   */
  async applyMany(docs: unknown[], ns: string, maxBytes = 512 * 1024): Promise<BulkOutcome[]> {
    const out: BulkOutcome[] = [];
    let chunk: string[] = [];
    let size = 2;
    const flush = async () => {
      if (chunk.length === 0) return;
      const r = await this.call(
        'POST',
        `/apis/apply?namespace=${encodeURIComponent(ns)}`,
        `[${chunk.join(',')}]`,
        'application/json',
      );
      for (const item of (r.json as { items: BulkOutcome[] }).items) out.push(item);
      chunk = [];
      size = 2;
    };
    for (const d of docs) {
      const text = JSON.stringify(d) ?? 'null';
      if (chunk.length > 0 && (size + text.length + 1 > maxBytes || chunk.length >= 5000)) await flush();
      chunk.push(text);
      size += text.length + 1;
    }
    await flush();
    return out;
  }

  async delete(k: KindPath, ns: string, name: string): Promise<ApiResource> {
    return (await this.call('DELETE', `${this.base(k, ns)}/${encodeURIComponent(name)}`)).json as ApiResource;
  }

  /** One event the Broker still holds, as structured JSON. */
  async event(ns: string, broker: string, id: string, source?: string): Promise<unknown> {
    const q = source === undefined ? '' : `?source=${encodeURIComponent(source)}`;
    const base = `/apis/eventing.knative.dev/v1/namespaces/${encodeURIComponent(ns)}/brokers/${encodeURIComponent(broker)}`;
    return (await this.call('GET', `${base}/events/${encodeURIComponent(id)}${q}`)).json;
  }

  /** Sends one event to a Broker in binary mode. */
  async send(namespace: string, broker: string, event: CloudEvent): Promise<void> {
    const msg = encodeBinary(event);
    let res: Response;
    try {
      res = await fetch(
        new URL(`/${encodeURIComponent(namespace)}/${encodeURIComponent(broker)}`, this.server),
        {
          method: 'POST',
          headers: msg.headers,
          body: msg.body ?? '',
        },
      );
    } catch (err) {
      throw unreachable(this.server, err);
    }
    if (res.status >= 400) throw await answered(res);
  }
}

/** The error for a server that could not be reached (the cause: a refused connection, a DNS failure). */
function unreachable(server: string, err: unknown, hint = ''): ApiError {
  const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
  return new ApiError(
    0,
    'TRELLIS_ERR_UNREACHABLE',
    `cannot reach the Trellis server at ${server} (${cause})${hint}`,
    {},
  );
}

/** The error a 4xx/5xx answer carries (its JSON `code` and `message`, else its text). */
async function answered(res: Response): Promise<ApiError> {
  const text = await res.text();
  let b: Record<string, unknown> = {};
  try {
    b = JSON.parse(text) as Record<string, unknown>;
  } catch {
    b = { message: text };
  }
  return new ApiError(res.status, String(b['code'] ?? `HTTP_${res.status}`), String(b['message'] ?? text), b);
}

/** The texts of `Warning: 299 - "text"` headers (several are joined with commas by fetch). */
export function parseWarnings(header: string | null): string[] {
  if (header === null) return [];
  return [...header.matchAll(/299 - "([^"]*)"/g)].map((m) => m[1]!);
}
