/**
 * The AMQP 0-9-1 connector (amqplib, loaded only when an AmqpSource or AmqpSink exists), for RabbitMQ.
 * The CloudEvents AMQP binding's application properties become message headers: binary mode carries
 * each attribute as a `cloudEvents_<name>` header (`cloudEvents:<name>` is read too) and
 * `datacontenttype` as the `content_type` property; structured mode carries the JSON event format with
 * `content_type: application/cloudevents+json`. Other messages are wrapped.
 *
 * A source consumes a queue with manual acknowledgements: a message is acknowledged once its event is
 * stored in the source's stream; one not yet stored is given back (nack, requeued) a second later, and
 * unacknowledged ones go back to the queue when the connection drops. A sink publishes on a confirm
 * channel and answers once the broker confirmed.
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { CloudEvent } from '../cloudevents/event.js';
import { checkAttribute, checkRequired } from '../cloudevents/event.js';
import { decodeHttp, encodeStructured } from '../cloudevents/http.js';
import { TrellisError } from '../errors.js';
import type { AmqpAuth, AmqpSinkSpec, AmqpSourceSpec } from '../resources/amqp-connector.js';
import type { ConnectionState } from '../resources/connector-spec.js';
import type { ResourceObject } from '../store/types.js';
import {
  type ConnectorDeps,
  ConnectorRunners,
  connectorKey,
  passwordOf,
  type Runner,
  refusedForGood,
  secretFile,
  wrapMessage,
} from './runners.js';

/** The type of an event made from an AMQP message that was not a CloudEvent. */
export const AMQP_MESSAGE_TYPE = 'dev.trellis.amqp.message';
const RETRY_CONNECT_MS = 2000;

/** What a delivered message carries that the binding reads. */
export interface AmqpMessage {
  content: Buffer;
  contentType?: string | undefined;
  headers?: Record<string, unknown> | undefined;
  messageId?: string | undefined;
  routingKey: string;
}

function attrValue(v: unknown): unknown {
  if (v instanceof Date) return v.toISOString();
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  return v;
}

function wrap(queue: string, m: AmqpMessage, invalid?: string): CloudEvent {
  const id = m.messageId !== undefined && m.messageId !== '' ? m.messageId : randomUUID();
  const names = { id, source: `amqp://${encodeURI(queue)}`, type: AMQP_MESSAGE_TYPE, subject: m.routingKey };
  return wrapMessage(names, m.content, m.contentType, invalid);
}

/** A message's event: structured, binary (`cloudEvents_` or `cloudEvents:` headers), or wrapped. */
export function amqpToEvent(queue: string, m: AmqpMessage): CloudEvent {
  const headers = m.headers ?? {};
  const ceHeaders = Object.entries(headers).filter(([k]) => /^cloudEvents[_:]/i.test(k));
  try {
    if (m.contentType?.toLowerCase().startsWith('application/cloudevents'))
      return decodeHttp(['content-type', m.contentType], m.content).events[0]!;
    if (ceHeaders.length > 0) {
      const attrs: CloudEvent['attrs'] = {};
      for (const [k, v] of ceHeaders) {
        const name = k.slice('cloudEvents_'.length).toLowerCase();
        if (name === 'datacontenttype') continue;
        attrs[name] = checkAttribute(name, attrValue(v));
      }
      if (m.contentType !== undefined)
        attrs['datacontenttype'] = checkAttribute('datacontenttype', m.contentType);
      checkRequired(attrs);
      return m.content.length > 0 ? { attrs, data: m.content } : { attrs };
    }
  } catch (err) {
    return wrap(queue, m, (err as Error).message);
  }
  return wrap(queue, m);
}

/** An event as a message: binary (headers) or structured. */
export function eventToAmqp(
  e: CloudEvent,
  mode: 'binary' | 'structured',
): { content: Buffer; contentType?: string; headers?: Record<string, unknown> } {
  if (mode === 'structured') {
    const m = encodeStructured(e);
    return { content: Buffer.from(String(m.body)), contentType: m.headers['content-type']! };
  }
  const headers: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e.attrs)) if (k !== 'datacontenttype') headers[`cloudEvents_${k}`] = v;
  const ct = e.attrs['datacontenttype'];
  return {
    content: e.data ?? Buffer.alloc(0),
    headers,
    ...(ct !== undefined ? { contentType: String(ct) } : {}),
  };
}

function connectArgs(
  address: string,
  auth: AmqpAuth | undefined,
  name: string,
): [string, Record<string, unknown>] {
  const u = new URL(address);
  if (auth?.username !== undefined) u.username = encodeURIComponent(auth.username);
  const password = passwordOf(auth);
  if (password !== undefined) u.password = encodeURIComponent(password);
  const opts: Record<string, unknown> = { clientProperties: { connection_name: name } };
  if (auth?.tlsCaFile !== undefined) opts['ca'] = [Buffer.from(secretFile(auth.tlsCaFile, 'CA certificate'))];
  return [u.toString(), opts];
}

export class AmqpConnectors extends ConnectorRunners {
  protected readonly sinkKind = 'AmqpSink';
  private lib: Promise<typeof import('amqplib')> | undefined;

  constructor(deps: ConnectorDeps) {
    super(deps);
  }

