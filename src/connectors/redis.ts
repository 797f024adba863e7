import { hostname } from 'node:os';
import type { CloudEvent } from '../cloudevents/event.js';
import { canonicalString, checkAttribute, checkRequired } from '../cloudevents/event.js';
import { decodeHttp } from '../cloudevents/http.js';
import { eventToJson } from '../cloudevents/json-format.js';
import { TrellisError } from '../errors.js';
import type { ConnectionState } from '../resources/connector-spec.js';
import {
  groupOf,
  type RedisAuth,
  type RedisStreamSinkSpec,
  type RedisStreamSourceSpec,
} from '../resources/redis-connector.js';
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

type Client = import('ioredis').Redis;
type IORedis = { Redis: typeof import('ioredis').Redis };

/** The type of an event made from a stream entry that was not a CloudEvent. */
export const REDIS_ENTRY_TYPE = 'dev.trellis.redis.entry';
const BATCH = 64;
const RETRY_CONNECT_MS = 5000;

/** An entry's fields as name/value pairs (values as bytes). */
export type Fields = [string, Buffer][];

/** An entry's event: decoded (binary or structured), or wrapped; `invalid` says why a CloudEvent-looking entry was not one. */
export function entryToEvent(stream: string, id: string, fields: Fields): CloudEvent {
  const get = (k: string) => fields.find(([n]) => n === k)?.[1];
  const structured = get('cloudevent');
  const binary = fields.some(([n]) => n === 'ce_specversion');
  if (structured !== undefined || binary) {
    try {
      if (structured !== undefined)
        return decodeHttp(['content-type', 'application/cloudevents+json'], structured).events[0]!;
      const attrs: CloudEvent['attrs'] = {};
      for (const [n, v] of fields) {
        if (!n.startsWith('ce_')) continue;
        const name = n.slice(3).toLowerCase();
        if (name === 'datacontenttype') continue;
        attrs[name] = checkAttribute(name, v.toString('utf8'));
      }
      const ct = get('content-type');
      if (ct !== undefined) attrs['datacontenttype'] = checkAttribute('datacontenttype', ct.toString('utf8'));
      checkRequired(attrs);
      const data = get('data');
      return data !== undefined && data.length > 0 ? { attrs, data } : { attrs };
    } catch (err) {
      return wrap(stream, id, fields, (err as Error).message);
    }
  }
  return wrap(stream, id, fields);
}

function wrap(stream: string, id: string, fields: Fields, invalid?: string): CloudEvent {
  const obj: Record<string, string> = {};
  for (const [n, v] of fields) obj[n] = v.toString('utf8');
  const names = {
    id,
    source: `redis://${encodeURI(stream)}`,
    type: REDIS_ENTRY_TYPE,
    subject: stream,
    time: new Date(Number(id.split('-')[0]) || Date.now()).toISOString(),
  };
  return wrapMessage(names, Buffer.from(JSON.stringify(obj)), 'application/json', invalid);
}

/** An event as entry fields: binary (default) or structured. */
export function eventToFields(e: CloudEvent, mode: 'binary' | 'structured' = 'binary'): (string | Buffer)[] {
  if (mode === 'structured') return ['cloudevent', JSON.stringify(eventToJson(e))];
  const out: (string | Buffer)[] = [];
  for (const [k, v] of Object.entries(e.attrs)) {
    if (k === 'datacontenttype') out.push('content-type', String(v));
    else out.push(`ce_${k}`, canonicalString(v));
  }
  if (e.data !== undefined) out.push('data', e.data);
  return out;
}

function options(auth: RedisAuth | undefined, address: string): Record<string, unknown> {
  const out: Record<string, unknown> = {
    lazyConnect: true,
    maxRetriesPerRequest: null,
    retryStrategy: (times: number) => Math.min(times * 200, 2000),
  };
  if (auth?.username !== undefined) out['username'] = auth.username;
  const password = passwordOf(auth);
  if (password !== undefined) out['password'] = password;
  if (address.startsWith('rediss:'))
    out['tls'] = auth?.tlsCaFile !== undefined ? { ca: secretFile(auth.tlsCaFile, 'CA certificate') } : {};
  return out;
}

export class RedisConnectors extends ConnectorRunners {
  protected readonly sinkKind = 'RedisStreamSink';
  private lib: Promise<IORedis> | undefined;
  private readonly consumer = `${hostname()}-${process.pid}`;

  constructor(deps: ConnectorDeps) {
    super(deps);
  }

