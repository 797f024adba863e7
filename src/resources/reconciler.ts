/**
 * The status reconciler: watches every resource, works out each one's status with its kind's
 * `reconcile` (conditions, addresses, resolved destinations), writes it, and hands the result to the data
 * plane through `onChange`. What a resource looked at while it was reconciled (its Broker, the target of
 * a `ref`) is remembered: when that changes, or appears, the resource is reconciled again, so a Trigger
 * applied before its Broker turns Ready when the Broker does.
 * @module
 */
import type { ResourceEvent, ResourceObject, ResourceStore } from '../store/types.js';
import { addressAudience, addressUrl } from './addressing.js';
import { type Cond, isReady } from './conditions.js';
import type { ReconcileContext, Resolved } from './context.js';
import type { Destination } from './delivery-spec.js';
import { type EventPolicySpec, policyApplies } from './eventpolicy.js';
import { KINDS, type KindDef, kindOfDocument } from './kinds.js';
import type { ResourceRegistry } from './registry.js';
import { serviceAddress } from './service.js';

export { isReady } from './conditions.js';

/** Every resource by kind, then by `namespace/name`, and which of them changed since the last snapshot. */
export interface Snapshot {
  resources: ReadonlyMap<string, ReadonlyMap<string, ResourceObject>>;
  /** Resources reconciled in this run (deleted ones included), as `Kind/namespace/name`; undefined: all. */
  changed?: ReadonlySet<string> | undefined;
}

