/**
 * Knative's status conditions: each resource has a `Ready` condition summing up the others.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import type { ReconcileContext } from './context.js';
import type { Destination } from './delivery-spec.js';

export interface Cond {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason?: string;
  message?: string;
}

export function ok(type: string): Cond {
  return { type, status: 'True' };
}

export function notOk(type: string, reason: string, message: string): Cond {
  return { type, status: 'False', reason, message };
}

/** Prepends `Ready`: True when every condition is, else the first that is not, renamed. */
export function ready(conds: Cond[]): Cond[] {
  const bad = conds.find((c) => c.status !== 'True');
  return [bad ? { ...bad, type: 'Ready' } : ok('Ready'), ...conds];
}

/** True when a resource's Ready condition is True. */
export function isReady(r: ResourceObject | undefined): boolean {
  const conds = r?.status?.['conditions'] as Cond[] | undefined;
  return conds?.find((c) => c.type === 'Ready')?.status === 'True';
}

/** A source's `SinkProvided` condition; sets `status.sinkUri` when `spec.sink` resolves. */
export function sinkProvided(
  ctx: ReconcileContext,
  sink: Destination,
  status: Record<string, unknown>,
): Cond {
  const r = ctx.resolve(sink);
  if (!('uri' in r)) return notOk('SinkProvided', r.reason, `spec.sink: ${r.message}`);
  status['sinkUri'] = r.uri;
  return ok('SinkProvided');
}
