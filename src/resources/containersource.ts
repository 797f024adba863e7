/**
 * ContainerSource (`sources.knative.dev/v1`): Knative runs `template.spec.containers[0]` with `K_SINK`
 * and `K_CE_OVERRIDES` in its environment; Trellis runs that container's `command` (and `args`, `env`,
 * `workingDir`) as a local process, supervised (restarted with backoff, output into the server log,
 * state in `status.process`). An image is not something Trellis can run: a container with no command is
 * not Ready, and says so.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { validateCeOverrides } from './ce-overrides.js';
import { type Cond, notOk, ok, ready, sinkProvided } from './conditions.js';
import type { ReconcileContext } from './context.js';
import { type Destination, validateDestination } from './delivery-spec.js';
import { describe, invalid, isObject, objectAt, stringAt } from './validation.js';

/** What runs: the container's command line, environment and working directory. */
export interface ProcessSpec {
  command: string[];
  args: string[];
  env: { name: string; value: string }[];
  workingDir?: string;
  image?: string;
}

export interface ContainerSourceSpec {
  /** The pod template, as written; `processOf` reads the container from it. */
  template: { spec: { containers: unknown[] } };
  sink: Destination;
  ceOverrides?: { extensions: Record<string, string> };
}

/** The supervisor's view of a process, kept in `status.process`. */
export interface ProcessState {
  /** `Running`, `BackOff` (exited, restarting after a delay), `Stopped`, or `Disabled`. */
  state: string;
  pid?: number;
  restarts: number;
  lastExit?: string;
  message?: string;
  /** Which Trellis process runs it (host and pid), in a cluster. */
  runner?: string;
  /** A program that serves HTTP (a Knative Service): the port it was given in `PORT`. */
  port?: number;
  /** Its address, `http://HOST:PORT/`. */
  url?: string;
  /** It accepted a connection on its port since it started. */
  listening?: boolean;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
const MAX_ARGS = 256;
const MAX_ARG_BYTES = 32 * 1024;

function stringList(path: string, v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) invalid(path, `must be a list of strings, got ${describe(v)}`);
  if (v.length > MAX_ARGS) invalid(path, `has more than ${MAX_ARGS} entries`);
  return v.map((x, i) => {
    if (typeof x !== 'string') invalid(`${path}[${i}]`, `must be a string, got ${describe(x)}`);
    if (Buffer.byteLength(x) > MAX_ARG_BYTES) invalid(`${path}[${i}]`, `is over ${MAX_ARG_BYTES} bytes`);
    if (x.includes('\u0000')) invalid(`${path}[${i}]`, 'must not contain NUL characters');
    return x;
  });
}

/** Reads a Kubernetes container (the parts Trellis runs; the rest of a pod is accepted and not used). */
export function validateContainer(path: string, v: unknown): ProcessSpec {
  if (!isObject(v)) invalid(path, `must be a container, got ${describe(v)}`);
  const command = stringList(`${path}.command`, v['command']);
  const args = stringList(`${path}.args`, v['args']);
  const env: ProcessSpec['env'] = [];
  const list = v['env'];
  if (list !== undefined && list !== null) {
    if (!Array.isArray(list)) invalid(`${path}.env`, `must be a list, got ${describe(list)}`);
    if (list.length > MAX_ARGS) invalid(`${path}.env`, `has more than ${MAX_ARGS} entries`);
    list.forEach((e, i) => {
      const p = `${path}.env[${i}]`;
      const x = objectAt(p, e, ['name', 'value', 'valueFrom'])!;
      const name = stringAt(`${p}.name`, x['name'])!;
      if (!ENV_NAME.test(name)) invalid(`${p}.name`, `'${name}' is not an environment variable name`);
      if (x['valueFrom'] !== undefined)
        invalid(
          `${p}.valueFrom`,
          'Trellis has no Kubernetes secrets or config maps to read: give the value, or read it in the program from a file',
        );
      const value = stringAt(`${p}.value`, x['value'], true) ?? '';
      if (value.includes('\u0000')) invalid(`${p}.value`, 'must not contain NUL characters');
      env.push({ name, value });
    });
  }
  const out: ProcessSpec = { command, args, env };
  const wd = stringAt(`${path}.workingDir`, v['workingDir'], true);
  if (wd !== undefined && wd !== '') out.workingDir = wd;
  const image = stringAt(`${path}.image`, v['image'], true);
  if (image !== undefined && image !== '') out.image = image;
  return out;
}

/**
 * The one container of a pod template (`spec.template.spec.containers[0]`), checked: Trellis runs one
 * process per resource; `what` names the resource in the message.
 */
export function onlyContainer(t: Record<string, unknown>, what: string, podLike: string): unknown {
  const ps = t['spec'];
  if (!isObject(ps)) invalid('spec.template.spec', `must be a ${podLike}, got ${describe(ps)}`);
  const containers = ps['containers'];
  if (!Array.isArray(containers) || containers.length === 0)
    invalid('spec.template.spec.containers', 'must list the container to run');
  if (containers.length > 1)
    invalid('spec.template.spec.containers', `Trellis runs one process per ${what}: list one container`);
  return containers[0];
}

/** Validates a ContainerSource spec: `template.spec.containers` (one), `sink`, `ceOverrides`. */
export function validateContainerSourceSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec, ['template', 'sink', 'ceOverrides'])!;
  const t = objectAt('spec.template', o['template'], ['metadata', 'spec'])!;
  validateContainer('spec.template.spec.containers[0]', onlyContainer(t, 'ContainerSource', 'pod spec'));
  // The template is kept as written (pod fields Trellis does not use included), so export gives it back.
  const out: ContainerSourceSpec = {
    template: t as ContainerSourceSpec['template'],
    sink: validateDestination('spec.sink', o['sink'], namespace),
  };
  const ce = validateCeOverrides(o['ceOverrides']);
  if (ce !== undefined) out.ceOverrides = ce;
  return out as unknown as Record<string, unknown>;
}

/** The process a (valid) ContainerSource runs. */
export function processOf(spec: ContainerSourceSpec): ProcessSpec {
  return validateContainer('spec.template.spec.containers[0]', spec.template.spec.containers[0]);
}

/**
 * The condition `type` while a process does not run: no command to run (an image only), not started
 * yet, or stopped or backing off (with the supervisor's message); undefined once it runs.
 */
export function notRunning(
  type: string,
  spec: ProcessSpec,
  state: ProcessState | undefined,
): Cond | undefined {
  if (spec.command.length === 0)
    return notOk(
      type,
      'NoCommand',
      `Trellis runs commands, not images: set spec.template.spec.containers[0].command (the program to run${spec.image ? ` instead of image ${spec.image}` : ''})`,
    );
  if (state === undefined) return notOk(type, 'Starting', 'the process has not started yet');
  if (state.state !== 'Running') return notOk(type, state.state, state.message ?? state.state);
  return undefined;
}

/** The Deployed condition from the supervisor's state. */
export function deployedCondition(spec: ProcessSpec, state: ProcessState | undefined): Cond {
  return notRunning('Deployed', spec, state) ?? ok('Deployed');
}

/** Status: sink resolved, process state (written by the supervisor, kept here). */
export function reconcileContainerSource(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = o.spec as unknown as ContainerSourceSpec;
  const state = o.status?.['process'] as ProcessState | undefined;
  const status: Record<string, unknown> = { observedGeneration: o.metadata.generation };
  const conds: Cond[] = [];
  conds.push(sinkProvided(ctx, spec.sink, status));
  conds.push(deployedCondition(processOf(spec), state));
  status['conditions'] = ready(conds);
  return status;
}
