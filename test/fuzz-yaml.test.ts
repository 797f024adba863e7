/**
 * Bad resource YAML: a seeded corpus of broken and hostile documents through the admin API (as YAML) and a
 * sample through `trellis apply`. Each gets a 4xx with a code and a message naming the field; the server
 * stays up and its resources stay as they were.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { prng } from './helpers/prng.js';
import { run } from './helpers/process.js';
import { testServer } from './helpers/server.js';

const GOOD = `apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
spec:
  broker: b
  filter:
    attributes:
      type: x
  subscriber:
    uri: http://127.0.0.1:9/
  delivery:
    retry: 3
    backoffDelay: PT1S
`;

const HOSTILE = [
  // billion laughs
  'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n',
  `${'['.repeat(5000)}${']'.repeat(5000)}`,
  'kind: Trigger\napiVersion: eventing.knative.dev/v1\nmetadata: {name: t}\nspec: !!binary aGVsbG8=\n',
  '\u0000\u0001\u0002',
  '- just\n- a\n- list\n',
  'kind: Broker\n',
  '"just a string"',
  'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: ' + 'x'.repeat(300) + '\n',
  'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n  namespace: Not_A_Label\n',
  'apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n  annotations:\n    x: [1]\n',
];

function mutate(r: () => number): string {
  const lines = GOOD.split('\n');
  const i = 1 + Math.floor(r() * (lines.length - 2));
  const line = lines[i]!;
  const key = line.split(':')[0]!;
  const choices = [
    `${key}: ${['123', 'true', '[1, 2]', '{a: 1}', 'null', '-5', '"P1Y"', '"not a url"', "''"][Math.floor(r() * 9)]}`,
    `${key}: "${'y'.repeat(Math.floor(r() * 100_000))}"`,
    `${key}:\n${' '.repeat(Math.floor(r() * 3))}\tbad: indent`,
    `${line}\n${key.trim()}Extra: 1`,
    line.replace(/:/, ''),
    `${line} # ${'\u{1F600}'.repeat(5)}`,
  ];
  lines[i] = choices[Math.floor(r() * choices.length)]!;
  return lines.join('\n');
}

it('answers every broken or hostile document with a 4xx, a code and a message, and stays up', {
  timeout: 120_000,
}, async () => {
  await using s = await testServer();
  await s.apply({ apiVersion: 'eventing.knative.dev/v1', kind: 'Broker', metadata: { name: 'b' } });
  const r = prng(Number(process.env['TRELLIS_FUZZ_SEED'] ?? 7));
  const docs = [...HOSTILE, ...Array.from({ length: 300 }, () => mutate(r))];
  const failures: string[] = [];
  let refused = 0;
  for (const [i, doc] of docs.entries()) {
    const res = await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/triggers`, {
      method: 'POST',
      body: doc,
      headers: { 'content-type': 'application/yaml' },
    });
    const text = await res.text();
    if (res.status >= 500) failures.push(`#${i}: ${res.status} ${text.slice(0, 100)}`);
    if (res.status < 300) continue; // some mutations are still valid (a comment, an extra retry)
    refused++;
    let body: { code?: string; message?: string } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      failures.push(`#${i}: not JSON: ${text.slice(0, 100)}`);
    }
    if (!body.code?.startsWith('TRELLIS_ERR_') || !body.message)
      failures.push(`#${i}: no code/message: ${text.slice(0, 100)}`);
  }
  expect(failures, failures.slice(0, 10).join('\n')).toEqual([]);
  expect(refused).toBeGreaterThan(docs.length / 2);
  expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
  const brokers = (await (
    await fetch(`${s.url}/apis/eventing.knative.dev/v1/namespaces/default/brokers`)
  ).json()) as { items: unknown[] };
  expect(brokers.items).toHaveLength(1);
  console.log(
    `yaml fuzz: ${docs.length} documents, ${refused} refused with a 4xx and a code, none crashed the server`,
  );

  // The same treatment through `trellis apply`: each bad file is reported, the command exits 1.
  const dir = mkdtempSync(join(tmpdir(), 'trellis-yaml-'));
  try {
    for (const [i, doc] of HOSTILE.slice(0, 4).entries()) {
      const file = join(dir, `bad-${i}.yaml`);
      writeFileSync(file, doc);
      const out = await run(['apply', '-f', file, '--server', s.url]);
      expect(out.code, out.stdout + out.stderr).toBe(1);
      expect(out.stderr).toMatch(/^error: /m);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
