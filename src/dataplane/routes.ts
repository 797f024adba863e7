/**
 * What the data plane routes by: each Ready Broker with its Ready Triggers, compiled filters and retry
 * policies. Built by the composition root from resources; read by ingress and dispatcher per event.
 * @module
 */
import type { Predicate } from '../filter/attributes.js';
import type { RetryPolicy } from './retry-policy.js';

export interface TriggerRoute {
  /** The Trigger's uid: its subscription id in the store. */
  id: string;
  namespace: string;
  name: string;
  /** `namespace/broker` */
  broker: string;
  predicate: Predicate;
  subscriberUri: string;
  policy: RetryPolicy;
}

export interface BrokerRoute {
  /** `namespace/name` */
  key: string;
  ready: boolean;
  /** Ingress answers 429 while this many deliveries of the Broker are pending. */
  maxLag: number;
  triggers: TriggerRoute[];
}

/** Minimal structured logger (pino's shape). */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