  protected start(o: ResourceObject, signature: string): Runner {
    const label = { [o.kind.toLowerCase()]: `${o.metadata.namespace}/${o.metadata.name}` };
    let stopped = false;
    let retry: NodeJS.Timeout | undefined;
    const clients: Client[] = [];
    const runner: Runner = {
      signature,
      o,
      stop: async () => {
        stopped = true;
        clearTimeout(retry);
        for (const c of clients.splice(0)) c.disconnect();
      },
    };
    const report = (state: ConnectionState) => this.report(runner, state);
    const connect = async () => {
      if (stopped || this.closed) return;
      const spec = runner.o.spec as unknown as RedisStreamSourceSpec | RedisStreamSinkSpec;
      try {
        this.lib ??= import('ioredis').then((m) => ({ Redis: m.Redis }));
        const { Redis } = await this.lib;
        const open = async () => {
          const c = new Redis(spec.address, {
            ...options(spec.auth, spec.address),
            connectionName: `trellis-${o.metadata.namespace}-${o.metadata.name}`,
          });
          // Errors are reported through the state; ioredis reconnects by itself.
          c.on('error', () => undefined);
          clients.push(c);
          await c.connect();
          return c;
        };
        const main = await open();
        main.on(
          'close',
          () => void report({ state: 'Disconnected', message: 'Redis is unreachable; reconnecting' }),
        );
        main.on('ready', () => void report({ state: 'Connected' }));
        if (o.kind === 'RedisStreamSource') {
          const reader = await open();
          await this.runSource(runner, main, reader, () => stopped);
        } else this.runSink(runner, main);
        void report({ state: 'Connected' });
        this.deps.logger.info({ ...label }, 'connected to Redis');
      } catch (err) {
        const message = `cannot use Redis at ${spec.address}: ${(err as Error).message}; trying again in ${RETRY_CONNECT_MS / 1000} s`;
        this.deps.logger.warn({ ...label }, message);
        void report({ state: 'Failed', message });
        for (const c of clients.splice(0)) c.disconnect();
        if (!stopped) retry = setTimeout(() => void connect(), RETRY_CONNECT_MS);
      }
    };
    void connect();
    return runner;
  }

  private async runSource(
    runner: Runner,
    main: Client,
    reader: Client,
    stopped: () => boolean,
  ): Promise<void> {
    const o = runner.o;
    const spec = o.spec as unknown as RedisStreamSourceSpec;
    const group = groupOf(o);
    const stream = connectorKey(o);
    const label = { redisstreamsource: `${o.metadata.namespace}/${o.metadata.name}` };
    try {
      await main.xgroup('CREATE', spec.stream, group, spec.startId, 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
    /** Stores an entry's event and acknowledges it; false when it must be tried again. */
    const handle = async (id: string, fields: Fields): Promise<boolean> => {
      const e = entryToEvent(spec.stream, id, fields);
      const ext = (runner.o.spec as unknown as RedisStreamSourceSpec).ceOverrides?.extensions;
      if (ext !== undefined) e.attrs = { ...e.attrs, ...ext };
      try {
        await this.deps.accept(stream, [e]);
      } catch (err) {
        if (refusedForGood(err)) {
          this.deps.logger.error({ ...label, err, entry: id }, 'an entry was refused and is dropped');
          await main.xack(spec.stream, group, id);
          return true;
        }
        return false;
      }
      await main.xack(spec.stream, group, id);
      return true;
    };
    const toFields = (raw: Buffer[]): Fields => {
      const out: Fields = [];
      for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!.toString('utf8'), raw[i + 1]!]);
      return out;
    };
    let lastClaim = 0;
    void (async () => {
      // Own pending entries first (this consumer before a restart, or a failed store), then new ones.
      let pending = true;
      while (!stopped() && !this.closed) {
        try {
          if (Date.now() - lastClaim > spec.claimIdleMs / 2) {
            lastClaim = Date.now();
            const r = (await main.callBuffer(
              'XAUTOCLAIM',
              spec.stream,
              group,
              this.consumer,
              spec.claimIdleMs,
              '0-0',
              'COUNT',
              BATCH,
            )) as unknown as [Buffer, [Buffer, Buffer[]][]];
            if (r[1].length > 0) pending = true;
          }
          const res = (await reader.callBuffer(
            'XREADGROUP',
            'GROUP',
            group,
            this.consumer,
            'COUNT',
            BATCH,
            'BLOCK',
            pending ? 1 : 2000,
            'STREAMS',
            spec.stream,
            pending ? '0' : '>',
          )) as [Buffer, [Buffer, Buffer[]][]][] | null;
          const entries = res?.[0]?.[1] ?? [];
          if (pending && entries.length === 0) pending = false;
          // A batch is stored in parallel; each entry is acknowledged once its event is stored.
          const done = await Promise.all(entries.map(([id, raw]) => handle(id.toString(), toFields(raw))));
          const failed = done.includes(false);
          if (failed) {
            pending = true;
            await new Promise((r) => setTimeout(r, 1000));
          }
        } catch (err) {
          if (stopped() || this.closed) return;
          this.deps.logger.warn({ ...label, err }, 'reading the stream failed; trying again in 1 s');
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
    })();
  }

  private runSink(runner: Runner, main: Client): void {
    runner.publish = async (events) => {
      const spec = runner.o.spec as unknown as RedisStreamSinkSpec;
      for (const e of events) {
        const args: (string | Buffer | number)[] = [spec.stream];
        if (spec.maxLen !== undefined) args.push('MAXLEN', '~', spec.maxLen);
        args.push('*', ...eventToFields(e, spec.mode));
        try {
          await main.xadd(...(args as [string, ...(string | Buffer | number)[]]));
        } catch (err) {
          throw new TrellisError(
            'TRELLIS_ERR_CONNECTOR_FAILED',
            `Redis did not take the event on stream ${spec.stream}: ${(err as Error).message}`,
          );
        }
      }
    };
  }
}