/** `Kind/namespace/name`. */
export function resourceId(kind: string, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`;
}

function idOf(o: ResourceObject): string {
  return resourceId(o.kind, o.metadata.namespace, o.metadata.name);
}

/** How many rounds a run may take while Ready changes ripple from resource to resource. */
const MAX_ROUNDS = 8;

export class StatusReconciler {
  private scheduled = false;
  private running: Promise<void> | undefined;
  private again = false;
  private stopWatch: (() => void) | undefined;
  /** Every resource, kept current from the store's watch. */
  private readonly objects = new Map<string, Map<string, ResourceObject>>();
  /** What each resource looked at when it was last reconciled, and the reverse. */
  private readonly uses = new Map<string, Set<string>>();
  private readonly usedBy = new Map<string, Set<string>>();
  private all = true;
  private readonly dirty = new Set<string>();
  private readonly phases: KindDef[][];
  private readonly kinds = new Map(KINDS.map((k) => [k.kind, k]));

  constructor(
    private readonly store: ResourceStore,
    private readonly registry: ResourceRegistry,
    private readonly publicUrl: string,
    private readonly onChange: (s: Snapshot) => void,
    /** Server settings statuses depend on (`--allow-commands`). */
    private readonly features: ReconcileContext['features'] = { allowCommands: false },
  ) {
    for (const k of KINDS) this.objects.set(k.kind, new Map());
    const phases = new Map<number, KindDef[]>();
    for (const k of KINDS) {
      const p = k.phase ?? 1;
      phases.set(p, [...(phases.get(p) ?? []), k]);
    }
    this.phases = [...phases.entries()].sort((a, b) => a[0] - b[0]).map(([, ks]) => ks);
  }

  /** Loads every resource, reconciles them all once, then only what each change touches. */
  async start(): Promise<void> {
    this.stopWatch = this.store.watch((e) => this.onEvent(e));
    for (const k of KINDS) {
      const m = this.objects.get(k.kind)!;
      for (const o of await this.store.list(k.kind)) m.set(`${o.metadata.namespace}/${o.metadata.name}`, o);
    }
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
    const map = this.objects.get(o.kind);
    if (map === undefined) return;
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
    const prev = map.get(key);
    const id = idOf(o);
    if (e.type === 'DELETED') map.delete(key);
    else {
      map.set(key, o);
      // A status write (this reconciler's own) changes neither spec nor metadata: nothing to redo.
      const same =
        prev !== undefined &&
        prev.metadata.uid === o.metadata.uid &&
        prev.metadata.generation === o.metadata.generation &&
        JSON.stringify(prev.metadata.annotations) === JSON.stringify(o.metadata.annotations) &&
        JSON.stringify(prev.metadata.labels) === JSON.stringify(o.metadata.labels) &&
        (this.kinds.get(o.kind)?.statusInputs ?? []).every(
          (f) => JSON.stringify(prev.status?.[f]) === JSON.stringify(o.status?.[f]),
        );
      if (same) return;
    }
    this.dirty.add(id);
    for (const d of this.usedBy.get(id) ?? []) this.dirty.add(d);
    for (const d of this.usedBy.get(`${o.kind}/*`) ?? []) this.dirty.add(d);
    this.schedule();
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

  private get(id: string): ResourceObject | undefined {
    const [kind, ns, name] = id.split('/');
    return this.objects.get(kind!)?.get(`${ns}/${name}`);
  }

  private async run(): Promise<void> {
    const everything = this.all;
    let todo = new Set<string>();
    if (everything) {
      for (const [kind, m] of this.objects) for (const k of m.keys()) todo.add(`${kind}/${k}`);
    } else for (const id of this.dirty) todo.add(id);
    this.all = false;
    this.dirty.clear();
    if (todo.size === 0) return;
    const changed = new Set<string>(todo);
    // Resources reconcile in phases (stream owners such as Brokers and Channels first), and within a
    // phase their status writes go out together so that they share the store's commits. When a
    // resource's Ready flips, what looks at it is reconciled again, in this round or the next.
    for (let round = 0; round < MAX_ROUNDS && todo.size > 0; round++) {
      const next = new Set<string>();
      const done = new Set<string>();
      for (const phase of this.phases) {
        const writes = new WriteWindow(256);
        const flipped: string[] = [];
        for (const def of phase) {
          for (const id of todo) {
            if (!id.startsWith(`${def.kind}/`)) continue;
            done.add(id);
            const o = this.get(id);
            if (o === undefined) {
              this.forget(id);
              flipped.push(id);
              continue;
            }
            if (def.reconcile === undefined) continue;
            const ctx = this.context(id);
            const status = def.reconcile(o, ctx);
            // With authentication on, an addressable says which audience its senders' tokens must name,
            // and which EventPolicies apply to it.
            const address = status['address'] as { url?: string; audience?: string } | undefined;
            if (this.features.authentication === true && address?.url !== undefined) {
              const audience = addressAudience(def.kind, o.metadata.namespace, o.metadata.name);
              if (audience !== undefined) {
                status['address'] = { ...address, audience };
                const applying = ctx
                  .list('EventPolicy')
                  .filter(
                    (p) =>
                      isReady(p) &&
                      policyApplies(p.spec as unknown as EventPolicySpec, p.metadata.namespace, o),
                  )
                  .map((p) => ({ apiVersion: p.apiVersion, name: p.metadata.name }));
                if (applying.length > 0) status['policies'] = applying;
              }
            }
            if (isReady(o) !== isReady({ ...o, status })) flipped.push(id);
            await writes.add(this.write(o, status, def.preservedStatus));
          }
        }
        await writes.drain();
        for (const id of flipped) {
          for (const d of this.usedBy.get(id) ?? []) {
            if (done.has(d)) next.add(d);
            else todo.add(d);
            changed.add(d);
          }
        }
      }
      todo = next;
    }
    this.onChange({ resources: this.objects, changed: everything ? undefined : changed });
  }

  private forget(id: string): void {
    for (const t of this.uses.get(id) ?? []) this.usedBy.get(t)?.delete(id);
    this.uses.delete(id);
  }

  /** The context a kind's reconcile sees; every look-up is recorded as a dependency of `id`. */
  private context(id: string): ReconcileContext {
    this.forget(id);
    const uses = new Set<string>();
    this.uses.set(id, uses);
    const use = (target: string) => {
      uses.add(target);
      let s = this.usedBy.get(target);
      if (s === undefined) {
        s = new Set();
        this.usedBy.set(target, s);
      }
      s.add(id);
    };
    const get = (kind: string, ns: string, name: string) => {
      const t = resourceId(kind, ns, name);
      use(t);
      return this.get(t);
    };
    const publicUrl = this.publicUrl;
    // A destination the destination rules refuse (an address in a denied network) does not resolve.
    const resolve = (d: Destination): Resolved => {
      const r = resolveRef(d);
      if (!('uri' in r)) return r;
      const why = this.features.deniedDestination?.(r.uri);
      return why === undefined
        ? r
        : { reason: 'DestinationDenied', message: `${r.uri}: deliveries there are refused: ${why}` };
    };
    const resolveRef = (d: Destination): Resolved => {
      if (d.ref === undefined) return { uri: d.uri! };
      const { kind, apiVersion, name, namespace: ns } = d.ref;
      let base: string | undefined;
      const def = kindOfDocument(kind, apiVersion);
      // A program Trellis runs (a Knative Service): where it listens, once it does. Without one of that
      // name, a v1 Service of the name may still say where it is (below).
      const runs = def?.addressOf !== undefined ? get(def.kind, ns, name) : undefined;
      if (def?.addressable) {
        const target = get(def.kind, ns, name);
        if (target === undefined)
          return {
            reason: 'NotFound',
            message: `${kind} ${ns}/${name} does not exist; apply it and this turns Ready`,
          };
        base = addressUrl(publicUrl, def.kind, ns, name);
      } else if (runs !== undefined) {
        base = def!.addressOf!(runs);
        if (base === undefined)
          return {
            reason: 'NoAddress',
            message: `${kind} ${ns}/${name} (${apiVersion}) has no address yet: ${notReadyWhy(runs)}`,
          };
      } else {
        // A kind Trellis does not serve (a Kubernetes or Knative Serving Service): it resolves through a
        // v1 Service of the same name that says where it is.
        const svc = get('Service', ns, name);
        base = svc === undefined ? undefined : serviceAddress(svc);
        if (base === undefined) {
          return {
            reason: 'Unresolvable',
            message:
              `${kind} ${ns}/${name} (${apiVersion}) has no address Trellis knows: Trellis runs without Kubernetes. ` +
              (def?.addressOf !== undefined
                ? `Apply a ${kind} (${apiVersion}) named '${name}' with a command for Trellis to run, or give it an address with`
                : 'Give it one with') +
              ` a v1 Service named '${name}' in namespace '${ns}' of type ExternalName ` +
              `(or annotated trellis.dev/address: http://host:port/), or use uri: http://host:port/ instead of ref`,
          };
        }
      }
      return { uri: d.uri ? new URL(d.uri, base.endsWith('/') ? base : `${base}/`).toString() : base };
    };
    const list = (kind: string) => {
      use(`${kind}/*`);
      return [...(this.objects.get(kind)?.values() ?? [])];
    };
    return {
      publicUrl,
      features: this.features,
      get,
      list,
      resolve,
      address: (kind, ns, name) => addressUrl(publicUrl, kind, ns, name),
    };
  }

  /** Stores a status; the cache gets the stored object through the watch, or keeps this one if unchanged. */
  private async write(
    o: ResourceObject,
    status: Record<string, unknown>,
    preserve: readonly string[] = [],
  ): Promise<void> {
    await this.registry.setStatus(o.kind, o.metadata.namespace, o.metadata.name, status, o, preserve);
    const map = this.objects.get(o.kind)!;
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
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

/** Why a resource is not Ready, from its Ready condition. */
function notReadyWhy(o: ResourceObject): string {
  const c = (o.status?.['conditions'] as Cond[] | undefined)?.find((x) => x.type === 'Ready');
  return c?.message ?? 'it has not started';
}
