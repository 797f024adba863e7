/**
 * EventType auto-registration: ingress tells the recorder which types it stored on which Broker or
 * Channel (a map update per request, off the hot path's critical work); every few seconds the recorder
 * creates an EventType for each type not yet registered and records how often it was seen. Bounded: a
 * sender inventing types cannot make it create EventTypes without end.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import type { Logger, StreamRoute } from '../dataplane/routes.js';
import { AUTO_CREATED_LABEL, autoEventTypeName } from '../resources/eventtype.js';
import { apiVersionOf, KINDS } from '../resources/kinds.js';
import type { ResourceRegistry } from '../resources/registry.js';
import type { ResourceObject, ResourceStore } from '../store/types.js';

export interface RecorderOptions {
  enabled: boolean;
  /** Most auto-created EventTypes per Broker or Channel. */
  maxPerStream: number;
  /** Most auto-created EventTypes in all. */
  maxTotal: number;
}

interface Seen {
  ref: NonNullable<StreamRoute['ref']>;
  stream: string;
  type: string;
  count: number;
  first: string;
  last: string;
  lastSource: string;
}

const EVENTTYPE_API = apiVersionOf(KINDS.find((k) => k.kind === 'EventType')!);

export class EventTypeRecorder {
  private pending = new Map<string, Seen>();
  private perStream: Map<string, number> | undefined;
  private total = 0;
  private warned = false;

  constructor(
    private readonly registry: ResourceRegistry,
    private readonly store: ResourceStore,
    private readonly declared: (stream: string, type: string) => ResourceObject[],
    private readonly logger: Logger,
    private readonly opts: RecorderOptions,
  ) {}

  /** Ingress hook: notes the types of events stored on a Broker or Channel. */
  stored(stream: StreamRoute, events: readonly CloudEvent[]): void {
    if (!this.opts.enabled || stream.ref === undefined) return;
    const now = new Date().toISOString();
    for (const e of events) {
      const type = String(e.attrs['type']);
      const key = `${stream.key}\u0000${type}`;
      const s = this.pending.get(key);
      if (s !== undefined) {
        s.count++;
        s.last = now;
        s.lastSource = String(e.attrs['source']);
      } else if (this.pending.size < this.opts.maxTotal) {
        this.pending.set(key, {
          ref: stream.ref,
          stream: stream.key,
          type,
          count: 1,
          first: now,
          last: now,
          lastSource: String(e.attrs['source']),
        });
      }
    }
  }

  /** Writes what was seen since the last flush: new EventTypes, and counts on existing ones. */
  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = [...this.pending.values()];
    this.pending = new Map();
    if (this.perStream === undefined) {
      this.perStream = new Map();
      for (const et of await this.store.list('EventType')) {
        if (et.metadata.labels?.[AUTO_CREATED_LABEL] !== 'true') continue;
        const ref = (et.spec as { reference?: { kind: string; namespace: string; name: string } }).reference;
        const k = ref ? `${ref.kind}/${ref.namespace}/${ref.name}` : '';
        this.perStream.set(k, (this.perStream.get(k) ?? 0) + 1);
        this.total++;
      }
    }
    for (const s of batch) {
      try {
        await this.record(s);
      } catch (err) {
        this.logger.warn({ err, type: s.type, stream: s.stream }, 'recording an EventType failed');
      }
    }
  }

  private async record(s: Seen): Promise<void> {
    let targets = this.declared(s.stream, s.type);
    if (targets.length === 0) {
      const name = autoEventTypeName(s.stream, s.type);
      const existing = await this.store.get('EventType', s.ref.namespace, name);
      if (existing !== undefined) targets = [existing];
      else {
        const refKey = `${s.ref.kind}/${s.ref.namespace}/${s.ref.name}`;
        const n = this.perStream!.get(refKey) ?? 0;
        if (n >= this.opts.maxPerStream || this.total >= this.opts.maxTotal) {
          if (!this.warned) {
            this.warned = true;
            this.logger.warn(
              { stream: s.stream, maxPerStream: this.opts.maxPerStream, maxTotal: this.opts.maxTotal },
              'not registering more EventTypes automatically: the limit is reached (declare the ones you need)',
            );
          }
          return;
        }
        const r = await this.registry.apply(
          {
            apiVersion: EVENTTYPE_API,
            kind: 'EventType',
            metadata: { name, namespace: s.ref.namespace, labels: { [AUTO_CREATED_LABEL]: 'true' } },
            spec: {
              reference: s.ref,
              description: `Seen at ${s.ref.kind} ${s.ref.namespace}/${s.ref.name}; registered by Trellis`,
              attributes: [
                { name: 'type', value: s.type, required: true },
                { name: 'source', required: true },
              ],
            },
          },
          s.ref.namespace,
        );
        this.perStream!.set(refKey, n + 1);
        this.total++;
        targets = [r.object];
      }
    }
    for (const t of targets) {
      const cur = await this.store.get('EventType', t.metadata.namespace, t.metadata.name);
      if (cur === undefined) continue;
      const prev = (cur.status?.['seen'] ?? {}) as { count?: number; firstSeen?: string };
      const seen = {
        count: (prev.count ?? 0) + s.count,
        firstSeen: prev.firstSeen ?? s.first,
        lastSeen: s.last,
        lastSource: s.lastSource,
      };
      await this.registry.setStatus(
        'EventType',
        cur.metadata.namespace,
        cur.metadata.name,
        { ...(cur.status ?? {}), seen },
        cur,
      );
    }
  }
}
