/** Starts an in-process Trellis server on port 0 with a throw-away store, and helpers to drive it. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findKind, kindOfDocument } from '../../src/resources/kinds.js';
import type { ServerConfig } from '../../src/server/config.js';
import { startServer, type TrellisServer } from '../../src/server/server.js';

export interface TestServer extends TrellisServer {
  dataDir: string;
  apply(doc: Record<string, unknown>): Promise<Response>;
  post(path: string, headers: Record<string, string>, body?: string | Buffer): Promise<Response>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function testServer(cfg: Partial<ServerConfig> = {}): Promise<TestServer> {
  const dataDir = cfg.dataDir ?? mkdtempSync(join(tmpdir(), 'trellis-test-'));
  const s = await startServer({ port: 0, logLevel: 'silent', shutdownGraceMs: 500, ...cfg, dataDir });
  const kindPath = (kind: string, apiVersion: string) => {
    const k = kindOfDocument(kind, apiVersion) ?? findKind(kind);
    if (k === undefined) return `/apis/eventing.knative.dev/v1/namespaces/{ns}/${kind.toLowerCase()}s`;
    const group = k.group === '' ? `/api/${k.version}` : `/apis/${k.group}/${k.version}`;
    return `${group}/namespaces/{ns}/${k.plural}`;
  };
  const stop = s.close;
  const dispose = async () => {
    await stop();
    if (!cfg.dataDir) rmSync(dataDir, { recursive: true, force: true });
  };
  return Object.assign(s, {
    dataDir,
    apply: (doc: Record<string, unknown>) => {
      const meta = (doc['metadata'] ?? {}) as { namespace?: string };
      return fetch(
        `${s.url}${kindPath(String(doc['kind']), String(doc['apiVersion'])).replace('{ns}', meta.namespace ?? 'default')}`,
        {
          method: 'POST',
          body: JSON.stringify(doc),
          headers: {
            'content-type': 'application/json',
            ...(cfg.adminToken ? { authorization: `Bearer ${cfg.adminToken}` } : {}),
          },
        },
      );
    },
    post: (path: string, headers: Record<string, string>, body?: string | Buffer) =>
      fetch(`${s.url}${path}`, { method: 'POST', headers, ...(body !== undefined ? { body } : {}) }),
    [Symbol.asyncDispose]: dispose,
    close: dispose,
  });
}

export function broker(name: string, spec: Record<string, unknown> = {}, namespace = 'default') {
  return { apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', metadata: { name, namespace }, spec };
}

export function trigger(name: string, spec: Record<string, unknown>, namespace = 'default') {
  return { apiVersion: 'eventing.knative.dev/v1', kind: 'Trigger', metadata: { name, namespace }, spec };
}

/** A token the server (with `--authentication oidc`) mints for an audience and subject (`POST /apis/tokens`). */
export async function mintToken(url: string, audience: string, subject: string): Promise<string> {
  const r = await fetch(`${url}/apis/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ audience, subject }),
  });
  return ((await r.json()) as { token: string }).token;
}

/** Binary-mode headers for a small event. */
export function ceHeaders(
  id: string,
  type = 'demo.type',
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    'ce-specversion': '1.0',
    'ce-id': id,
    'ce-source': '/test',
    'ce-type': type,
    'content-type': 'application/json',
    ...extra,
  };
}

/** The condition of one type in a resource's status (undefined while the resource or its status is missing). */
export async function conditionOf(
  url: string,
  path: string,
  type: string,
): Promise<{ type: string; status: string; reason?: string; message?: string } | undefined> {
  const r = await fetch(`${url}${path}`);
  if (r.status !== 200) return undefined;
  const o = (await r.json()) as {
    status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] };
  };
  return o.status?.conditions?.find((c) => c.type === type);
}
