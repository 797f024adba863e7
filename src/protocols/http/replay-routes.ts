/**
 * `POST /apis/eventing.knative.dev/v1/namespaces/{ns}/brokers/{name}/replay` with
 * `{"from": POSITION, "to": {"kind": "Trigger"|"ConsumerGroup", "name": NAME}, "until"?: TIME}`: the
 * Broker's retained events from a position (that the subscription's filter takes) are delivered to that
 * one subscription again, with its delivery settings; answers `{"events": N}`. Behind the admin guard.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import type { SubscriptionRoute } from '../../dataplane/routes.js';
import { TrellisError } from '../../errors.js';
import { parseStartPosition, type StartPosition } from '../../resources/consumergroup.js';
import { findKind } from '../../resources/kinds.js';
import type { ResourceRegistry } from '../../resources/registry.js';
import { isObject } from '../../resources/validation.js';
import { sendError } from './errors.js';

export interface ReplayDeps {
  registry: ResourceRegistry;
  route(id: string): SubscriptionRoute | undefined;
  replay(route: SubscriptionRoute, from: StartPosition, untilMs?: number): Promise<number>;
}

function bad(field: string, rule: string): never {
  throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', `${field}: ${rule}`, { field });
}

export function registerReplayRoutes(app: FastifyInstance, d: ReplayDeps): void {
  app.post<{ Params: { ns: string; name: string } }>(
    '/apis/eventing.knative.dev/v1/namespaces/:ns/brokers/:name/replay',
    async (req, reply) => {
      try {
        let body: unknown;
        try {
          body = JSON.parse(Buffer.isBuffer(req.body) ? req.body.toString('utf8') : String(req.body ?? ''));
        } catch {
          bad('(body)', 'must be JSON: {"from": ..., "to": {"kind": "Trigger", "name": ...}}');
        }
        if (!isObject(body)) bad('(body)', 'must be a JSON object');
        const from = typeof body['from'] === 'string' ? parseStartPosition(body['from']) : undefined;
        if (from === undefined || from.kind === 'latest')
          bad('from', "must be 'earliest', an RFC 3339 time or a sequence number");
        let untilMs: number | undefined;
        if (body['until'] !== undefined) {
          const u = typeof body['until'] === 'string' ? parseStartPosition(body['until']) : undefined;
          if (u?.kind !== 'time') bad('until', 'must be an RFC 3339 time');
          untilMs = u.ms;
        }
        const to = body['to'];
        if (!isObject(to) || typeof to['name'] !== 'string')
          bad('to', 'must be {"kind": "Trigger" or "ConsumerGroup", "name": NAME}');
        const kind = findKind(typeof to['kind'] === 'string' ? to['kind'] : 'trigger');
        if (kind === undefined || (kind.kind !== 'Trigger' && kind.kind !== 'ConsumerGroup'))
          bad('to.kind', 'must be Trigger or ConsumerGroup');
        const { ns, name } = req.params;
        const target = await d.registry.get(kind, ns, to['name']);
        const route = d.route(String(target.metadata.uid));
        if (route === undefined)
          throw new TrellisError(
            'TRELLIS_ERR_GROUP_NOT_READY',
            `${kind.kind} ${ns}/${to['name']} is not Ready: nothing would deliver what is replayed to it`,
          );
        if (route.stream !== `${ns}/${name}`)
          bad('to', `${kind.kind} ${ns}/${to['name']} reads ${route.stream}, not Broker ${ns}/${name}`);
        const events = await d.replay(route, from, untilMs);
        return { events };
      } catch (err) {
        return sendError(reply, err);
      }
    },
  );
}
