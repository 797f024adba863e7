/**
 * What a kind's reconcile function may look at: other resources (each look-up is remembered, so that a
 * change to the resource looked at reconciles this one again) and destinations resolved to URLs.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import type { Destination } from './delivery-spec.js';

/** A destination resolved to a URL, or why not (Knative's reason and a message that says what to do). */
export type Resolved = { uri: string } | { reason: string; message: string };

export interface ReconcileContext {
  /** The server's public base URL (addresses are built on it). */
  readonly publicUrl: string;
  /** Server settings a status depends on: whether it runs the programs resources name. */
  readonly features: {
    allowCommands: boolean;
    /** Why deliveries may not go to this URL (destination rules), or undefined. */
    deniedDestination?: ((uri: string) => string | undefined) | undefined;
    /** Senders authenticate (OIDC): addressables show their audience in `status.address.audience`. */
    authentication?: boolean | undefined;
  };
  /** Another resource, by kind, namespace and name; remembered as a dependency. */
  get(kind: string, namespace: string, name: string): ResourceObject | undefined;
  /** Every resource of a kind; remembered as a dependency on the whole kind. */
  list(kind: string): ResourceObject[];
  /** A destination as a URL (a `ref` through its target's address, a relative `uri` appended to it). */
  resolve(d: Destination): Resolved;
  /** The address of an addressable kind's resource (whether or not it exists). */
  address(kind: string, namespace: string, name: string): string;
}
