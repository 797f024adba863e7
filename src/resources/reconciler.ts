/**
 * The status reconciler: watches resources, works out each one's conditions and addresses (a Trigger may be
 * applied before its Broker and turns Ready when the Broker appears), writes status, and hands the Ready
 * state to the data plane through `onChange`.
 * @module
 */
import type { ResourceEvent, ResourceObject, ResourceStore } from '../store/types.js';
import type { BrokerSpec } from './broker.js';
import type { Destination } from './delivery-spec.js';
import type { ResourceRegistry } from './registry.js';
import { type TriggerSpec, triggerWarnings } from './trigger.js';

/** Every Broker and Trigger by `namespace/name`, and which of them changed since the last snapshot. */
export interface Snapshot {
  brokers: ReadonlyMap<string, ResourceObject>;
  triggers: ReadonlyMap<string, ResourceObject>;
  /** The keys reconciled in this run (deleted ones included); undefined when everything was. */
  changed?: { brokers: ReadonlySet<string>; triggers: ReadonlySet<string> } | undefined;
}

interface Cond {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason?: string;
  message?: string;
}

/** The URL of a Broker's ingress. */
export function brokerAddress(publicUrl: string, namespace: string, name: string): string {
  return `${publicUrl.replace(/\/$/, '')}/${namespace}/${name}`;
}

function ok(type: string): Cond {
  return { type, status: 'True' };
}
function notOk(type: string, reason: string, message: string): Cond {
  return { type, status: 'False', reason, message };
}
function ready(conds: Cond[]): Cond[] {
  const bad = conds.find((c) => c.status !== 'True');
  return [bad ? { ...bad, type: 'Ready' } : ok('Ready'), ...conds];
}

export class StatusReconciler {
  private scheduled = false;
  private running: Promise<void> | undefined;
  private again = false;
  private stopWatch: (() => void) | undefined;
  /** Every Broker and Trigger, by `namespace/name`, kept current from the store's watch. */
  private readonly brokers = new Map<string, ResourceObject>();
  private readonly triggers = new Map<string, ResourceObject>();
  /** What to recompute on the next run: everything, or these keys. */
  private all = true;
  private readonly dirtyBrokers = new Set<string>();
  private readonly dirtyTriggers = new Set<string>();
  private changed = true;

  constructor(
    private readonly store: ResourceStore,
    private readonly registry: ResourceRegistry,
    private readonly publicUrl: string,
    private readonly onChange: (s: Snapshot) => void,
  ) {}

  /** Loads every resource, reconciles them all once, then only what each change touches. */
  async start(): Promise<void> {
    this.stopWatch = this.store.watch((e) => this.onEvent(e));
    for (const b of await this.store.list('Broker')) this.brokers.set(keyOf(b), b);
    for (const t of await this.store.list('Trigger')) this.triggers.set(keyOf(t), t);
    this.all = true;
    await this.reconcileAll();
  }

  stop(): void {
    this.stopWatch?.();
  }

  /** Resolves once every change seen so far has been reconciled. */
  async settled(): Promise<void> {
    while (this.scheduled || this.running) {
      await (this.running ?? new Promise((r) => setImmediate(r)));
    }
  }

  private onEvent(e: ResourceEvent): void {
    const o = e.object;
    const map = o.kind === 'Broker' ? this.brokers : o.kind === 'Trigger' ? this.triggers : undefined;
    if (map === undefined) return;
    const key = keyOf(o);
    const prev = map.get(key);
    if (e.type === 'DELETED') {
      map.delete(key);
      if (o.kind === 'Broker') {
        this.dirtyBrokers.add(key);
        this.markDependents(key);
      } else this.dirtyTriggers.add(key);
    } else {
      map.set(key, o);
      // A status write (this reconciler's own) changes neither spec nor annotations: nothing to redo.
      const same =
        prev !== undefined &&
        prev.metadata.uid === o.metadata.uid &&
        prev.metadata.generation === o.metadata.generation &&
        JSON.stringify(prev.metadata.annotations) === JSON.stringify(o.metadata.annotations);
      if (same) return;
      if (o.kind === 'Broker') {
        this.dirtyBrokers.add(key);
        this.markDependents(key);
      } else this.dirtyTriggers.add(key);
    }
    this.changed = true;
    this.schedule();
  }

  /** Marks what depends on a Broker: its Triggers, and whatever refers to it as subscriber or dead-letter sink. */
  private markDependents(brokerKey: string): void {
    const refersTo = (ns: string, d: Destination | undefined) =>
      d?.ref !== undefined && `${d.ref.namespace ?? ns}/${d.ref.name}` === brokerKey;
    for (const [k, t] of this.triggers) {
      const spec = t.spec as unknown as TriggerSpec;
      const ns = t.metadata.namespace;
      if (
        `${ns}/${spec.broker}` === brokerKey ||
        refersTo(ns, spec.subscriber) ||
        refersTo(ns, spec.delivery?.deadLetterSink)
      ) {
        this.dirtyTriggers.add(k);
      }
    }
    for (const [k, b] of this.brokers) {
      if (refersTo(b.metadata.namespace, (b.spec as BrokerSpec).delivery?.deadLetterSink))
        this.dirtyBrokers.add(k);
    }
  }

