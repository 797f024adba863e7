/**
 * The MQTT connector (mqtt.js, loaded only when an MqttSource or MqttSink exists), per the CloudEvents
 * MQTT binding: on MQTT 5, binary mode carries the attributes as user properties (names unchanged) and
 * `datacontenttype` as the Content Type property; structured mode (the only one on 3.1.1) carries the
 * JSON event format. A message that is not a CloudEvent is wrapped.
 *
 * A source subscribes with QoS 1 on a persistent session (its client id), stores each message's event
 * in the source's stream and only then sends the PUBACK: the broker keeps what Trellis has not taken,
 * while it is away too. A sink publishes with QoS 1 and answers once the broker's PUBACK came.
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { CloudEvent } from '../cloudevents/event.js';
import { canonicalString, checkAttribute, checkRequired } from '../cloudevents/event.js';
import { decodeHttp, encodeStructured } from '../cloudevents/http.js';
import { TrellisError } from '../errors.js';
import type { ConnectionState } from '../resources/connector-spec.js';
import type { MqttAuth, MqttSinkSpec, MqttSourceSpec } from '../resources/mqtt-connector.js';
import type { ResourceObject, Store } from '../store/types.js';
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

/** The type of an event made from an MQTT message that was not a CloudEvent. */
export const MQTT_MESSAGE_TYPE = 'dev.trellis.mqtt.message';

/** What a PUBLISH carries that the binding reads. */
export interface MqttMessage {
  topic: string;
  payload: Buffer;
  contentType?: string | undefined;
  userProperties?: Record<string, string | string[]> | undefined;
}

function wrap(m: MqttMessage, invalid?: string): CloudEvent {
  const names = {
    id: randomUUID(),
    source: `mqtt://${encodeURI(m.topic)}`,
    type: MQTT_MESSAGE_TYPE,
    subject: m.topic,
  };
  return wrapMessage(names, m.payload, m.contentType, invalid);
}

/** A message's event: structured (Content Type, or on 3.1.1 a JSON payload that is an event), binary (MQTT 5 user properties), or wrapped. */
export function mqttToEvent(m: MqttMessage): CloudEvent {
  const ct = m.contentType;
  const props = m.userProperties ?? {};
  try {
    if (ct?.toLowerCase().startsWith('application/cloudevents'))
      return decodeHttp(['content-type', ct], m.payload).events[0]!;
    if (props['specversion'] !== undefined) {
      const attrs: CloudEvent['attrs'] = {};
      for (const [k, v] of Object.entries(props)) {
        const name = k.toLowerCase();
        if (name === 'datacontenttype') continue;
        attrs[name] = checkAttribute(name, Array.isArray(v) ? v[0] : v);
      }
      if (ct !== undefined) attrs['datacontenttype'] = checkAttribute('datacontenttype', ct);
      checkRequired(attrs);
      return m.payload.length > 0 ? { attrs, data: m.payload } : { attrs };
    }
    // MQTT 3.1.1 (or a v5 sender that set no Content Type): a JSON payload that is an event.
    if (
      ct === undefined &&
      m.payload.length > 0 &&
      m.payload[0] === 0x7b &&
      m.payload.includes('"specversion"')
    ) {
      return decodeHttp(['content-type', 'application/cloudevents+json'], m.payload).events[0]!;
    }
  } catch (err) {
    return wrap(m, (err as Error).message);
  }
  return wrap(m);
}

/** An event as a PUBLISH: binary (user properties, MQTT 5) or structured. */
export function eventToMqtt(
  e: CloudEvent,
  mode: 'binary' | 'structured',
): { payload: Buffer; contentType?: string; userProperties?: Record<string, string> } {
  if (mode === 'structured') {
    const m = encodeStructured(e);
    return { payload: Buffer.from(String(m.body)), contentType: m.headers['content-type']! };
  }
  const userProperties: Record<string, string> = {};
  for (const [k, v] of Object.entries(e.attrs))
    if (k !== 'datacontenttype') userProperties[k] = canonicalString(v);
  const ct = e.attrs['datacontenttype'];
  return {
    payload: e.data ?? Buffer.alloc(0),
    userProperties,
    ...(ct !== undefined ? { contentType: String(ct) } : {}),
  };
}

function options(auth: MqttAuth | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (auth?.username !== undefined) out['username'] = auth.username;
  const password = passwordOf(auth);
  if (password !== undefined) out['password'] = password;
  if (auth?.tlsCaFile !== undefined) out['ca'] = secretFile(auth.tlsCaFile, 'CA certificate');
  return out;
}

export interface MqttConnectorDeps extends ConnectorDeps {
  /** With a shared store, a source's persistent session is held by one process at a time. */
  holdLease?: Store['holdLease'];
}

export class MqttConnectors extends ConnectorRunners {
  protected readonly sinkKind = 'MqttSink';
  private lib: Promise<typeof import('mqtt')> | undefined;

  private readonly holdLease: Store['holdLease'];

  constructor(deps: MqttConnectorDeps) {
    super(deps);
    this.holdLease = deps.holdLease;
  }

