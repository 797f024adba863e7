/**
 * Runs the ApiServerSources: watches every resource change in the store and, for each Ready
 * ApiServerSource that watches the changed kind (namespace, labels), stores an event in the source's
 * stream, from which the delivery engine sends it to the sink. With a store shared by several processes
 * one process holds the `apiserversources` lease and makes the events, so each change is sent once; a
 * change made while the lease moves (the holder died) is not sent.
 * @module
 */
import { randomUUID } from 'node:crypto';
import type { CloudEvent } from '../cloudevents/event.js';
import type { Logger } from '../dataplane/routes.js';
import { changeEvent, passesFilters, watches } from '../resources/apiserversource.js';
import { isReady } from '../resources/conditions.js';
import { KINDS, present } from '../resources/kinds.js';
import type { ResourceEvent, ResourceObject, ResourceStore, Store } from '../store/types.js';
import { sourceStream } from './scheduler.js';

export interface ApiServerDeps {
  resources: ResourceStore;
  accept(stream: string, events: CloudEvent[]): Promise<void>;
  publicUrl: string;
  logger: Logger;
  holdLease?: Store['holdLease'];
}

/** The API path of a resource, as Knative writes an event's subject. */
function apiPath(o: ResourceObject, group: string, plural: string): string {
  const base = group === '' ? `/api/${o.apiVersion}` : `/apis/${o.apiVersion}`;
  return `${base}/namespaces/${o.metadata.namespace}/${plural}/${o.metadata.name}`;
}

export class ApiServerSources {
  private sources: ResourceObject[] = [];
  private held: boolean;
  private readonly stopWatch: () => void;
  private readonly stopLease: (() => void) | undefined;
  private stopped = false;

  constructor(private readonly deps: ApiServerDeps) {
    this.held = deps.holdLease === undefined;
    this.stopLease = deps.holdLease?.('apiserversources', (held) => {
      this.held = held;
      deps.logger.info(
        { held },
        held
          ? 'this process now sends ApiServerSource events'
          : 'another process sends ApiServerSource events',
      );
    });
    this.stopWatch = deps.resources.watch((e) => this.onChange(e));
  }

  /** The ApiServerSources, from a reconciled snapshot (only Ready ones send). */
  update(sources: Iterable<ResourceObject>): void {
    this.sources = [...sources].filter((o) => isReady(o));
  }

  private onChange(e: ResourceEvent): void {
    if (!this.held || this.stopped || this.sources.length === 0) return;
    const def = KINDS.find((k) => k.kind === e.object.kind);
    if (def === undefined) return; // the store's own records, not resources
    const obj = present(e.object);
    const verb = e.type === 'ADDED' ? 'add' : e.type === 'DELETED' ? 'delete' : 'update';
    for (const src of this.sources) {
      if (!watches(src, obj)) continue;
      const event = changeEvent(
        src,
        obj,
        verb,
        apiPath(obj, def.group, def.plural),
        this.deps.publicUrl,
        randomUUID(),
      );
      if (passesFilters(src, event)) void this.send(src, event);
    }
  }

  private async send(src: ResourceObject, event: CloudEvent): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await this.deps.accept(sourceStream(src), [event]);
        return;
      } catch (err) {
        if (i >= 9 || this.stopped) {
          this.deps.logger.error(
            {
              err,
              source: `ApiServerSource ${src.metadata.namespace}/${src.metadata.name}`,
              type: event.attrs['type'],
            },
            'storing an ApiServerSource event failed; it is lost',
          );
          return;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  stop(): void {
    this.stopped = true;
    this.stopWatch();
    this.stopLease?.();
  }
}
