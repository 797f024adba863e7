/**
 * The status reconciler: watches resources, works out each one's conditions and addresses (a Trigger may be
 * applied before its Broker and turns Ready when the Broker appears), writes status, and hands the Ready
 * state to the data plane through `onChange`.
 * @module
 */
import type { ResourceObject, ResourceStore } from '../store/types.js';
import type { BrokerSpec } from './broker.js';
import type { Destination } from './delivery-spec.js';
import type { ResourceRegistry } from './registry.js';
import type { TriggerSpec } from './trigger.js';

export interface Snapshot {
  brokers: ResourceObject[];
  triggers: ResourceObject[];
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

  constructor(
    private readonly store: ResourceStore,
    private readonly registry: ResourceRegistry,
    private readonly publicUrl: string,
    private readonly onChange: (s: Snapshot) => void,
  ) {}

  /** Reconciles everything once, then on every change. */
  async start(): Promise<void> {
    this.stopWatch = this.store.watch(() => this.schedule());
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
    const brokers = await this.store.list('Broker');
    const triggers = await this.store.list('Trigger');
    const brokerUrls = new Map<string, string>();
    for (const b of brokers) {
      brokerUrls.set(
        `${b.metadata.namespace}/${b.metadata.name}`,
        brokerAddress(this.publicUrl, b.metadata.namespace, b.metadata.name),
      );
    }
    const resolve = (d: Destination): { uri?: string; error?: string } => {
      if (d.ref === undefined) return { uri: d.uri! };
      const base = brokerUrls.get(`${d.ref.namespace}/${d.ref.name}`);
      if (base === undefined)
        return { error: `${d.ref.kind} ${d.ref.namespace}/${d.ref.name} does not exist` };
      return { uri: d.uri ? new URL(d.uri, base.endsWith('/') ? base : `${base}/`).toString() : base };
    };
    for (const b of brokers) {
      const spec = b.spec as BrokerSpec;
      const conds: Cond[] = [ok('Addressable'), ok('IngressReady')];
      const status: Record<string, unknown> = {
        observedGeneration: b.metadata.generation,
        address: { url: brokerUrls.get(`${b.metadata.namespace}/${b.metadata.name}`) },
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
      await this.registry.setStatus('Broker', b.metadata.namespace, b.metadata.name, status, b);
      b.status = status;
    }
    const readyBrokers = new Set(
      brokers.filter((b) => isReady(b)).map((b) => `${b.metadata.namespace}/${b.metadata.name}`),
    );
    for (const t of triggers) {
      const spec = t.spec as unknown as TriggerSpec;
      const ns = t.metadata.namespace;
      const conds: Cond[] = [];
      const status: Record<string, unknown> = { observedGeneration: t.metadata.generation };
      const key = `${ns}/${spec.broker}`;
      if (readyBrokers.has(key)) conds.push(ok('BrokerReady'));
      else if (brokerUrls.has(key))
        conds.push(notOk('BrokerReady', 'BrokerNotReady', `Broker ${key} is not Ready`));
      else
        conds.push(
          notOk(
            'BrokerReady',
            'BrokerDoesNotExist',
            `Broker ${key} does not exist; apply it and this Trigger turns Ready`,
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
      status['conditions'] = ready(conds);
      await this.registry.setStatus('Trigger', ns, t.metadata.name, status, t);
      t.status = status;
    }
    this.onChange({ brokers, triggers });
  }
}

/** True when a resource's Ready condition is True. */
export function isReady(r: ResourceObject): boolean {
  const conds = r.status?.['conditions'] as Cond[] | undefined;
  return conds?.find((c) => c.type === 'Ready')?.status === 'True';
}
