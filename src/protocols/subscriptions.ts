/**
 * What every streaming protocol (WebSocket, Server-Sent Events, gRPC) does to subscribe an application:
 * find or create its consumer group, replay retained events when a new group starts earlier than now,
 * join it as a member, and keep the group's `status.lastActiveTime` so idle groups can expire. Also the
 * replay of retained events to an existing subscription (`trellis replay`).
 * @module
 */
import { randomBytes } from 'node:crypto';
import type { CloudEvent } from '../cloudevents/event.js';
import type { ConsumerGroups, GroupDelivery, Member } from '../dataplane/groups.js';
import type { Logger, SubscriptionRoute } from '../dataplane/routes.js';
import { TrellisError } from '../errors.js';
import { isReady } from '../resources/conditions.js';
import {
  type ConsumerGroupSpec,
  EPHEMERAL_LABEL,
  parseStartPosition,
  type StartPosition,
} from '../resources/consumergroup.js';
import { parseDuration } from '../resources/duration.js';
import { findKind, type KindDef } from '../resources/kinds.js';
import type { ResourceRegistry } from '../resources/registry.js';
import type { DeliveryState, EventLog, ResourceObject } from '../store/types.js';

/** What a member asks for. */
export interface SubscribeRequest {
  namespace: string;
  /** The stream: a Broker, or a Channel (an InMemoryChannel when no Channel has the name). */
  target: { kind: 'Broker' | 'Channel'; name: string };
  /** A durable group shared with the other members of that name; none: a group of its own, deleted when it leaves. */
  group?: string | undefined;
  /** CESQL: only the events it matches (a group created by this request keeps it as its filter). */
  filter?: string | undefined;
  /** Where a new group starts: `latest` (default), `earliest`, an RFC 3339 time, a sequence number. */
  from?: string | undefined;
  /** Per partition key, one event at a time, in order (a group created by this request). */
  ordered?: boolean | undefined;
}

/** A group a member may join: its resource and the subscription route this process drains. */
export interface OpenedGroup {
  group: ResourceObject;
  route: SubscriptionRoute;
  ephemeral: boolean;
}

export interface SubscriptionsDeps {
  registry: ResourceRegistry;
  events: EventLog;
  deliveries: DeliveryState;
  groups: ConsumerGroups;
  /** The route of a subscription id, once the data plane has it. */
  route(id: string): SubscriptionRoute | undefined;
  /** Resolves once resources applied so far are reconciled and in the data plane. */
  settled(): Promise<void>;
  /** Deliveries were enqueued for a subscription (a replay): its lag grows, and its worker looks. */
  enqueued(route: SubscriptionRoute, n: number): void;
  /** Members this process holds at most (WebSocket, SSE and gRPC together); more are refused with 429. */
  maxMembers?: number | undefined;
  /** True when ingress serves this stream key (`ns/broker`, `channels/ns/name`). */
  streamExists(key: string): boolean;
  /** Events accepted by ingress and not yet stored (a replay waits for them). */
  pendingWrites(): number;
  logger: Logger;
}