  protected start(o: ResourceObject, signature: string): Runner {
    const label = { [o.kind.toLowerCase()]: `${o.metadata.namespace}/${o.metadata.name}` };
    let stopped = false;
    let conn: import('amqplib').ChannelModel | undefined;
    let retry: NodeJS.Timeout | undefined;
    const runner: Runner = {
      signature,
      o,
      stop: async () => {
        stopped = true;
        clearTimeout(retry);
        runner.publish = undefined;
        const c = conn;
        conn = undefined;
        await c?.close().catch(() => undefined);
      },
    };
    const report = (state: ConnectionState) => this.report(runner, state);
    const again = (message: string) => {
      if (stopped || this.closed) return;
      void report({ state: 'Disconnected', message });
      retry = setTimeout(() => void connect(), RETRY_CONNECT_MS);
    };
    const connect = async () => {
      if (stopped || this.closed) return;
      const spec = runner.o.spec as unknown as AmqpSourceSpec | AmqpSinkSpec;
      try {
        this.lib ??= import('amqplib');
        const amqp = await this.lib;
        const [url, opts] = connectArgs(
          spec.address,
          spec.auth,
          `trellis-${o.metadata.namespace}-${o.metadata.name}`,
        );
        const c = await amqp.connect(url, opts);
        conn = c;
        c.on('error', () => undefined);
        c.on('close', () => {
          runner.publish = undefined;
          if (conn === c) conn = undefined;
          again('the connection to the broker closed; reconnecting');
        });
        if (o.kind === 'AmqpSource') await this.runSource(runner, c);
        else await this.runSink(runner, c);
        void report({ state: 'Connected' });
        this.deps.logger.info({ ...label }, 'connected to the AMQP broker');
      } catch (err) {
        const message = `cannot use the AMQP broker at ${spec.address}: ${(err as Error).message}; trying again in ${RETRY_CONNECT_MS / 1000} s`;
        this.deps.logger.warn({ ...label }, message);
        void report({ state: 'Failed', message });
        const c = conn;
        conn = undefined;
        await c?.close().catch(() => undefined);
        if (!stopped && !this.closed) retry = setTimeout(() => void connect(), RETRY_CONNECT_MS);
      }
    };
    void connect();
    return runner;
  }

  private async runSource(runner: Runner, conn: import('amqplib').ChannelModel): Promise<void> {
    const o = runner.o;
    const spec = o.spec as unknown as AmqpSourceSpec;
    const stream = connectorKey(o);
    const label = { amqpsource: `${o.metadata.namespace}/${o.metadata.name}` };
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    await ch.prefetch(spec.prefetch);
    if (spec.bind !== undefined) {
      await ch.assertQueue(spec.queue, { durable: true });
      for (const k of spec.bind.routingKeys) await ch.bindQueue(spec.queue, spec.bind.exchange, k);
    } else await ch.checkQueue(spec.queue);
    await ch.consume(
      spec.queue,
      (msg) => {
        if (msg === null) return;
        const e = amqpToEvent(spec.queue, {
          content: msg.content,
          contentType: msg.properties.contentType as string | undefined,
          headers: msg.properties.headers as Record<string, unknown> | undefined,
          messageId: msg.properties.messageId as string | undefined,
          routingKey: msg.fields.routingKey,
        });
        const ext = (runner.o.spec as unknown as AmqpSourceSpec).ceOverrides?.extensions;
        if (ext !== undefined) e.attrs = { ...e.attrs, ...ext };
        this.deps.accept(stream, [e]).then(
          () => ch.ack(msg),
          (err: unknown) => {
            if (refusedForGood(err)) {
              this.deps.logger.error({ ...label, err }, 'a message was refused and is dropped');
              ch.ack(msg);
              return;
            }
            // Not stored yet: back to the queue, a second later (not in a hot loop).
            setTimeout(() => {
              try {
                ch.nack(msg, false, true);
              } catch {
                // the channel is gone: the broker requeues it anyway
              }
            }, 1000);
          },
        );
      },
      { noAck: false },
    );
  }

  private async runSink(runner: Runner, conn: import('amqplib').ChannelModel): Promise<void> {
    const ch = await conn.createConfirmChannel();
    ch.on('error', () => undefined);
    runner.publish = async (events) => {
      const spec = runner.o.spec as unknown as AmqpSinkSpec;
      for (const e of events) {
        const m = eventToAmqp(e, spec.mode);
        await new Promise<void>((resolve, reject) => {
          try {
            ch.publish(
              spec.exchange,
              spec.routingKey,
              m.content,
              {
                persistent: spec.persistent,
                messageId: String(e.attrs['id']),
                ...(m.contentType !== undefined ? { contentType: m.contentType } : {}),
                ...(m.headers !== undefined ? { headers: m.headers } : {}),
              },
              (err) => (err ? reject(err) : resolve()),
            );
          } catch (err) {
            reject(err);
          }
        }).catch((err: unknown) => {
          throw new TrellisError(
            'TRELLIS_ERR_CONNECTOR_FAILED',
            `the AMQP broker did not confirm the event on ${spec.exchange || '(default exchange)'} / ${spec.routingKey}: ${(err as Error).message}`,
          );
        });
      }
    };
  }
}
