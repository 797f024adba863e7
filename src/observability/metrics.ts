/**
 * Prometheus metrics, served at `GET /metrics`: ingress requests and their latency, each delivery
 * attempt and outcome, lag and the age of the oldest pending delivery per subscription, replies, store
 * appends, and the process's own metrics. Names and labels follow Knative's (`event_count`,
 * `event_dispatch_latencies`, `namespace_name`, `response_code`, `response_code_class`); docs/operations.md
 * lists them. Labels name resources only (never an event's attributes, which a sender chooses), so the
 * number of series follows the number of resources.
 *
 * The hot path only adds to plain numbers (a series object per label set, found once per route and
 * answer); prom-client's registry reads them when scraped and writes the exposition format, with its
 * process metrics beside them. prom-client's own counters and histograms hash and check their labels on
 * every call, which cost 14% of ingress throughput with a Trigger (measured with `npm run bench`).
 * @module
 */
import { collectDefaultMetrics, Gauge, type Metric, Registry } from 'prom-client';
import type { DataPlaneObserver, DeliveryOutcome, IngressObservation } from '../dataplane/observer.js';
import type { SubscriptionRoute } from '../dataplane/routes.js';
import type { Backlog } from '../store/types.js';

/** What metrics read when scraped. */
export interface MetricsSources {
  /** Every subscription delivered from (their kinds and names label the lag). */
  routes(): Iterable<SubscriptionRoute>;
  /** Pending deliveries per subscription id, with when the oldest was stored (ms since the epoch). */
  backlog(): Promise<Map<string, Backlog>>;
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

type Labels = Record<string, string>;

/** One counter series. */
interface CounterSeries {
  labels: Labels;
  value: number;
}

/** One histogram series: a count per bucket (not cumulative; the last is +Inf), their sum and count. */
interface HistogramSeries {
  labels: Labels;
  counts: number[];
  sum: number;
  count: number;
}

/** A counter whose series are plain objects; registered with prom-client's registry as a custom metric. */
class FastCounter {
  readonly series = new Map<string, CounterSeries>();
  readonly type = 'counter';
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  at(key: string, labels: Labels): CounterSeries {
    let x = this.series.get(key);
    if (x === undefined) {
      x = { labels, value: 0 };
      this.series.set(key, x);
    }
    return x;
  }

