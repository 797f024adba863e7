/**
 * What the connector kinds share in their specs and statuses: a server URL without credentials,
 * credentials named by file or environment variable, and the source and sink statuses (`Connected`
 * from the runtime's `status.connection`).
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { type Cond, notOk, ok, ready, sinkProvided } from './conditions.js';
import type { ReconcileContext } from './context.js';
import type { Destination } from './delivery-spec.js';
import { invalid, objectAt, stringAt } from './validation.js';

/** Runtime state a connector writes into `status.connection`. */
export interface ConnectionState {
  state: 'Connected' | 'Connecting' | 'Disconnected' | 'Failed';
  message?: string;
}

/** Credentials read from files and environment variables (never written in the resource). */
export interface SecretAuth {
  username?: string;
  passwordEnv?: string;
  passwordFile?: string;
  tlsCaFile?: string;
}

const ENV = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `spec.address`: a URL of one of `protocols` (`['redis:', 'rediss:']`), with no credentials in it. */
export function addressAt(v: unknown, protocols: readonly string[], example: string): string {
  const s = stringAt('spec.address', v)!;
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    invalid('spec.address', `'${s}' is not a URL such as ${example}`);
  }
  if (!protocols.includes(u.protocol))
    invalid('spec.address', `must be ${protocols.map((p) => `${p}//`).join(' or ')}, got '${u.protocol}'`);
  if (u.username !== '' || u.password !== '')
    invalid(
      'spec.address',
      'must not carry credentials: use spec.auth (from files or environment variables)',
    );
  return s;
}

/** `spec.auth`: a username, the password from a file or an environment variable, a CA file. */
export function secretAuthAt(v: unknown): SecretAuth | undefined {
  const o = objectAt(
    'spec.auth',
    v,
    ['username', 'passwordEnv', 'passwordFile', 'tlsCaFile', 'password'],
    true,
  );
  if (o === undefined) return undefined;
  if (o['password'] !== undefined)
    invalid('spec.auth.password', 'secrets are not written in resources: use passwordFile or passwordEnv');
  const out: SecretAuth = {};
  for (const k of ['username', 'passwordEnv', 'passwordFile', 'tlsCaFile'] as const) {
    const s = stringAt(`spec.auth.${k}`, o[k], true);
    if (s === undefined) continue;
    if (k === 'passwordEnv' && !ENV.test(s))
      invalid('spec.auth.passwordEnv', `'${s}' is not an environment variable name`);
    out[k] = s;
  }
  if (out.passwordEnv !== undefined && out.passwordFile !== undefined)
    invalid('spec.auth', 'set passwordEnv or passwordFile, not both');
  return out;
}

/** The Connected condition from the connector's runtime state. */
export function connectedCondition(state: ConnectionState | undefined): Cond {
  if (state === undefined) return notOk('Connected', 'Connecting', 'not connected yet');
  if (state.state === 'Connected') return ok('Connected');
  return notOk('Connected', state.state, state.message ?? state.state);
}

/** A connector source's status: its sink resolved, and Connected. */
export function reconcileConnectorSource(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const sink = (o.spec as { sink: Destination }).sink;
  const status: Record<string, unknown> = { observedGeneration: o.metadata.generation };
  const conds: Cond[] = [];
  conds.push(sinkProvided(ctx, sink, status));
  conds.push(connectedCondition(o.status?.['connection'] as ConnectionState | undefined));
  status['conditions'] = ready(conds);
  return status;
}

/** A connector sink's status: its address, and Connected. */
export function reconcileConnectorSink(o: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  return {
    observedGeneration: o.metadata.generation,
    address: { url: ctx.address(o.kind, o.metadata.namespace, o.metadata.name) },
    conditions: ready([
      ok('Addressable'),
      connectedCondition(o.status?.['connection'] as ConnectionState | undefined),
    ]),
  };
}
