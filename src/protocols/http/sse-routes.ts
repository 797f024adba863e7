/**
 * Server-Sent Events for read-only subscribers (a browser's `EventSource`): `GET /ns/broker?group=G`
 * (or `/channels/ns/name`) with `Accept: text/event-stream` joins a consumer group as a member and
 * streams its events, each as `id: <seq>`, `event: cloudevent`, `data: <the event in the JSON format>`.
 * A read-only member cannot acknowledge: an event counts as delivered once it is written to the
 * connection (at most the window is in flight on a connection that stops reading; those go again when it
 * drops). With a group, a reconnecting EventSource resumes where the group is.
 * @module
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../../dataplane/routes.js';
import { TrellisError } from '../../errors.js';
import type { Streaming } from '../streaming.js';
import { streamAddress } from '../streaming.js';
import { credentialOf, deliveredJson, subscribeParams } from '../ws/websocket.js';
import { sendError } from './errors.js';

const HEARTBEAT_MS = 15_000;

/** True for a request that asks for an event stream. */
export function wantsEventStream(req: FastifyRequest): boolean {
  return req.method === 'GET' && String(req.headers.accept ?? '').includes('text/event-stream');
}

/** Serves one SSE subscription; the request is a GET on an address asking for `text/event-stream`. */
export async function serveEventStream(
  req: FastifyRequest,
  reply: FastifyReply,
  core: Streaming,
  guard: (headers: FastifyRequest['headers']) => void,
  logger: Logger,
): Promise<FastifyReply> {
  const url = new URL(req.url, 'http://x');
  const addr = streamAddress(url.pathname);
  try {
    if (addr?.target === undefined)
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        'subscribe to a Broker (/namespace/name) or a Channel (/channels/namespace/name)',
      );
    guard(req.headers);
    const params = subscribeParams(url.searchParams);
    await core.authenticate(addr, credentialOf(req.headers, url.searchParams), req.raw.socket, true);
    const opened = await core.subscriptions.open({
      namespace: addr.namespace,
      target: addr.target,
      group: params.group,
      filter: params.filter,
      from: params.from,
      ordered: params.ordered,
    });
    const res = reply.raw;
    reply.hijack();
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
    });
    res.write(
      `retry: 2000\n: member of consumer group ${opened.group.metadata.namespace}/${opened.group.metadata.name}\n\n`,
    );
    const member = core.subscriptions.join(
      opened,
      params.window,
      (d) => {
        const ok = res.write(
          `id: ${d.seq}\nevent: cloudevent\ndata: ${JSON.stringify(deliveredJson(d))}\n\n`,
          (err) => {
            // Written to the connection: delivered, as far as a read-only member goes.
            if (err === undefined || err === null) member.settle(d.id, { kind: 'ack' });
          },
        );
        if (!ok) logger.debug({ group: opened.group.metadata.name }, 'an SSE member reads slowly');
      },
      `sse ${req.ip}`,
    );
    const beat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
    beat.unref();
    res.on('close', () => {
      clearInterval(beat);
      void core.subscriptions.left(opened, member).catch(() => undefined);
    });
    return reply;
  } catch (err) {
    return sendError(reply, err);
  }
}
