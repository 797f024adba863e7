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

/** A valid document of every other kind, for the second corpus. */
const GOOD_OTHERS = [
  'apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  channel:\n    apiVersion: messaging.knative.dev/v1\n    kind: InMemoryChannel\n    name: c\n  subscriber:\n    uri: http://127.0.0.1:9/\n  reply:\n    uri: http://127.0.0.1:9/r\n',
  'apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata:\n  name: q\nspec:\n  steps:\n    - uri: http://127.0.0.1:9/a\n      delivery:\n        retry: 2\n    - uri: http://127.0.0.1:9/b\n  reply:\n    uri: http://127.0.0.1:9/r\n',
  'apiVersion: flows.knative.dev/v1\nkind: Parallel\nmetadata:\n  name: p\nspec:\n  branches:\n    - filter:\n        uri: http://127.0.0.1:9/f\n      subscriber:\n        uri: http://127.0.0.1:9/s\n  reply:\n    uri: http://127.0.0.1:9/r\n',
  'apiVersion: eventing.knative.dev/v1beta3\nkind: EventType\nmetadata:\n  name: e\nspec:\n  reference:\n    apiVersion: eventing.knative.dev/v1\n    kind: Broker\n    name: b\n  attributes:\n    - name: type\n      value: t\n      required: true\n  schemaData: \'{"type": "object"}\'\n',
  'apiVersion: eventing.knative.dev/v1alpha1\nkind: EventTransform\nmetadata:\n  name: x\nspec:\n  jsonata:\n    expression: "$"\n  sink:\n    uri: http://127.0.0.1:9/\n',
  'apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata:\n  name: c\nspec:\n  channelTemplate:\n    apiVersion: messaging.knative.dev/v1\n    kind: InMemoryChannel\n  delivery:\n    retry: 1\n',
  'apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n  type: ExternalName\n  externalName: 127.0.0.1\n  ports:\n    - port: 9\n',
];

function mutate(r: () => number, good = GOOD): string {
  const lines = good.split('\n');
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

it('every other kind too: mutated documents through bulk apply get a 4xx item with a code, never a 5xx', {
  timeout: 120_000,
}, async () => {
  await using s = await testServer();
  const r = prng(Number(process.env['TRELLIS_FUZZ_SEED'] ?? 11));
  const docs = Array.from({ length: 350 }, (_, i) => mutate(r, GOOD_OTHERS[i % GOOD_OTHERS.length]!));
  const failures: string[] = [];
  let refused = 0;
  for (const [i, doc] of docs.entries()) {
    const res = await fetch(`${s.url}/apis/apply`, {
      method: 'POST',
      body: doc,
      headers: { 'content-type': 'application/yaml' },
    });
    const text = await res.text();
    if (res.status >= 500) {
      failures.push(`#${i}: ${res.status} ${text.slice(0, 100)}`);
      continue;
    }
    const body = JSON.parse(text) as {
      code?: string;
      items?: { error?: { code?: string; message?: string } }[];
    };
    const errors =
      res.status >= 400
        ? [body as { code?: string; message?: string }]
        : (body.items ?? []).flatMap((x) => (x.error ? [x.error] : []));
    for (const e of errors) {
      refused++;
      if (!e.code?.startsWith('TRELLIS_ERR_') || !e.message || e.code === 'TRELLIS_ERR_INTERNAL')
        failures.push(`#${i}: ${JSON.stringify(e).slice(0, 120)}`);
    }
  }
  expect(failures, failures.slice(0, 10).join('\n')).toEqual([]);
  expect(refused).toBeGreaterThan(docs.length / 3);
  expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
  console.log(`yaml fuzz, other kinds: ${docs.length} documents, ${refused} refused with a code`);
});
