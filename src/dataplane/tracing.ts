/**
 * What the data plane needs of tracing: spans started under a W3C trace context (from an HTTP
 * `traceparent` header, an event's distributed-tracing extension, or another span) whose own context
 * goes to the next hop. OpenTelemetry implements it (src/observability/tracing.ts) when an OTLP endpoint
 * is configured; without one there is no tracer and the data plane does nothing for tracing.
 * @module
 */

/** A W3C trace context as carried in headers or in an event's `traceparent` / `tracestate`. */
export interface TraceContext {
  traceparent?: string | undefined;
  tracestate?: string | undefined;
}

export type SpanKind = 'server' | 'client' | 'internal' | 'producer' | 'consumer';

/** A span in progress. */
export interface TraceSpan {
  /** This span's context, for the next hop (an HTTP `traceparent` header). */
  readonly context: TraceContext;
  set(key: string, value: string | number | boolean): void;
  /** Ends the span; with `error`, as failed. */
  end(error?: string): void;
}

export interface Tracer {
  start(
    name: string,
    parent: TraceSpan | TraceContext | undefined,
    kind: SpanKind,
    attrs?: Record<string, string | number | boolean | undefined>,
  ): TraceSpan;
}

/** What ingress is told about the trace a request belongs to. */
export interface IngressTrace {
  /** The span of the request (or of the delivery whose reply this is). */
  span: TraceSpan;
  /**
   * The context an event without the distributed-tracing extension gets: where its transmission
   * started (the sender's HTTP `traceparent`, else this span). An event that has one keeps it.
   */
  start: TraceContext;
}

/** An event's distributed-tracing extension, as a trace context (undefined when it has none). */
export function eventTraceContext(attrs: Readonly<Record<string, unknown>>): TraceContext | undefined {
  const tp = attrs['traceparent'];
  if (typeof tp !== 'string') return undefined;
  const ts = attrs['tracestate'];
  return { traceparent: tp, tracestate: typeof ts === 'string' ? ts : undefined };
}
