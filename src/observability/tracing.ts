/**
 * OpenTelemetry tracing, on when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, OTLP over HTTP with JSON): spans for ingress, the filter, the
 * store append and each delivery attempt, exported in batches (the SDK's `OTEL_BSP_*` settings apply).
 * Without an endpoint nothing is loaded and the data plane has no tracer. The SDK is imported only when
 * it is used.
 * @module
 */
import type { Tracer as OtelTracer, Span } from '@opentelemetry/api';
import type { SpanKind, TraceContext, Tracer, TraceSpan } from '../dataplane/tracing.js';

export interface Tracing {
  tracer: Tracer;
  /** Exports what is buffered and stops. */
  shutdown(): Promise<void>;
}

/** True when the environment names an OTLP endpoint for traces. */
export function tracingConfigured(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] || env['OTEL_EXPORTER_OTLP_ENDPOINT']);
}

/** Starts OpenTelemetry with an OTLP/HTTP exporter; undefined when no endpoint is configured. */
export async function startTracing(version: string): Promise<Tracing | undefined> {
  if (!tracingConfigured() || process.env['OTEL_SDK_DISABLED'] === 'true') return undefined;
  const api = await import('@opentelemetry/api');
  const { W3CTraceContextPropagator } = await import('@opentelemetry/core');
  const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
  const { resourceFromAttributes } = await import('@opentelemetry/resources');
  const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      'service.name': process.env['OTEL_SERVICE_NAME'] ?? 'trellis',
      'service.version': version,
    }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  const otel: OtelTracer = provider.getTracer('trellis', version);
  const propagator = new W3CTraceContextPropagator();
  const KINDS: Record<SpanKind, number> = {
    internal: api.SpanKind.INTERNAL,
    server: api.SpanKind.SERVER,
    client: api.SpanKind.CLIENT,
    producer: api.SpanKind.PRODUCER,
    consumer: api.SpanKind.CONSUMER,
  };
  const getter = {
    get: (c: TraceContext, k: string) =>
      k === 'traceparent' ? c.traceparent : k === 'tracestate' ? c.tracestate : undefined,
    keys: (c: TraceContext) => Object.keys(c),
  };
  const wrap = (span: Span): TraceSpan => {
    const sc = span.spanContext();
    const context: TraceContext = {
      traceparent: `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`,
      tracestate: sc.traceState?.serialize() || undefined,
      [SPAN]: span,
    } as TraceContext;
    return {
      context,
      set: (k, v) => {
        span.setAttribute(k, v);
      },
      end: (error) => {
        if (error !== undefined) span.setStatus({ code: api.SpanStatusCode.ERROR, message: error });
        span.end();
      },
    };
  };
  const tracer: Tracer = {
    start(name, parent, kind, attrs) {
      let ctx = api.ROOT_CONTEXT;
      const p = parent === undefined ? undefined : 'context' in parent ? parent.context : parent;
      const own = (p as { [SPAN]?: Span } | undefined)?.[SPAN];
      if (own !== undefined) ctx = api.trace.setSpan(ctx, own);
      else if (p?.traceparent !== undefined) ctx = propagator.extract(ctx, p, getter);
      const clean: Record<string, string | number | boolean> = {};
      for (const k in attrs) if (attrs[k] !== undefined) clean[k] = attrs[k]!;
      return wrap(otel.startSpan(name, { kind: KINDS[kind], attributes: clean }, ctx));
    },
  };
  return { tracer, shutdown: () => provider.shutdown() };
}

/** Where a span's own object rides along its context, so a child in this process needs no parsing. */
const SPAN = Symbol('span');
