/** The CloudEvents JSON-format conformance cases from ../shared/conformance/format/json/ (43 cases). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeHttp, encodeBatch, encodeStructured } from '../src/cloudevents/http.js';
import { batchFromJson, eventFromJson, eventToJson } from '../src/cloudevents/json-format.js';
import { sharedPath } from './helpers/shared.js';

interface Case {
  id: string;
  testType?: string;
  event?: unknown;
  batch?: unknown;
}
interface CaseFile {
  testType: string;
  tests: Case[];
}

const dir = sharedPath('conformance/format/json');
const files = ['valid-events.json', 'invalid-events.json', 'valid-batches.json', 'invalid-batches.json'];
const cases: { file: string; type: string; c: Case }[] = [];
if (dir) {
  for (const f of files) {
    const data = JSON.parse(readFileSync(join(dir, f), 'utf8')) as CaseFile;
    for (const c of data.tests) cases.push({ file: f, type: c.testType ?? data.testType, c });
  }
}
let passed = 0;

describe.skipIf(!dir)('JSON format conformance', () => {
  afterAll(() => {
    console.log(`JSON format conformance: ${passed} of ${cases.length} cases passed`);
  });

  it('has the 43 cases', () => {
    expect(cases.length).toBe(43);
  });

  for (const { file, type, c } of cases) {
    it(`${file} ${c.id} (${type})`, () => {
      switch (type) {
        case 'ValidSingleEvent': {
          const e = eventFromJson(c.event);
          // Same event through the structured HTTP mode and back.
          const msg = encodeStructured(e);
          const back = decodeHttp(
            ['content-type', msg.headers['content-type']!],
            Buffer.from(msg.body as string),
          ).events[0]!;
          expect(back).toEqual(e);
          const json = eventToJson(e);
          for (const [k, v] of Object.entries(c.event as Record<string, unknown>))
            if (v !== null) expect(json[k]).toEqual(v);
          break;
        }
        case 'InvalidSingleEvent':
          expect(() => eventFromJson(c.event)).toThrow();
          break;
        case 'ValidBatch': {
          const events = batchFromJson(c.batch);
          expect(events.length).toBe((c.batch as unknown[]).length);
          const msg = encodeBatch(events);
          expect(
            decodeHttp(['content-type', msg.headers['content-type']!], Buffer.from(msg.body as string))
              .events,
          ).toEqual(events);
          break;
        }
        case 'InvalidBatch':
          expect(() => batchFromJson(c.batch)).toThrow();
          break;
        default:
          throw new Error(`unknown test type ${type}`);
      }
      passed++;
    });
  }
});
