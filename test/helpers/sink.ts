/** A real HTTP subscriber on loopback that records what it receives and answers as a test tells it. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CloudEvent } from '../../src/cloudevents/event.js';
import { decodeHttp } from '../../src/cloudevents/http.js';

export interface Received {
  /** The request path, e.g. `/hang`. */
  path: string;
  event: CloudEvent;
  headers: IncomingMessage['headers'];
  at: number;
}

export type Responder = (r: Received, res: ServerResponse, n: number) => void;

export interface Sink {
  url: string;
  received: Received[];
  respond: Responder;
  /** Resolves when `n` events arrived, or rejects after `ms`. */
  waitFor(n: number, ms?: number): Promise<Received[]>;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function startSink(
  respond: Responder = (_r, res) => res.writeHead(202).end(),
  port = 0,
): Promise<Sink> {
  const received: Received[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const sink = { respond } as Sink;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let r: Received;
      try {
        r = {
          path: req.url ?? '/',
          event: decodeHttp(req.rawHeaders, Buffer.concat(chunks)).events[0]!,
          headers: req.headers,
          at: Date.now(),
        };
      } catch (err) {
        res.writeHead(400).end((err as Error).message);
        return;
      }
      received.push(r);
      sink.respond(r, res, received.length);
      for (const w of waiters.splice(0)) {
        if (received.length >= w.n) w.resolve();
        else waiters.push(w);
      }
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const bound = (server.address() as AddressInfo).port;
  const close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return Object.assign(sink, {
    url: `http://127.0.0.1:${bound}/`,
    received,
    waitFor(n: number, ms = 10_000) {
      if (received.length >= n) return Promise.resolve(received);
      return new Promise<Received[]>((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`sink got ${received.length} of ${n} events in ${ms} ms`)),
          ms,
        );
        waiters.push({
          n,
          resolve: () => {
            clearTimeout(t);
            resolve(received);
          },
        });
      });
    },
    close,
    [Symbol.asyncDispose]: close,
  });
}
