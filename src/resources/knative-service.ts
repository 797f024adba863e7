/**
 * Knative Serving's Service (`serving.knative.dev/v1`): Knative runs `template.spec.containers[0]` with
 * `PORT` in its environment and routes HTTP to it. Trellis runs that container's `command` as a local
 * process (the supervisor ContainerSources use), with `PORT` set (the container's `containerPort`, or a
 * free port), and makes `http://HOST:PORT/` its address: a `ref` to the Service (a Trigger's subscriber,
 * a source's sink) resolves to it. Ready when the process accepts connections on its port.
 *
 * Inside Trellis the kind is named `KnativeService`: Kubernetes' core `Service` has the name `Service`.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import {
  notRunning,
  onlyContainer,
  type ProcessSpec,
  type ProcessState,
  validateContainer,
} from './containersource.js';
import { describe, invalid, isObject, objectAt } from './validation.js';

export interface KnativeServiceSpec {
  /** The revision template, as written; {@link serviceProcessOf} reads the container from it. */
  template: { metadata?: Record<string, unknown>; spec: { containers: unknown[] } };
  traffic?: unknown[];
}

/** What a Service runs, and the port it listens on when its container names one. */
export interface ServiceProcess extends ProcessSpec {
  containerPort?: number;
}

/** Validates a Service spec: one container (with a command, to be Ready), at most one port. */
export function validateKnativeServiceSpec(spec: unknown): Record<string, unknown> {
  const o = objectAt('spec', spec, ['template', 'traffic'])!;
  const t = objectAt('spec.template', o['template'], ['metadata', 'spec'])!;
  readContainer(onlyContainer(t, 'Service (sidecars are not run)', 'revision spec'));
  if (t['metadata'] !== undefined && t['metadata'] !== null && !isObject(t['metadata']))
    invalid('spec.template.metadata', `must be an object, got ${describe(t['metadata'])}`);
  const out: KnativeServiceSpec = { template: t as KnativeServiceSpec['template'] };
  if (o['traffic'] !== undefined && o['traffic'] !== null) {
    if (!Array.isArray(o['traffic']))
      invalid('spec.traffic', `must be a list, got ${describe(o['traffic'])}`);
    if (o['traffic'].length > 64) invalid('spec.traffic', 'has more than 64 targets');
    o['traffic'].forEach((x, i) => {
      if (!isObject(x)) invalid(`spec.traffic[${i}]`, `must be a traffic target, got ${describe(x)}`);
    });
    out.traffic = o['traffic'];
  }
  return out as unknown as Record<string, unknown>;
}

function readContainer(c: unknown): ServiceProcess {
  const at = 'spec.template.spec.containers[0]';
  const p: ServiceProcess = validateContainer(at, c);
  const ports = (c as Record<string, unknown>)['ports'];
  if (ports !== undefined && ports !== null) {
    if (!Array.isArray(ports)) invalid(`${at}.ports`, `must be a list, got ${describe(ports)}`);
    if (ports.length > 1) invalid(`${at}.ports`, 'lists more than one port; Knative routes to one');
    if (ports.length === 1) {
      const po = objectAt(`${at}.ports[0]`, ports[0], [
        'containerPort',
        'name',
        'protocol',
        'hostPort',
        'hostIP',
      ])!;
      const n = po['containerPort'];
      if (n !== undefined) {
        if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535)
          invalid(`${at}.ports[0].containerPort`, 'must be a port number from 1 to 65535');
        p.containerPort = n;
      }
    }
  }
  for (const { name } of p.env) {
    if (name === 'PORT')
      invalid(`${at}.env`, 'PORT is set by Trellis (as by Knative): name the port in ports[0].containerPort');
  }
  return p;
}

/** The process a (valid) Service runs. */
export function serviceProcessOf(spec: KnativeServiceSpec): ServiceProcess {
  return readContainer(spec.template.spec.containers[0]);
}

/** Traffic splits between revisions are accepted and not applied: Trellis runs the latest one only. */
export function knativeServiceWarnings(spec: Record<string, unknown>): string[] {
  const traffic = (spec as unknown as KnativeServiceSpec).traffic ?? [];
  const split = traffic.some((t) => {
    const x = t as Record<string, unknown>;
    return x['latestRevision'] !== true || (x['percent'] !== undefined && x['percent'] !== 100) || x['tag'];
  });
  return split
    ? [
        'spec.traffic: Trellis runs the latest revision only and sends it all the traffic; the split is ignored',
      ]
    : [];
}

/** Where a ref to the Service delivers: the address its process listens at, once it has one. */
export function knativeServiceAddress(o: ResourceObject): string | undefined {
  return (o.status?.['process'] as ProcessState | undefined)?.url;
}

/** The ConfigurationsReady condition from the supervisor's state. */
export function configurationsReady(p: ServiceProcess, state: ProcessState | undefined): Cond {
  const down = notRunning('ConfigurationsReady', p, state);
  if (down !== undefined) return down;
  if (state!.listening === true) return ok('ConfigurationsReady');
  return notOk(
    'ConfigurationsReady',
    'NotListening',
    `the process runs (pid ${state!.pid}) and does not accept connections on port ${state!.port} yet: it must listen on $PORT`,
  );
}

/** Status: the process's state (written by the supervisor, kept here), its URL and address. */
export function reconcileKnativeService(o: ResourceObject): Record<string, unknown> {
  const spec = o.spec as unknown as KnativeServiceSpec;
  const state = o.status?.['process'] as ProcessState | undefined;
  const status: Record<string, unknown> = { observedGeneration: o.metadata.generation };
  const conds: Cond[] = [configurationsReady(serviceProcessOf(spec), state)];
  if (state?.url !== undefined) {
    status['url'] = state.url;
    status['address'] = { url: state.url };
    conds.push(ok('RoutesReady'));
  } else conds.push(notOk('RoutesReady', 'NoAddress', 'the process has no port yet'));
  status['conditions'] = ready(conds);
  return status;
}
