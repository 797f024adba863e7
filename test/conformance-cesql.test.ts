/** The CESQL v1 TCK from ../shared/conformance/cesql-tck/ (275 cases in 18 files), as its own test file. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { AttributeValue } from '../src/cloudevents/event.js';
import { CesqlError } from '../src/filter/cesql/ast.js';
import { compileCesql } from '../src/filter/cesql/compile.js';
import { sharedPath } from './helpers/shared.js';

interface TckCase {
  name: string;
  expression: unknown;
  result?: unknown;
  error?: string;
  event?: Record<string, unknown>;
  eventOverrides?: Record<string, unknown>;
}

const dir = sharedPath('conformance/cesql-tck');
const suites: { file: string; name: string; tests: TckCase[] }[] = [];
if (dir) {
  for (const f of readdirSync(dir)
    .filter((x) => x.endsWith('.yaml'))
    .sort()) {
    // The core schema keeps TRUE, 1 and timestamps as the TCK means them (see the conformance README).
    const doc = parseYaml(readFileSync(join(dir, f), 'utf8'), { schema: 'core' }) as {
      name: string;
      tests: TckCase[];
    };
    suites.push({ file: f, name: doc.name, tests: doc.tests });
  }
}
const total = suites.reduce((n, s) => n + s.tests.length, 0);
let passed = 0;

function eventOf(c: TckCase): Record<string, AttributeValue> {
  const base: Record<string, unknown> = c.event ?? {
    specversion: '1.0',
    id: 'tck-id',
    source: 'https://tck.example/source',
    type: 'tck.type',
    ...c.eventOverrides,
  };
  const attrs: Record<string, AttributeValue> = {};
  for (const [k, v] of Object.entries(base))
    if (v !== null && v !== undefined) attrs[k] = v as AttributeValue;
  return attrs;
}

describe.skipIf(!dir)('CESQL TCK', () => {
  afterAll(() => {
    console.log(`CESQL TCK: ${passed} of ${total} cases passed`);
  });

  it('has the 275 cases', () => {
    expect(total).toBe(275);
  });

  for (const s of suites) {
    describe(s.file, () => {
      for (const c of s.tests) {
        it(c.name, () => {
          const source = String(c.expression);
          let compiled: ReturnType<typeof compileCesql>;
          try {
            compiled = compileCesql(source);
          } catch (err) {
            expect(err).toBeInstanceOf(CesqlError);
            expect(c.error, `unexpected parse error: ${(err as Error).message}`).toBe('parse');
            passed++;
            return;
          }
          expect(c.error, `'${source}' should not parse`).not.toBe('parse');
          const r = compiled.evaluate(eventOf(c));
          if (c.result !== undefined) expect(r.value).toStrictEqual(c.result);
          if (c.error) expect(r.errors.map((e) => e.kind)).toContain(c.error);
          else expect(r.errors.map((e) => `${e.kind}: ${e.message}`)).toEqual([]);
          passed++;
        });
      }
    });
  }
});
