/**
 * Runs EventTransforms: an event in, Knative's JSONata expression over its structured JSON form, an event
 * out, sent on to the sink or answered as the reply. Synchronous, as in Knative: nothing is stored here;
 * whoever sent the event (a Trigger, a Subscription) retries it when the transform's sink fails.
 * Every evaluation is bounded in time and depth (JSONata's own guardrails).
 * @module
 */
import jsonata from 'jsonata';
import type { CloudEvent } from '../cloudevents/event.js';
import { decodeHttp, flattenHeaders } from '../cloudevents/http.js';
import { eventFromJson, eventToJson } from '../cloudevents/json-format.js';
import { TrellisError } from '../errors.js';
import type { Sender } from './sender.js';

/** One EventTransform, compiled. */
export interface TransformRoute {
  /** `eventtransforms/namespace/name` */
  key: string;
  name: string;
  ready: boolean;
  expression: string;
  reply?: string | undefined;
  discard: boolean;
  sinkUri?: string | undefined;
  /** The sink is an ingress of this server: knativebrokerttl goes along. */
  sinkIsSelf: boolean;
  timeoutMs: number;
}

export interface TransformLimits {
  /** Longest evaluation of one expression, ms. */
  evalTimeoutMs: number;
  /** Deepest evaluation (JSONata's stack guardrail). */
  maxDepth: number;
}

/** The answer to the sender: a status, and the event to answer with, if any. */
export interface TransformResult {
  status: number;
  event?: CloudEvent;
}

export class Transformer {
  /** Every EventTransform by key; kept current by the composition root. */
  readonly routes = new Map<string, TransformRoute>();
  private readonly compiled = new Map<string, jsonata.Expression>();

  constructor(
    private readonly sender: Sender,
    private readonly limits: TransformLimits,
  ) {}

  private compile(src: string): jsonata.Expression {
    let e = this.compiled.get(src);
    if (e === undefined) {
      e = jsonata(src, { timeout: this.limits.evalTimeoutMs, stack: this.limits.maxDepth } as never);
      if (this.compiled.size > 10_000) this.compiled.clear();
      this.compiled.set(src, e);
    }
    return e;
  }

  /** Applies an expression to an event; the result must be an event in structured JSON. */
  private async apply(route: TransformRoute, src: string, e: CloudEvent, what: string): Promise<CloudEvent> {
    let out: unknown;
    try {
      out = await this.compile(src).evaluate(eventToJson(e));
    } catch (err) {
      const x = err as { code?: string; message?: string };
      const why =
        x.code === 'D1012'
          ? `took longer than ${this.limits.evalTimeoutMs} ms`
          : x.code === 'D1011'
            ? `went deeper than ${this.limits.maxDepth} levels`
            : `failed: ${x.message ?? String(err)}`;
      throw new TrellisError(
        'TRELLIS_ERR_TRANSFORM_FAILED',
        `EventTransform ${route.name}: the ${what} expression ${why}`,
      );
    }
    try {
      return eventFromJson(out);
    } catch (err) {
      throw new TrellisError(
        'TRELLIS_ERR_TRANSFORM_FAILED',
        `EventTransform ${route.name}: the ${what} expression did not produce a CloudEvent: ${(err as Error).message}`,
      );
    }
  }

  /** Transforms an event sent to `key`, and forwards it or answers with it. */
  async handle(key: string, e: CloudEvent): Promise<TransformResult> {
    const route = this.routes.get(key);
    if (route === undefined)
      throw new TrellisError('TRELLIS_ERR_DESTINATION_NOT_FOUND', `nothing takes events at /${key}`, {
        path: `/${key}`,
      });
    if (!route.ready)
      throw new TrellisError('TRELLIS_ERR_DESTINATION_NOT_READY', `EventTransform at /${key} is not Ready`, {
        path: `/${key}`,
      });
    const ttl = e.attrs['knativebrokerttl'];
    const out = await this.apply(route, route.expression, e, 'jsonata');
    // The loop budget goes along, whatever the expression kept.
    if (ttl !== undefined) out.attrs['knativebrokerttl'] = ttl;
    if (route.sinkUri === undefined) return { status: 200, event: out };
    const res = await this.sender.send(
      `transform:${key}`,
      route.sinkUri,
      out,
      route.timeoutMs,
      route.sinkIsSelf ? undefined : 'knativebrokerttl',
    );
    if (res.kind === 'error' || res.status < 200 || res.status >= 300) {
      const why = res.kind === 'error' ? res.error : `answered ${res.status}`;
      throw new TrellisError(
        'TRELLIS_ERR_SINK_FAILED',
        `EventTransform ${route.name}: the sink ${route.sinkUri} ${why}`,
        {
          sink: route.sinkUri,
        },
      );
    }
    if (route.discard || res.status === 202 || res.status === 204) return { status: 202 };
    let reply: CloudEvent | undefined;
    try {
      const evs = decodeHttp(flattenHeaders(res.headers), res.body).events;
      reply = evs.length === 1 ? evs[0] : undefined;
    } catch {
      reply = undefined;
    }
    if (reply === undefined) return { status: 202 };
    if (route.reply === undefined) return { status: 200, event: reply };
    return { status: 200, event: await this.apply(route, route.reply, reply, 'reply') };
  }
}
