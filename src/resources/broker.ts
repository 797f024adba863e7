/**
 * Broker (`eventing.knative.dev/v1`): spec validation. A Broker's address is `{publicUrl}/{namespace}/{name}`.
 * @module
 */
import type { ResourceObject, StreamRetention } from '../store/types.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import type { ReconcileContext } from './context.js';
import {
  type DeliverySpec,
  validateDeadLettersAnnotation,
  validateDelivery,
  validateRateAnnotations,
} from './delivery-spec.js';
import { parseDuration } from './duration.js';
import { validateValidationAnnotation } from './eventtype.js';
import { invalid, objectAt } from './validation.js';

/** Annotation that sets a Broker's lag ceiling (pending deliveries before ingress answers 429). */
export const MAX_LAG_ANNOTATION = 'trellis.dev/max-lag';

/** How long a Broker's (or Channel's) events are kept, as an ISO-8601 duration (`P7D`). */
export const RETENTION_ANNOTATION = 'trellis.dev/retention';
/** How many bytes of a Broker's (or Channel's) events are kept (cluster mode): `1073741824`, `512Mi`, `10Gi`. */
export const RETENTION_BYTES_ANNOTATION = 'trellis.dev/retention-bytes';

const BYTE_UNITS: Record<string, number> = { '': 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };

/** Bytes in a size such as `512Mi`; undefined when it is not one. */
export function parseBytes(v: string): number | undefined {
  const m = /^([0-9]{1,15})(Ki|Mi|Gi|Ti)?$/.exec(v);
  if (m === null) return undefined;
  const n = Number(m[1]) * BYTE_UNITS[m[2] ?? '']!;
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** A Broker's or Channel's retention annotations, once validated. */
export function retentionOf(annotations: Record<string, string> | undefined): StreamRetention | undefined {
  const age = annotations?.[RETENTION_ANNOTATION];
  const bytes = annotations?.[RETENTION_BYTES_ANNOTATION];
  if (age === undefined && bytes === undefined) return undefined;
  return {
    maxAgeMs: age === undefined ? undefined : parseDuration(age),
    maxBytes: bytes === undefined ? undefined : parseBytes(bytes),
  };
}

/** Checks the Trellis annotations a Broker (or Channel) may carry. */
export function validateBrokerAnnotations(annotations: Record<string, string> | undefined): void {
  validateValidationAnnotation(annotations);
  validateDeadLettersAnnotation(annotations);
  validateRateAnnotations(annotations);
  const age = annotations?.[RETENTION_ANNOTATION];
  if (age !== undefined) {
    const ms = parseDuration(age);
    if (ms === undefined || ms < 1000)
      invalid(
        `metadata.annotations.${RETENTION_ANNOTATION}`,
        `must be an ISO-8601 duration of at least a second, such as P7D or PT12H, got '${age}'`,
      );
  }
  const bytes = annotations?.[RETENTION_BYTES_ANNOTATION];
  if (bytes !== undefined && parseBytes(bytes) === undefined)
    invalid(
      `metadata.annotations.${RETENTION_BYTES_ANNOTATION}`,
      `must be a size in bytes above 0, such as 1073741824, 512Mi or 10Gi (quoted in YAML), got '${bytes}'`,
    );
  const v = annotations?.[MAX_LAG_ANNOTATION];
  if (v !== undefined && (!/^[1-9][0-9]*$/.test(v) || !Number.isSafeInteger(Number(v)))) {
    invalid(
      `metadata.annotations.${MAX_LAG_ANNOTATION}`,
      `must be a whole number above 0 (quoted in YAML), got '${v}'`,
    );
  }
}

export interface BrokerSpec {
  /** Knative's reference to a ConfigMap; accepted so Knative YAML applies, and not used. */
  config?: Record<string, unknown>;
  delivery?: DeliverySpec;
}

/** Validates a Broker spec (an absent spec is an empty one). */
export function validateBrokerSpec(spec: unknown, namespace: string): Record<string, unknown> {
  const o = objectAt('spec', spec ?? {}, ['config', 'delivery'])!;
  const out: BrokerSpec = {};
  // `config:` with nothing after it (YAML null) is in Knative's own docs and means no config.
  if (o['config'] !== undefined && o['config'] !== null)
    out.config = objectAt('spec.config', o['config'], ['apiVersion', 'kind', 'name', 'namespace'])!;
  const delivery = validateDelivery('spec.delivery', o['delivery'], namespace);
  if (delivery !== undefined) out.delivery = delivery;
  return out as Record<string, unknown>;
}

/** Status of a Broker: addressable at once; Ready unless its dead-letter sink cannot be resolved. */
export function reconcileBroker(b: ResourceObject, ctx: ReconcileContext): Record<string, unknown> {
  const spec = b.spec as BrokerSpec;
  const conds: Cond[] = [ok('Addressable'), ok('IngressReady')];
  const status: Record<string, unknown> = {
    observedGeneration: b.metadata.generation,
    address: { url: ctx.address('Broker', b.metadata.namespace, b.metadata.name) },
  };
  resolveDeadLetter(ctx, spec.delivery, 'spec.delivery.deadLetterSink', conds, status);
  status['conditions'] = ready(conds);
  return status;
}

/** Resolves a DeliverySpec's dead-letter sink into `status.deadLetterSinkUri` and a condition. */
export function resolveDeadLetter(
  ctx: ReconcileContext,
  delivery: DeliverySpec | undefined,
  path: string,
  conds: Cond[],
  status: Record<string, unknown>,
): void {
  const dls = delivery?.deadLetterSink;
  if (dls === undefined) return;
  const r = ctx.resolve(dls);
  if ('uri' in r) {
    conds.push(ok('DeadLetterSinkResolved'));
    status['deadLetterSinkUri'] = r.uri;
  } else conds.push(notOk('DeadLetterSinkResolved', r.reason, `${path}: ${r.message}`));
}