  private schedule(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.reconcileAll();
    });
  }

  private async reconcileAll(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.run().finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.schedule();
      }
    });
    return this.running;
  }

  private async run(): Promise<void> {
    const everything = this.all;
    const brokerKeys = this.all ? [...this.brokers.keys()] : [...this.dirtyBrokers];
    const triggerKeys = this.all ? [...this.triggers.keys()] : [...this.dirtyTriggers];
    const changed = this.changed || this.all;
    this.all = false;
    this.changed = false;
    this.dirtyBrokers.clear();
    this.dirtyTriggers.clear();
    if (!changed && brokerKeys.length === 0 && triggerKeys.length === 0) return;

    // Brokers' statuses are written before Triggers are computed (a Trigger reads its Broker's Ready);
    // within each kind, writes go out together so that they share the store's commits.
    const writes = new WriteWindow(256);
    const brokerUrl = (key: string) => {
      const b = this.brokers.get(key);
      return b && brokerAddress(this.publicUrl, b.metadata.namespace, b.metadata.name);
    };
    const resolve = (d: Destination): { uri?: string; error?: string } => {
      if (d.ref === undefined) return { uri: d.uri! };
      const base = brokerUrl(`${d.ref.namespace}/${d.ref.name}`);
      if (base === undefined)
        return { error: `${d.ref.kind} ${d.ref.namespace}/${d.ref.name} does not exist` };
      return { uri: d.uri ? new URL(d.uri, base.endsWith('/') ? base : `${base}/`).toString() : base };
    };
    for (const key of brokerKeys) {
      const b = this.brokers.get(key);
      if (b === undefined) continue;
      const spec = b.spec as BrokerSpec;
      const conds: Cond[] = [ok('Addressable'), ok('IngressReady')];
      const status: Record<string, unknown> = {
        observedGeneration: b.metadata.generation,
        address: { url: brokerUrl(key) },
      };
      if (spec.delivery?.deadLetterSink) {
        const r = resolve(spec.delivery.deadLetterSink);
        if (r.uri) {
          conds.push(ok('DeadLetterSinkResolved'));
          status['deadLetterSinkUri'] = r.uri;
        } else
          conds.push(
            notOk('DeadLetterSinkResolved', 'Unresolved', `spec.delivery.deadLetterSink: ${r.error}`),
          );
      }
      status['conditions'] = ready(conds);
      await writes.add(this.write(this.brokers, key, b, status));
    }
    await writes.drain();
    for (const key of triggerKeys) {
      const t = this.triggers.get(key);
      if (t === undefined) continue;
      const spec = t.spec as unknown as TriggerSpec;
      const ns = t.metadata.namespace;
      const conds: Cond[] = [];
      const status: Record<string, unknown> = { observedGeneration: t.metadata.generation };
      const bkey = `${ns}/${spec.broker}`;
      const broker = this.brokers.get(bkey);
      if (broker !== undefined && isReady(broker)) conds.push(ok('BrokerReady'));
      else if (broker !== undefined)
        conds.push(notOk('BrokerReady', 'BrokerNotReady', `Broker ${bkey} is not Ready`));
      else
        conds.push(
          notOk(
            'BrokerReady',
            'BrokerDoesNotExist',
            `Broker ${bkey} does not exist; apply it and this Trigger turns Ready`,
          ),
        );
      const sub = resolve(spec.subscriber);
      if (sub.uri) {
        conds.push(ok('SubscriberResolved'));
        status['subscriberUri'] = sub.uri;
      } else conds.push(notOk('SubscriberResolved', 'Unresolved', `spec.subscriber: ${sub.error}`));
      const dls = spec.delivery?.deadLetterSink;
      if (dls) {
        const r = resolve(dls);
        if (r.uri) {
          conds.push(ok('DeadLetterSinkResolved'));
          status['deadLetterSinkUri'] = r.uri;
        } else
          conds.push(
            notOk('DeadLetterSinkResolved', 'Unresolved', `spec.delivery.deadLetterSink: ${r.error}`),
          );
      }
      const warnings = triggerWarnings(t.spec);
      if (warnings.length > 0)
        conds.push({
          type: 'FiltersValid',
          status: 'True',
          reason: 'EmptyFilter',
          message: warnings.join('; '),
        });
      status['conditions'] = ready(conds);
      await writes.add(this.write(this.triggers, key, t, status));
    }
    await writes.drain();
    this.onChange({
      brokers: this.brokers,
      triggers: this.triggers,
      changed: everything ? undefined : { brokers: new Set(brokerKeys), triggers: new Set(triggerKeys) },
    });
  }

  /** Stores a status; the cache gets the stored object through the watch, or keeps this one if unchanged. */
  private async write(
    map: Map<string, ResourceObject>,
    key: string,
    o: ResourceObject,
    status: Record<string, unknown>,
  ): Promise<void> {
    await this.registry.setStatus(o.kind, o.metadata.namespace, o.metadata.name, status, o);
    const now = map.get(key);
    // If the watch did not bring a stored copy (nothing was written), keep the computed status in the cache.
    if (now === o && now.status === undefined) map.set(key, { ...o, status });
  }
}

/** Keeps up to `size` writes in flight; `add` waits when the window is full. */
class WriteWindow {
  private readonly inflight = new Set<Promise<void>>();
  private error: unknown;
  constructor(private readonly size: number) {}
  async add(p: Promise<void>): Promise<void> {
    const tracked = p.then(
      () => {
        this.inflight.delete(tracked);
      },
      (err: unknown) => {
        this.inflight.delete(tracked);
        this.error ??= err;
      },
    );
    this.inflight.add(tracked);
    if (this.inflight.size >= this.size) await Promise.race(this.inflight);
  }
  async drain(): Promise<void> {
    await Promise.all(this.inflight);
    if (this.error !== undefined) {
      const e = this.error;
      this.error = undefined;
      throw e;
    }
  }
}

function keyOf(o: ResourceObject): string {
  return `${o.metadata.namespace}/${o.metadata.name}`;
}

/** True when a resource's Ready condition is True. */
export function isReady(r: ResourceObject): boolean {
  const conds = r.status?.['conditions'] as Cond[] | undefined;
  return conds?.find((c) => c.type === 'Ready')?.status === 'True';
}
