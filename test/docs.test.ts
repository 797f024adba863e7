/** The documentation keeps up with the code: every error code is documented, every example applies. */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../src/errors.js';
import { compileFilters, validateFilters } from '../src/filter/dialect.js';
import { parseDocuments } from '../src/resources/registry.js';
import { testServer } from './helpers/server.js';
import { ROOT } from './helpers/shared.js';

describe('docs', () => {
  it('documents every error code in docs/errors.md, with a fix', () => {
    const text = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8');
    for (const [code, { status }] of Object.entries(ERRORS)) {
      const heading = `### ${code} (${status})`;
      expect(text, `docs/errors.md lacks '${heading}'`).toContain(heading);
      const section = text.slice(text.indexOf(heading)).split('\n### ')[0]!;
      expect(section, `${code} has no **Fix:**`).toContain('**Fix:**');
    }
  });

  it('every example in docs/examples applies cleanly', async () => {
    // The tour's examples use Broker 'default'; the programs the examples name are run.
    await using s = await testServer({ quickstart: true, allowCommands: true });
    const dir = join(ROOT, 'docs', 'examples');
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThan(3);
    for (const f of files) {
      for (const doc of parseDocuments(readFileSync(join(dir, f), 'utf8'))) {
        const res = await s.apply(doc as Record<string, unknown>);
        expect(res.status, `${f}: ${await res.clone().text()}`).toBeLessThan(300);
      }
    }
    type Listed = {
      items: { metadata: { name: string }; status: { conditions: { type: string; status: string }[] } }[];
    };
    const notReady = async (path: string) =>
      ((await (await fetch(`${s.url}${path}`)).json()) as Listed).items
        .filter((t) => t.status.conditions[0]?.status !== 'True')
        .map((t) => t.metadata.name);
    // A Trigger to a program Trellis runs (knative-service.yaml) is Ready once the program has a port;
    // the program is Ready once it listens there.
    await expect
      .poll(() => notReady('/apis/eventing.knative.dev/v1/triggers'), { timeout: 15_000 })
      .toEqual([]);
    await expect
      .poll(() => notReady('/apis/serving.knative.dev/v1/services'), { timeout: 15_000 })
      .toEqual([]);
    const pings = (await (await fetch(`${s.url}/apis/sources.knative.dev/v1/pingsources`)).json()) as {
      items: { metadata: { name: string }; status: { conditions: { type: string; status: string }[] } }[];
    };
    expect(pings.items.length).toBeGreaterThan(0);
    for (const p of pings.items)
      expect(
        p.status.conditions.find((c) => c.type === 'Ready'),
        `PingSource ${p.metadata.name} is not Ready`,
      ).toMatchObject({ status: 'True' });
  });

  it('the SDK example program (docs/examples/sdk-example.mjs) runs against a server', {
    timeout: 60_000,
  }, async () => {
    await using s = await testServer({ quickstart: true });
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [join(ROOT, 'docs', 'examples', 'sdk-example.mjs')], {
        env: { ...process.env, TRELLIS_SERVER: s.url },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout.split('\n').filter(Boolean).sort()).toEqual([
      'job 1 done',
      'job 2 done',
      'job 3 done',
      'quote for A1: 42',
    ]);
  });

  it('the filter examples in docs/filters.md select the events the page says', () => {
    const load = (f: string) => {
      const doc = parseDocuments(readFileSync(join(ROOT, 'docs', 'examples', f), 'utf8'))[0] as {
        spec: { filters: unknown };
      };
      return compileFilters(validateFilters('spec.filters', doc.spec.filters));
    };
    const e = (attrs: Record<string, string>) => ({ attrs: { specversion: '1.0', id: '1', ...attrs } });
    const big = load('filters-dialect.yaml');
    expect(big(e({ type: 'order.created', source: '/shop/eu/checkout', amount: '150' }))).toBe(true);
    expect(big(e({ type: 'order.created', source: '/shop/eu/checkout', amount: '50' }))).toBe(false);
    expect(big(e({ type: 'order.created', source: '/shop/asia/checkout', amount: '150' }))).toBe(false);
    expect(
      big(e({ type: 'order.created', source: '/shop/us/checkout', amount: '150', subject: 'o1.test' })),
    ).toBe(false);
    const eu = load('filters-sql.yaml');
    expect(eu(e({ type: 'user.created', source: '/s', region: 'eu-west', email: 'a@b' }))).toBe(true);
    expect(eu(e({ type: 'user.created', source: '/s', region: 'eu-west' }))).toBe(false);
    expect(eu(e({ type: 'user.created', source: '/s', region: 'us-east', email: 'a@b' }))).toBe(false);
  });

  it('the README gives the two set-up commands', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain('npm install && npm start');
    expect(readme).toContain('npm test');
  });
});
