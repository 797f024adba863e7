/**
 * `GET /metrics` (Prometheus exposition) and `GET /apis/stats` (live counts per subscription and stream,
 * with lag: what `trellis get -o wide`, `trellis top` and the dashboard read). Both are behind the admin
 * guard: they name every resource.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import type { SubscriptionRoute } from '../../dataplane/routes.js';
import { TrellisError } from '../../errors.js';
import type { Metrics } from '../../observability/metrics.js';
import type { LiveStats } from '../../observability/stats.js';
import type { Backlog } from '../../store/types.js';
import { sendError } from './errors.js';

export interface StatsSources {
  stats: LiveStats;
  metrics: Metrics | undefined;
  routes(): Iterable<SubscriptionRoute>;
  backlog(): Promise<Map<string, Backlog>>;
}

export function registerStatsRoutes(app: FastifyInstance, src: StatsSources): void {
  app.get('/metrics', async (_req, reply) => {
    if (src.metrics === undefined)
      return reply.code(404).send({
        code: 'TRELLIS_ERR_ROUTE_NOT_FOUND',
        message: 'metrics are off (the server runs with --no-metrics)',
      });
    try {
      const { contentType, body } = await src.metrics.scrape();
      return reply.header('content-type', contentType).send(body);
    } catch (err) {
      return sendError(reply, err);
    }
  });

  // What happened to an event's deliveries (failed attempts, how each ended), among this process's recent
  // 10,000 such records: an event's detail in the dashboard.
  app.get<{ Querystring: { event?: string; stream?: string } }>('/apis/deliveries', async (req, reply) => {
    const id = req.query.event;
    if (id === undefined || id === '' || id.length > 512)
      return sendError(
        reply,
        new TrellisError('TRELLIS_ERR_BAD_REQUEST', 'event: the id of the event (1 to 512 characters)', {
          field: 'event',
        }),
      );
    const items = src.stats
      .deliveriesOf(id, req.query.stream)
      .map((r) => ({ ...r, time: new Date(r.time).toISOString() }));
    return { kind: 'DeliveryList', items };
  });

  app.get('/apis/stats', async (_req, reply) => {
    try {
      const backlog = await src.backlog();
      const now = Date.now();
      const counted = new Map(
        src.stats.subscriptions().map((s) => [`${s.kind}/${s.namespace}/${s.name}`, s]),
      );
      const out = new Map<string, Record<string, unknown>>();
      for (const r of src.routes()) {
        const key = `${r.kind}/${r.namespace}/${r.name}`;
        let x = out.get(key);
        if (x === undefined) {
          const c = counted.get(key);
          x = {
            kind: r.kind,
            namespace: r.namespace,
            name: r.name,
            delivered: c?.delivered ?? 0,
            failedAttempts: c?.failedAttempts ?? 0,
            retried: c?.retried ?? 0,
            deadLettered: c?.deadLettered ?? 0,
            dropped: c?.dropped ?? 0,
            replies: c?.replies ?? 0,
            lag: 0,
            oldestPendingSeconds: 0,
            recentFailures: c?.recentFailures ?? [],
          };
          out.set(key, x);
        }
        const b = backlog.get(r.id);
        if (b === undefined) continue;
        x['lag'] = (x['lag'] as number) + b.pending;
        if (b.oldestMs !== undefined)
          x['oldestPendingSeconds'] = Math.max(
            x['oldestPendingSeconds'] as number,
            (now - b.oldestMs) / 1000,
          );
      }
      return { kind: 'Stats', subscriptions: [...out.values()], streams: src.stats.streamStats() };
    } catch (err) {
      return sendError(reply, err);
    }
  });
}
