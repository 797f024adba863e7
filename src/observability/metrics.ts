/**
 * Prometheus metrics (prom-client), served at `GET /metrics`: ingress requests and their latency, each
 * delivery attempt and outcome, lag and the age of the oldest pending delivery per subscription, replies,
 * store appends, and the process's own metrics. Names and labels follow Knative's (`event_count`,
 * `event_dispatch_latencies`, `namespace_name`, `response_code`, `response_code_class`); docs/operations.md
 * lists them. Labels name resources only (never an event's attributes, which a sender chooses), so the
 * number of series follows the number of resources.
 * @module
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { DataPlaneObserver, DeliveryOutcome, IngressObservation } from '../dataplane/observer.js';
import type { SubscriptionRoute } from '../dataplane/routes.js';

/** What metrics read when scraped. */
export interface MetricsSources {
  /** Every subscription delivered from (their kinds and names label the lag). */
  routes(): Iterable<SubscriptionRoute>;
  /** Pending deliveries per subscription id, with when the oldest was stored (ms since the epoch). */
  backlog(): Promise<Map<string, { pending: number; oldestMs?: number | undefined }>>;
  /** Events waiting to be made durable. */
  pendingWrites(): number;
  /** Deliveries in flight in this process. */
  inflight(): number;
  /** `sqlite` or `nats`. */
  store: string;
  version: string;
}

/** Seconds: 1 ms to 10 s, as Knative's dispatch latency buckets. */
const LATENCY_BUCKETS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10];
const SIZE_BUCKETS = [256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304];
const BATCH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
/** A scrape reads the store's backlog at most this often; scrapes in between get the last reading. */
const BACKLOG_MAX_AGE_MS = 2000;

const codeClass = (code: number | undefined) => (code === undefined ? 'none' : `${Math.floor(code / 100)}xx`);

/** `ns/broker` or `channels/ns/name`: the namespace and name. */
function streamNames(stream: string): [string, string] {
  const p = stream.split('/');
  return p.length === 2 ? [p[0]!, p[1]!] : [p[1] ?? '', p[2] ?? ''];
}

interface SubSeries {
  labels: Record<string, string>;
  children: Map<string, unknown>;
  removals: (() => void)[];
}

export class Metrics implements DataPlaneObserver {
  readonly registry = new Registry();
  private readonly ingressCount: Counter<string>;
  private readonly ingressLatency: Histogram<string>;
  private readonly ingressBytes: Histogram<string>;
  private readonly appendLatency: Histogram<string>;
  private readonly appendBatch: Histogram<string>;
  private readonly attempts: Counter<string>;
  private readonly dispatchLatency: Histogram<string>;
  private readonly outcomes: Counter<string>;
  private readonly replyCount: Counter<string>;
  /** Label children by key: prom-client hashes labels on every call otherwise. */
  private readonly ingressChildren = new Map<
    string,
    { count: Counter.Internal; latency: Histogram.Internal<string>; bytes: Histogram.Internal<string> }
  >();
  /** Per subscription resource (`kind/namespace/name`): its series' children, and how to remove them. */
  private readonly subChildren = new Map<string, SubSeries>();
  private backlogRead:
    | { at: number; value: Promise<Map<string, { pending: number; oldestMs?: number | undefined }>> }
    | undefined;

