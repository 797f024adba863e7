/**
 * JobSink (`sinks.knative.dev/v1alpha1`): an addressable sink that runs a job per event. Knative creates
 * a Kubernetes Job and mounts the event as JSON at `/etc/jobsink-event/event`; Trellis runs the job's
 * container command as a local process, with the event written to a file whose path replaces
 * `/etc/jobsink-event/event` in the command line and is given in `K_EVENT_PATH`.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import { type ProcessSpec, validateContainer } from './containersource.js';
import type { ReconcileContext } from './context.js';
import { describe, invalid, isObject, objectAt } from './validation.js';

/** Where Knative's JobSink puts the event in the job's pod. */
export const KNATIVE_EVENT_PATH = '/etc/jobsink-event/event';

export interface JobSinkSpec {
  /** A batch/v1 Job, as written; `jobProcess` reads the container from it. */
  job: { spec: { template: { spec: { containers: unknown[] } } } };
}

export function validateJobSinkSpec(spec: unknown): Record<string, unknown> {
  const o = objectAt('spec', spec, ['job'])!;
  const job = objectAt('spec.job', o['job'], ['apiVersion', 'kind', 'metadata', 'spec'])!;
  const js = job['spec'];
  if (!isObject(js)) invalid('spec.job.spec', `must be a Job spec, got ${describe(js)}`);
  const tpl = js['template'];
  if (!isObject(tpl) || !isObject(tpl['spec'])) invalid('spec.job.spec.template.spec', 'must be a pod spec');
  const containers = (tpl['spec'] as Record<string, unknown>)['containers'];
  if (!Array.isArray(containers) || containers.length === 0)
    invalid('spec.job.spec.template.spec.containers', 'must list the container to run');
  if (containers.length > 1)
    invalid('spec.job.spec.template.spec.containers', 'Trellis runs one process per job: list one container');
  validateContainer('spec.job.spec.template.spec.containers[0]', containers[0]);
  return { job } as Record<string, unknown>;
}

/** The process a (valid) JobSink runs per event. */
export function jobProcess(spec: JobSinkSpec): ProcessSpec {
  return validateContainer(
    'spec.job.spec.template.spec.containers[0]',
    spec.job.spec.template.spec.containers[0],
  );
}

/** Status: addressable; Ready when it has a command and the server runs commands. */
export function reconcileJobSink(
  o: ResourceObject,
  ctx: ReconcileContext,
  allowCommands: boolean,
): Record<string, unknown> {
  const p = jobProcess(o.spec as unknown as JobSinkSpec);
  const conds: Cond[] = [ok('Addressable')];
  if (p.command.length === 0)
    conds.push(
      notOk(
        'JobReady',
        'NoCommand',
        `Trellis runs commands, not images: set spec.job.spec.template.spec.containers[0].command${p.image ? ` (the program to run instead of image ${p.image})` : ''}`,
      ),
    );
  else if (!allowCommands)
    conds.push(
      notOk(
        'JobReady',
        'Disabled',
        'this server does not run commands: start it with --allow-commands (see docs/jobsink.md)',
      ),
    );
  else conds.push(ok('JobReady'));
  return {
    observedGeneration: o.metadata.generation,
    address: { url: ctx.address('JobSink', o.metadata.namespace, o.metadata.name) },
    conditions: ready(conds),
  };
}