  async get() {
    const values = [...this.series.values()].map((x) => ({ labels: x.labels, value: x.value }));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

class FastHistogram {
  readonly series = new Map<string, HistogramSeries>();
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {}

  at(key: string, labels: Labels): HistogramSeries {
    let x = this.series.get(key);
    if (x === undefined) {
      x = { labels, counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
      this.series.set(key, x);
    }
    return x;
  }

  observe(x: HistogramSeries, v: number): void {
    const b = this.buckets;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    x.counts[i]!++;
    x.sum += v;
    x.count++;
  }

  async get() {
    const values: { labels: Labels; value: number; metricName: string }[] = [];
    for (const x of this.series.values()) {
      let acc = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        acc += x.counts[i]!;
        const le = i < this.buckets.length ? String(this.buckets[i]) : '+Inf';
        values.push({ labels: { ...x.labels, le }, value: acc, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: x.labels, value: x.sum, metricName: `${this.name}_sum` });
      values.push({ labels: x.labels, value: x.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/** What one stream's requests with one answer add to. */
interface IngressSeries {
  count: CounterSeries;
  latency: HistogramSeries;
  bytes: HistogramSeries;
}

/** What one route's attempts and outcomes add to, found once per route object. */
interface RouteSeries {
  base: Labels;
  attempts: Map<number | undefined, { count: CounterSeries; latency: HistogramSeries }>;
  outcomes: Map<DeliveryOutcome, CounterSeries>;
  replies?: CounterSeries;
}

export class Metrics implements DataPlaneObserver {
  readonly registry = new Registry();
  private readonly ingressCount = new FastCounter(
    'trellis_ingress_event_count_total',
    'Events sent to a Broker or Channel, by the status code their request was answered with (a request refused before its events were read counts 1)',
  );
  private readonly ingressLatency = new FastHistogram(
    'trellis_ingress_request_latencies_seconds',
    'Time from a request reaching ingress to its answer (202: its events are durable)',
    LATENCY_BUCKETS,
  );
  private readonly ingressBytes = new FastHistogram(
    'trellis_ingress_request_size_bytes',
    'Size of the request bodies ingress received',
    SIZE_BUCKETS,
  );
  private readonly appendLatency = new FastHistogram(
    'trellis_store_append_latency_seconds',
    'Time to make an append durable in the store (events and their deliveries)',
    LATENCY_BUCKETS,
  );
  private readonly appendBatch = new FastHistogram(
    'trellis_store_append_batch_events',
    'Events per append to the store',
    BATCH_BUCKETS,
  );
  private readonly attempts = new FastCounter(
    'trellis_delivery_event_count_total',
    'Delivery attempts to subscribers, by the status code they answered with (response_code "none": no answer)',
  );
  private readonly dispatchLatency = new FastHistogram(
    'trellis_delivery_event_dispatch_latencies_seconds',
    'Time a delivery attempt took, until the subscriber answered or the attempt failed',
    LATENCY_BUCKETS,
  );
  private readonly outcomes = new FastCounter(
    'trellis_delivery_outcomes_total',
    'How deliveries ended (delivered, dead_lettered, dropped), and failed attempts followed by a retry (retried)',
  );
  private readonly replyCount = new FastCounter(
    'trellis_delivery_reply_events_total',
    'Reply events subscribers answered with, passed on to the Broker or reply destination',
  );
  private readonly limited = new FastCounter(
    'trellis_ingress_rate_limited_events_total',
    'Events refused with 429 by a rate limit: the Broker\'s or Channel\'s own (limit "stream") or its per-sender one (limit "sender")',
  );
  private readonly append1: HistogramSeries;
  private readonly batch1: HistogramSeries;
  /** By stream, then by status code. */
  private readonly ingressSeries = new Map<string, Map<number, IngressSeries>>();
  /** By route object: the dispatcher's routes are replaced when resources change. */
  private readonly routeSeries = new WeakMap<SubscriptionRoute, RouteSeries>();
  private backlogRead: { at: number; value: Promise<Map<string, Backlog>> } | undefined;

  constructor(private readonly sources: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'trellis_build_info',
      help: 'Always 1: the version and the store of this Trellis process',
      labelNames: ['version', 'store'],
      registers,
    }).set({ version: sources.version, store: sources.store }, 1);
    this.append1 = this.appendLatency.at('', {});
    this.batch1 = this.appendBatch.at('', {});
    for (const m of [
      this.ingressCount,
      this.ingressLatency,
      this.ingressBytes,
      this.appendLatency,
      this.appendBatch,
      this.limited,
    ])
      this.registry.registerMetric(m as unknown as Metric);
    new Gauge({
      name: 'trellis_store_pending_writes',
      help: 'Events waiting to be made durable (ingress answers 503 above --max-pending-writes)',
      registers,
      collect() {
        this.set(sources.pendingWrites());
      },
    });
    for (const m of [this.attempts, this.dispatchLatency, this.outcomes, this.replyCount])
      this.registry.registerMetric(m as unknown as Metric);
    new Gauge({
      name: 'trellis_delivery_inflight',
      help: 'Deliveries in flight in this process',
      registers,
      collect() {
        this.set(sources.inflight());
      },
    });
    const subLabels = ['namespace_name', 'kind', 'name'];
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
      const b = await this.backlog();
      const now = Date.now();
      const per = new Map<string, { labels: Labels; pending: number; oldest: number }>();
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

  private backlog(): Promise<Map<string, Backlog>> {
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
    const stream = o.stream ?? '';
    let byCode = this.ingressSeries.get(stream);
    if (byCode === undefined) {
      byCode = new Map();
      this.ingressSeries.set(stream, byCode);
    }
    let x = byCode.get(o.code);
    if (x === undefined) {
      const [ns, name] = o.stream === undefined ? ['', ''] : streamNames(o.stream);
      const base = { namespace_name: ns, kind: o.kind ?? '', name };
      const cls = codeClass(o.code);
      const key = `${stream}\u0000`;
      x = {
        count: this.ingressCount.at(`${key}${o.code}`, {
          ...base,
          response_code: String(o.code),
          response_code_class: cls,
        }),
        latency: this.ingressLatency.at(`${key}${cls}`, { ...base, response_code_class: cls }),
        bytes: this.ingressBytes.at(key, base),
      };
      byCode.set(o.code, x);
    }
    x.count.value += o.events;
    this.ingressLatency.observe(x.latency, o.seconds);
    this.ingressBytes.observe(x.bytes, o.bytes);
  }

  rateLimited(stream: string, kind: string, limit: 'stream' | 'sender', events: number): void {
    const [ns, name] = streamNames(stream);
    this.limited.at(`${stream}\u0000${limit}`, { namespace_name: ns, kind, name, limit }).value += events;
  }

  append(events: number, seconds: number): void {
    this.appendLatency.observe(this.append1, seconds);
    this.appendBatch.observe(this.batch1, events);
  }

  private route(r: SubscriptionRoute): RouteSeries {
    let x = this.routeSeries.get(r);
    if (x === undefined) {
      x = {
        base: { namespace_name: r.namespace, kind: r.kind, name: r.name },
        attempts: new Map(),
        outcomes: new Map(),
      };
      this.routeSeries.set(r, x);
    }
    return x;
  }

  private resourceKey(b: Labels): string {
    return `${b['kind']}/${b['namespace_name']}/${b['name']}\u0000`;
  }

  attempt(r: SubscriptionRoute, code: number | undefined, seconds: number): void {
    const x = this.route(r);
    let a = x.attempts.get(code);
    if (a === undefined) {
      const cls = codeClass(code);
      const rc = code === undefined ? 'none' : String(code);
      const key = this.resourceKey(x.base);
      a = {
        count: this.attempts.at(`${key}${rc}`, { ...x.base, response_code: rc, response_code_class: cls }),
        latency: this.dispatchLatency.at(`${key}${cls}`, { ...x.base, response_code_class: cls }),
      };
      x.attempts.set(code, a);
    }
    a.count.value++;
    this.dispatchLatency.observe(a.latency, seconds);
  }

  outcome(r: SubscriptionRoute, outcome: DeliveryOutcome): void {
    const x = this.route(r);
    let c = x.outcomes.get(outcome);
    if (c === undefined) {
      c = this.outcomes.at(`${this.resourceKey(x.base)}${outcome}`, { ...x.base, outcome });
      x.outcomes.set(outcome, c);
    }
    c.value++;
  }

  replies(r: SubscriptionRoute, n: number): void {
    const x = this.route(r);
    x.replies ??= this.replyCount.at(this.resourceKey(x.base), x.base);
    x.replies.value += n;
  }

  /**
   * Drops the series of subscriptions that are gone (by `kind/namespace/name`), so deleted resources stop
   * being reported.
   */
  retain(live: ReadonlySet<string>): void {
    for (const m of [this.attempts, this.dispatchLatency, this.outcomes, this.replyCount]) {
      for (const k of m.series.keys()) if (!live.has(k.slice(0, k.indexOf('\u0000')))) m.series.delete(k);
    }
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