  constructor(private readonly sources: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'trellis_build_info',
      help: 'Always 1: the version and the store of this Trellis process',
      labelNames: ['version', 'store'],
      registers,
    }).set({ version: sources.version, store: sources.store }, 1);
    const ingressLabels = ['namespace_name', 'kind', 'name', 'response_code', 'response_code_class'];
    this.ingressCount = new Counter({
      name: 'trellis_ingress_event_count_total',
      help: 'Events sent to a Broker or Channel, by the status code their request was answered with (a request refused before its events were read counts 1)',
      labelNames: ingressLabels,
      registers,
    });
    this.ingressLatency = new Histogram({
      name: 'trellis_ingress_request_latencies_seconds',
      help: 'Time from a request reaching ingress to its answer (202: its events are durable)',
      labelNames: ['namespace_name', 'kind', 'name', 'response_code_class'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.ingressBytes = new Histogram({
      name: 'trellis_ingress_request_size_bytes',
      help: 'Size of the request bodies ingress received',
      labelNames: ['namespace_name', 'kind', 'name'],
      buckets: SIZE_BUCKETS,
      registers,
    });
    this.appendLatency = new Histogram({
      name: 'trellis_store_append_latency_seconds',
      help: 'Time to make an append durable in the store (events and their deliveries)',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.appendBatch = new Histogram({
      name: 'trellis_store_append_batch_events',
      help: 'Events per append to the store',
      buckets: BATCH_BUCKETS,
      registers,
    });
    new Gauge({
      name: 'trellis_store_pending_writes',
      help: 'Events waiting to be made durable (ingress answers 503 above --max-pending-writes)',
      registers,
      collect() {
        this.set(sources.pendingWrites());
      },
    });
    const subLabels = ['namespace_name', 'kind', 'name'];
    this.attempts = new Counter({
      name: 'trellis_delivery_event_count_total',
      help: 'Delivery attempts to subscribers, by the status code they answered with (response_code "none": no answer)',
      labelNames: [...subLabels, 'response_code', 'response_code_class'],
      registers,
    });
    this.dispatchLatency = new Histogram({
      name: 'trellis_delivery_event_dispatch_latencies_seconds',
      help: 'Time a delivery attempt took, until the subscriber answered or the attempt failed',
      labelNames: [...subLabels, 'response_code_class'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.outcomes = new Counter({
      name: 'trellis_delivery_outcomes_total',
      help: 'How deliveries ended (delivered, dead_lettered, dropped), and failed attempts followed by a retry (retried)',
      labelNames: [...subLabels, 'outcome'],
      registers,
    });
    this.replyCount = new Counter({
      name: 'trellis_delivery_reply_events_total',
      help: 'Reply events subscribers answered with, passed on to the Broker or reply destination',
      labelNames: subLabels,
      registers,
    });
    new Gauge({
      name: 'trellis_delivery_inflight',
      help: 'Deliveries in flight in this process',
      registers,
      collect() {
        this.set(sources.inflight());
      },
    });
    const backlog = () => this.backlog();
    let collecting: Promise<void> | undefined;
    // Both gauges come from one read of the store, by the first of them to be collected.
    const once = () => {
      collecting ??= collectLag().finally(() => {
        collecting = undefined;
      });
      return collecting;
    };
    const lag = new Gauge({
      name: 'trellis_delivery_lag',
      help: 'Deliveries stored and not yet finished, per subscription (its Trigger, Subscription or flow)',
      labelNames: subLabels,
      registers,
      collect: once,
    });
    const oldest = new Gauge({
      name: 'trellis_delivery_oldest_pending_age_seconds',
      help: 'Age of the oldest delivery not yet finished, per subscription (0: none pending)',
      labelNames: subLabels,
      registers,
      collect: once,
    });
    const collectLag = async () => {
      const b = await backlog();
      const now = Date.now();
      const per = new Map<string, { labels: Record<string, string>; pending: number; oldest: number }>();
      for (const r of sources.routes()) {
        const key = `${r.kind}/${r.namespace}/${r.name}`;
        let x = per.get(key);
        if (x === undefined) {
          x = { labels: { namespace_name: r.namespace, kind: r.kind, name: r.name }, pending: 0, oldest: 0 };
          per.set(key, x);
        }
        const s = b.get(r.id);
        if (s === undefined) continue;
        x.pending += s.pending;
        if (s.oldestMs !== undefined) x.oldest = Math.max(x.oldest, (now - s.oldestMs) / 1000);
      }
      lag.reset();
      oldest.reset();
      for (const x of per.values()) {
        lag.set(x.labels, x.pending);
        oldest.set(x.labels, x.pending === 0 ? 0 : x.oldest);
      }
    };
  }

  private backlog() {
    const now = Date.now();
    if (this.backlogRead === undefined || now - this.backlogRead.at > BACKLOG_MAX_AGE_MS) {
      const value = this.sources.backlog();
      value.catch(() => {
        this.backlogRead = undefined;
      });
      this.backlogRead = { at: now, value };
    }
    return this.backlogRead.value;
  }

  ingress(o: IngressObservation): void {
    const key = `${o.stream ?? ''}\u0000${o.code}`;
    let c = this.ingressChildren.get(key);
    if (c === undefined) {
      const [ns, name] = o.stream === undefined ? ['', ''] : streamNames(o.stream);
      const base = { namespace_name: ns, kind: o.kind ?? '', name };
      const cls = codeClass(o.code);
      c = {
        count: this.ingressCount.labels({ ...base, response_code: String(o.code), response_code_class: cls }),
        latency: this.ingressLatency.labels({ ...base, response_code_class: cls }),
        bytes: this.ingressBytes.labels(base),
      };
      this.ingressChildren.set(key, c);
    }
    c.count.inc(o.events);
    c.latency.observe(o.seconds);
    c.bytes.observe(o.bytes);
  }

  append(events: number, seconds: number): void {
    this.appendLatency.observe(seconds);
    this.appendBatch.observe(events);
  }

  private series(r: SubscriptionRoute): SubSeries {
    const key = `${r.kind}/${r.namespace}/${r.name}`;
    let x = this.subChildren.get(key);
    if (x === undefined) {
      x = {
        labels: { namespace_name: r.namespace, kind: r.kind, name: r.name },
        children: new Map(),
        removals: [],
      };
      this.subChildren.set(key, x);
    }
    return x;
  }

  /** A child of `metric` with the subscription's labels and `extra`, made once and remembered for removal. */
  private child<C>(
    x: SubSeries,
    key: string,
    metric: { labels(l: Record<string, string>): C; remove(l: Record<string, string>): void },
    extra: Record<string, string> = {},
  ): C {
    let c = x.children.get(key) as C | undefined;
    if (c === undefined) {
      const labels = { ...x.labels, ...extra };
      c = metric.labels(labels);
      x.children.set(key, c);
      x.removals.push(() => metric.remove(labels));
    }
    return c;
  }

  attempt(r: SubscriptionRoute, code: number | undefined, seconds: number): void {
    const x = this.series(r);
    const cls = codeClass(code);
    const rc = code === undefined ? 'none' : String(code);
    this.child(x, `a${rc}`, this.attempts, { response_code: rc, response_code_class: cls }).inc();
    this.child(x, `l${cls}`, this.dispatchLatency, { response_code_class: cls }).observe(seconds);
  }

  outcome(r: SubscriptionRoute, outcome: DeliveryOutcome): void {
    this.child(this.series(r), `o${outcome}`, this.outcomes, { outcome }).inc();
  }

  replies(r: SubscriptionRoute, n: number): void {
    this.child(this.series(r), 'r', this.replyCount).inc(n);
  }

  /**
   * Drops the series of subscriptions that are gone (by `kind/namespace/name`), so deleted resources stop
   * being reported.
   */
  retain(live: ReadonlySet<string>): void {
    for (const [k, x] of this.subChildren) {
      if (live.has(k)) continue;
      for (const f of x.removals) f();
      this.subChildren.delete(k);
    }
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
