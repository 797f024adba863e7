/**
 * Service (`v1`): how a `ref` to something Trellis does not run gets an address. Trellis runs without
 * Kubernetes, so a Service here only says where a subscriber is: `spec.type: ExternalName` with
 * `spec.externalName` and a port, or the annotation `trellis.dev/address` with a URL. A `ref` to a kind
 * Trellis does not serve (a Knative Serving Service, say) resolves through a v1 Service of the same name.
 * @module
 */
import type { ResourceObject } from '../store/types.js';
import { type Cond, notOk, ok, ready } from './conditions.js';
import { describe, invalid, isObject, objectAt, stringAt } from './validation.js';

/** The annotation that gives a Service (or anything Trellis does not run) its URL. */
export const ADDRESS_ANNOTATION = 'trellis.dev/address';

export interface ServicePort {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: string;
}

export interface ServiceSpec {
  type?: string;
  externalName?: string;
  ports?: ServicePort[];
  selector?: Record<string, string>;
}

/** Validates a v1 Service spec: the fields Trellis reads are checked, the rest of Kubernetes' are kept. */
export function validateServiceSpec(spec: unknown): Record<string, unknown> {
  const o = objectAt('spec', spec ?? {}, [
    'type',
    'externalName',
    'ports',
    'selector',
    'clusterIP',
    'clusterIPs',
    'sessionAffinity',
    'ipFamilies',
    'ipFamilyPolicy',
    'internalTrafficPolicy',
  ])!;
  const out: ServiceSpec = {};
  const type = stringAt('spec.type', o['type'], true);
  if (type !== undefined) {
    if (!['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'].includes(type))
      invalid('spec.type', 'must be ClusterIP, NodePort, LoadBalancer or ExternalName');
    out.type = type;
  }
  const ext = stringAt('spec.externalName', o['externalName'], true);
  if (ext !== undefined) {
    if (!/^[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?$/.test(ext))
      invalid('spec.externalName', 'must be a host name or an IP address');
    out.externalName = ext;
  }
  if (out.type === 'ExternalName' && ext === undefined)
    invalid('spec.externalName', 'is required when spec.type is ExternalName');
  if (o['ports'] !== undefined && o['ports'] !== null) {
    if (!Array.isArray(o['ports'])) invalid('spec.ports', `must be a list, got ${describe(o['ports'])}`);
    out.ports = o['ports'].map((p, i) => {
      const at = `spec.ports[${i}]`;
      const po = objectAt(at, p, ['name', 'port', 'targetPort', 'protocol', 'nodePort', 'appProtocol'])!;
      const port = po['port'];
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
        invalid(`${at}.port`, 'must be a port number from 1 to 65535');
      const r: ServicePort = { port };
      const name = stringAt(`${at}.name`, po['name'], true);
      if (name !== undefined) r.name = name;
      if (typeof po['targetPort'] === 'number' || typeof po['targetPort'] === 'string')
        r.targetPort = po['targetPort'];
      return r;
    });
  }
  if (isObject(o['selector'])) out.selector = o['selector'] as Record<string, string>;
  return out as Record<string, unknown>;
}

/** Checks the address annotation, when present. */
export function validateServiceAnnotations(annotations: Record<string, string> | undefined): void {
  const v = annotations?.[ADDRESS_ANNOTATION];
  if (v === undefined) return;
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    invalid(
      `metadata.annotations.${ADDRESS_ANNOTATION}`,
      `'${v}' is not an absolute URL such as http://127.0.0.1:8081/`,
    );
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    invalid(`metadata.annotations.${ADDRESS_ANNOTATION}`, 'must use http or https');
}

/** The URL a Service stands for, or undefined when it says none. */
export function serviceAddress(svc: ResourceObject): string | undefined {
  const ann = svc.metadata.annotations?.[ADDRESS_ANNOTATION];
  if (ann !== undefined) return ann;
  const spec = svc.spec as ServiceSpec;
  if (spec.type === 'ExternalName' && spec.externalName !== undefined) {
    const port = spec.ports?.[0]?.port ?? 80;
    const host = spec.externalName.includes(':') ? `[${spec.externalName}]` : spec.externalName;
    return `http://${host}${port === 80 ? '' : `:${port}`}/`;
  }
  return undefined;
}

/** Status: Ready with `address.url` when the Service says where it is. */
export function reconcileService(svc: ResourceObject): Record<string, unknown> {
  const url = serviceAddress(svc);
  const conds: Cond[] = [
    url !== undefined
      ? ok('Addressable')
      : notOk(
          'Addressable',
          'NoAddress',
          `Trellis runs no pods: give this Service an address with spec.type: ExternalName and spec.externalName, or the annotation ${ADDRESS_ANNOTATION}: http://host:port/`,
        ),
  ];
  return {
    observedGeneration: svc.metadata.generation,
    ...(url !== undefined ? { address: { url } } : {}),
    conditions: ready(conds),
  };
}