  protected start(o: ResourceObject, signature: string): Runner {
    const label = { [o.kind.toLowerCase()]: `${o.metadata.namespace}/${o.metadata.name}` };
    let client: import('mqtt').MqttClient | undefined;
    let stopped = false;
    let stopLease: (() => void) | undefined;
    const runner: Runner = {
      signature,
      o,
      stop: async () => {
        stopped = true;
        stopLease?.();
        const c = client;
        client = undefined;
        if (c !== undefined) await c.endAsync().catch(() => undefined);
      },
    };
    const report = (state: ConnectionState) => this.report(runner, state);
    const connect = async () => {
      if (stopped || this.closed || client !== undefined) return;
      const spec = runner.o.spec as unknown as MqttSourceSpec | MqttSinkSpec;
      let opts: Record<string, unknown>;
      try {
        opts = options(spec.auth);
      } catch (err) {
        void report({ state: 'Failed', message: (err as Error).message });
        return;
      }
      this.lib ??= import('mqtt');
      const mqtt = await this.lib;
      const isSource = o.kind === 'MqttSource';
      const src = spec as MqttSourceSpec;
      const c = mqtt.connect(spec.address, {
        ...opts,
        protocolVersion: spec.protocolVersion,
        reconnectPeriod: 1000,
        connectTimeout: 5000,
        ...(isSource
          ? {
              clientId: src.clientId ?? `trellis-${o.metadata.namespace}-${o.metadata.name}`,
              clean: false,
              ...(spec.protocolVersion === 5 ? { properties: { sessionExpiryInterval: 7 * 24 * 3600 } } : {}),
            }
          : { clientId: `trellis-sink-${randomUUID().slice(0, 8)}`, clean: true }),
      });
      client = c;
      if (isSource) {
        // The PUBACK goes only once the event is stored (mqtt.js acknowledges when this calls back, on 3.1.1
        // and 5 alike): the broker keeps the message until then.
        c.handleMessage = (packet, callback) => {
          if (packet.cmd !== 'publish') return callback();
          const props = (
            packet as {
              properties?: { contentType?: string; userProperties?: Record<string, string | string[]> };
            }
          ).properties;
          void this.take(
            runner,
            {
              topic: packet.topic,
              payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
              contentType: props?.contentType,
              userProperties: props?.userProperties,
            },
            () => stopped,
          ).then((ok) => {
            if (ok) callback();
          });
        };
      }
      c.on('connect', () => {
        void report({ state: 'Connected' });
        if (isSource) c.subscribe(src.topic, { qos: src.qos });
      });
      c.on('close', () => {
        if (!stopped)
          void report({ state: 'Disconnected', message: 'the MQTT broker is unreachable; reconnecting' });
      });
      c.on('error', (err) => {
        this.deps.logger.warn({ ...label, err: err.message }, 'MQTT error');
        void report({ state: 'Failed', message: `${spec.address}: ${err.message}` });
      });
      if (!isSource) {
        const sink = spec as MqttSinkSpec;
        runner.publish = async (events) => {
          for (const e of events) {
            const m = eventToMqtt(e, sink.mode);
            try {
              await c.publishAsync(sink.topic, m.payload, {
                qos: sink.qos,
                retain: sink.retain,
                ...(sink.protocolVersion === 5
                  ? {
                      properties: {
                        ...(m.contentType !== undefined ? { contentType: m.contentType } : {}),
                        ...(m.userProperties !== undefined ? { userProperties: m.userProperties } : {}),
                      },
                    }
                  : {}),
              });
            } catch (err) {
              throw new TrellisError(
                'TRELLIS_ERR_CONNECTOR_FAILED',
                `the MQTT broker did not take the event on ${sink.topic}: ${(err as Error).message}`,
              );
            }
          }
        };
      }
    };
    if (o.kind === 'MqttSource' && this.holdLease !== undefined) {
      // One persistent session per source: the process holding its lease runs it.
      stopLease = this.holdLease(`mqttsource/${o.metadata.uid}`, (held) => {
        if (held) void connect();
        else {
          const c = client;
          client = undefined;
          void c?.endAsync().catch(() => undefined);
        }
      });
    } else void connect();
    return runner;
  }

  /** Stores a message's event, trying again while Trellis cannot take it; true once stored. */
  private async take(runner: Runner, m: MqttMessage, stopped: () => boolean): Promise<boolean> {
    const o = runner.o;
    const e = mqttToEvent(m);
    const ext = (o.spec as unknown as MqttSourceSpec).ceOverrides?.extensions;
    if (ext !== undefined) e.attrs = { ...e.attrs, ...ext };
    for (let wait = 500; !stopped() && !this.closed; wait = Math.min(wait * 2, 10_000)) {
      try {
        await this.deps.accept(connectorKey(o), [e]);
        return true;
      } catch (err) {
        if (refusedForGood(err)) {
          this.deps.logger.error(
            { mqttsource: `${o.metadata.namespace}/${o.metadata.name}`, err, topic: m.topic },
            'a message was refused and is dropped',
          );
          return true;
        }
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    // Not stored: no PUBACK, so the broker gives the message again to the next session.
    return false;
  }
}