const GROUP_API = 'eventing.trellis.dev/v1alpha1';
/** An ephemeral group left behind (its process died) goes after this long without a member. */
const EPHEMERAL_EXPIRY = 'PT5M';
/** Events enqueued per store write in a replay. */
const REPLAY_PAGE = 1000;
const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export class Subscriptions {
  private readonly beats = new Map<string, NodeJS.Timeout>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly d: SubscriptionsDeps) {}

  /** Finds or creates the group a request names, and has it in the data plane; throws the error to answer. */
  async open(req: SubscribeRequest): Promise<OpenedGroup> {
    // Each member costs a connection and (without a group) a resource: bounded per process.
    const max = this.d.maxMembers ?? 4096;
    let members = this.opening;
    for (const n of this.d.groups.counts().values()) members += n;
    if (members >= max)
      throw new TrellisError(
        'TRELLIS_ERR_TOO_MANY_MEMBERS',
        `${max} subscribers are connected to this server; retry later, or connect to another process of the mesh`,
        { retryAfter: 5 },
      );
    this.opening++;
    try {
      return await this.openGroup(req);
    } finally {
      this.opening--;
    }
  }

  /** Subscriptions being opened now (counted against the limit before they are members). */
  private opening = 0;

  private async openGroup(req: SubscribeRequest): Promise<OpenedGroup> {
    const { namespace } = req;
    if (req.group !== undefined && (req.group.length > 253 || !NAME.test(req.group)))
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        `group: must be a DNS-1123 label (a-z, 0-9, -), got '${req.group.slice(0, 60)}'`,
        { field: 'group' },
      );
    if (req.from !== undefined && parseStartPosition(req.from) === undefined)
      throw new TrellisError(
        'TRELLIS_ERR_BAD_REQUEST',
        `from: must be 'earliest', 'latest', an RFC 3339 time or a sequence number, got '${req.from.slice(0, 60)}'`,
        { field: 'from' },
      );
    const keys =
      req.target.kind === 'Broker'
        ? [`${namespace}/${req.target.name}`]
        : [`channels/${namespace}/${req.target.name}`, `inmemorychannels/${namespace}/${req.target.name}`];
    if (!keys.some((k) => this.d.streamExists(k)))
      throw req.target.kind === 'Broker'
        ? new TrellisError(
            'TRELLIS_ERR_BROKER_NOT_FOUND',
            `Broker ${namespace}/${req.target.name} does not exist`,
            {
              broker: `${namespace}/${req.target.name}`,
            },
          )
        : new TrellisError(
            'TRELLIS_ERR_DESTINATION_NOT_FOUND',
            `no Channel ${namespace}/${req.target.name}`,
            {
              path: `/${keys[0]}`,
            },
          );
    const ephemeral = req.group === undefined;
    const name = req.group ?? `${req.target.name.slice(0, 40)}-${randomBytes(6).toString('hex')}`;
    const def = this.kind();
    let group = await this.find(namespace, name);
    let created = false;
    if (group === undefined) {
      const spec: Record<string, unknown> = {
        [req.target.kind === 'Broker' ? 'broker' : 'channel']: req.target.name,
      };
      if (req.filter !== undefined && req.filter.trim() !== '') spec['filters'] = [{ cesql: req.filter }];
      if (req.from !== undefined) spec['from'] = req.from;
      if (req.ordered === true) spec['ordered'] = true;
      if (ephemeral) spec['expireAfter'] = EPHEMERAL_EXPIRY;
      try {
        const r = await this.d.registry.apply({
          apiVersion: GROUP_API,
          kind: 'ConsumerGroup',
          metadata: { name, namespace, ...(ephemeral ? { labels: { [EPHEMERAL_LABEL]: 'true' } } : {}) },
          spec,
        });
        group = r.object;
        created = r.action === 'created';
      } catch (err) {
        // Another member created it at the same moment: join that one.
        const other =
          err instanceof TrellisError && err.code === 'TRELLIS_ERR_CONFLICT'
            ? await this.find(namespace, name)
            : undefined;
        if (other !== undefined) {
          this.checkSame(other, req);
          group = other;
        } else {
          // The filter is the member's `filter` parameter, not a field of a document it wrote.
          if (err instanceof TrellisError && err.code === 'TRELLIS_ERR_RESOURCE_INVALID')
            throw new TrellisError(
              'TRELLIS_ERR_BAD_REQUEST',
              err.message.replace(/^spec\.filters\[0\]\.cesql/, 'filter'),
              { field: 'filter' },
            );
          throw err;
        }
      }
    } else this.checkSame(group, req);
    await this.d.settled();
    const stored = await this.d.registry.get(def, namespace, name);
    const route = this.d.route(stored.metadata.uid);
    if (route === undefined) {
      if (ephemeral) await this.d.registry.delete(def, namespace, name).catch(() => undefined);
      const why = readyMessage(stored);
      throw new TrellisError(
        'TRELLIS_ERR_GROUP_NOT_READY',
        `ConsumerGroup ${namespace}/${name} is not Ready${why ? `: ${why}` : ''}`,
        { group: name },
      );
    }
    const from = parseStartPosition((stored.spec as ConsumerGroupSpec).from ?? 'latest')!;
    if (created && from.kind !== 'latest') {
      const n = await this.replay(route, from);
      await this.d.registry
        .setStatus(
          'ConsumerGroup',
          namespace,
          name,
          {
            ...(stored.status ?? {}),
            replay: { from: req.from, events: n, completedAt: new Date().toISOString() },
          },
          undefined,
        )
        .catch(() => undefined);
    }
    return { group: stored, route, ephemeral };
  }

  /** Adds a member to an opened group; `send` gets each attempt. */
  join(g: OpenedGroup, window: number, send: (d: GroupDelivery) => void, label: string): Member {
    const m = this.d.groups.join(g.route.id, window, send, label);
    this.heartbeat(g);
    return m;
  }

  /** A member left: an ephemeral group goes with its last member; a durable one notes when it was last used. */
  async left(g: OpenedGroup, m: Member): Promise<void> {
    m.leave();
    if (this.d.groups.get(g.route.id) !== undefined) return;
    const t = this.beats.get(g.route.id);
    if (t !== undefined) clearInterval(t);
    this.beats.delete(g.route.id);
    const { namespace, name } = g.group.metadata;
    if (g.ephemeral) {
      await this.d.registry.delete(this.kind(), namespace, name).catch(() => undefined);
      return;
    }
    await this.touch(namespace, name);
  }

  /**
   * Enqueues the retained events of a subscription's stream from a position (up to `untilMs`, else those
   * that arrived before now) that its filter takes; resolves with how many. Events stored from now on
   * already have their delivery (the subscription is in the data plane): the first moments may repeat.
   */
  async replay(route: SubscriptionRoute, from: StartPosition, untilMs?: number): Promise<number> {
    // Events accepted before the subscription was in the data plane are stored first.
    for (let i = 0; i < 200 && this.d.pendingWrites() > 0; i++) await new Promise((r) => setTimeout(r, 5));
    const now = new Date(untilMs ?? Date.now()).toISOString();
    const fromIso = from.kind === 'time' ? new Date(from.ms).toISOString() : undefined;
    let after = from.kind === 'sequence' ? Math.max(0, from.seq - 1) : 0;
    let total = 0;
    for (;;) {
      const page = await this.d.events.read(route.stream, after, REPLAY_PAGE);
      if (page.length === 0) break;
      const take: { seq: number; event: CloudEvent }[] = [];
      let done = false;
      for (const x of page) {
        after = x.seq;
        const at = arrival(x.event);
        if (at !== undefined && at >= now) {
          done = true;
          break;
        }
        if (fromIso !== undefined && at !== undefined && at < fromIso) continue;
        if (route.predicate !== undefined && !route.predicate(x.event)) continue;
        take.push(x);
      }
      if (take.length > 0) {
        await this.d.deliveries.enqueue(route.id, route.stream, take);
        this.d.enqueued(route, take.length);
      }
      total += take.length;
      if (done || page.length < REPLAY_PAGE) break;
    }
    this.d.logger.info(
      { subscription: `${route.kind} ${route.namespace}/${route.name}`, from, events: total },
      'replayed retained events',
    );
    return total;
  }

  /**
   * Deletes groups with `expireAfter` that have had no member for that long (here or, by their
   * `lastActiveTime`, anywhere); runs every `everyMs` until {@link close}.
   */
  startSweeper(everyMs: number): void {
    this.sweeper = setInterval(() => void this.sweep().catch(() => undefined), everyMs);
    this.sweeper.unref();
  }

  async sweep(now = Date.now()): Promise<number> {
    let n = 0;
    for (const g of await this.d.registry.list(this.kind())) {
      const expire = (g.spec as ConsumerGroupSpec).expireAfter;
      if (expire === undefined || this.d.groups.get(g.metadata.uid) !== undefined) continue;
      const last = Date.parse(String(g.status?.['lastActiveTime'] ?? g.metadata.creationTimestamp));
      if (!(now - last >= (parseDuration(expire) ?? Number.POSITIVE_INFINITY))) continue;
      await this.d.registry.delete(this.kind(), g.metadata.namespace, g.metadata.name).catch(() => undefined);
      this.d.logger.info(
        { group: `${g.metadata.namespace}/${g.metadata.name}`, expireAfter: expire },
        'consumer group expired: no member for its expireAfter',
      );
      n++;
    }
    return n;
  }

  close(): void {
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    for (const t of this.beats.values()) clearInterval(t);
    this.beats.clear();
  }

  private kind(): KindDef {
    return findKind('ConsumerGroup')!;
  }

  private async find(namespace: string, name: string): Promise<ResourceObject | undefined> {
    try {
      return await this.d.registry.get(this.kind(), namespace, name);
    } catch (err) {
      if (err instanceof TrellisError && err.code === 'TRELLIS_ERR_RESOURCE_NOT_FOUND') return undefined;
      throw err;
    }
  }

  /** A member naming an existing group must not ask for another stream or filter than the group's. */
  private checkSame(g: ResourceObject, req: SubscribeRequest): void {
    const spec = g.spec as ConsumerGroupSpec;
    const target =
      spec.broker !== undefined
        ? { kind: 'Broker', name: spec.broker }
        : { kind: 'Channel', name: spec.channel };
    const name = `ConsumerGroup ${g.metadata.namespace}/${g.metadata.name}`;
    if (target.kind !== req.target.kind || target.name !== req.target.name)
      throw new TrellisError(
        'TRELLIS_ERR_GROUP_MISMATCH',
        `${name} reads ${target.kind} ${target.name}, not ${req.target.kind} ${req.target.name}; pick another group name`,
        { field: 'group' },
      );
    if (req.filter !== undefined && req.filter.trim() !== '') {
      const own =
        spec.filters?.length === 1 && 'cesql' in spec.filters[0]!
          ? (spec.filters[0] as { cesql: string }).cesql
          : undefined;
      if (own !== req.filter)
        throw new TrellisError(
          'TRELLIS_ERR_GROUP_MISMATCH',
          `${name} has another filter; members share the group's filter: subscribe without one, or pick another group name`,
          { field: 'filter' },
        );
    }
  }

  /** While a group has members here, its `lastActiveTime` is kept fresh (often enough for its expiry). */
  private heartbeat(g: OpenedGroup): void {
    const { namespace, name } = g.group.metadata;
    if (this.beats.has(g.route.id)) return;
    void this.touch(namespace, name);
    const expire = parseDuration((g.group.spec as ConsumerGroupSpec).expireAfter ?? '') ?? 180_000;
    const t = setInterval(
      () => void this.touch(namespace, name),
      Math.min(60_000, Math.max(1000, expire / 3)),
    );
    t.unref();
    this.beats.set(g.route.id, t);
  }

  private async touch(namespace: string, name: string): Promise<void> {
    try {
      const cur = await this.d.registry.get(this.kind(), namespace, name);
      await this.d.registry.setStatus(
        'ConsumerGroup',
        namespace,
        name,
        { ...(cur.status ?? {}), lastActiveTime: new Date().toISOString() },
        undefined,
      );
    } catch {
      // Deleted meanwhile, or the store is away for a moment: the next beat tries again.
    }
  }
}

/** When an event arrived (ingress's `knativearrivaltime`, else its `time`), as an ISO string. */
function arrival(e: CloudEvent): string | undefined {
  const v = e.attrs['knativearrivaltime'] ?? e.attrs['time'];
  if (v === undefined) return undefined;
  const ms = Date.parse(String(v));
  return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined;
}

function readyMessage(o: ResourceObject): string | undefined {
  const conds = (o.status?.['conditions'] ?? []) as { type: string; message?: string }[];
  if (isReady(o)) return undefined;
  return conds.find((c) => c.type === 'Ready')?.message;
}
