/** CESQL behaviour beyond the TCK: parse error positions, overflow, compiled once, fail-fast matching. */
import { describe, expect, it } from 'vitest';
import { CesqlError } from '../src/filter/cesql/ast.js';
import { compileCesql } from '../src/filter/cesql/compile.js';
import { compileLike } from '../src/filter/cesql/like.js';

function parseError(src: string): CesqlError {
  try {
    compileCesql(src);
  } catch (err) {
    if (err instanceof CesqlError) return err;
    throw err;
  }
  throw new Error(`'${src}' parsed`);
}

describe('CESQL', () => {
  it('reports parse errors with the position and what was expected', () => {
    const e = parseError("type = 'a' AND");
    expect(e.kind).toBe('parse');
    expect(e.position).toBe(14);
    expect(e.message).toMatch(/expected a value.*position 14/);
    expect(parseError('subject LIKE 5').message).toMatch(/string literal as the LIKE pattern/);
    expect(parseError('2147483648').message).toMatch(/outside 32 bits/);
    expect(parseError("'open").message).toMatch(/unterminated string/);
    expect(parseError('a ? b').position).toBe(2);
  });

  it('accepts -2147483648 and reports overflow as a math error', () => {
    expect(compileCesql('-2147483648').evaluate({}).value).toBe(-2147483648);
    const r = compileCesql('2147483647 + 1').evaluate({});
    expect(r.errors.map((e) => e.kind)).toEqual(['math']);
  });

  it('matches as a filter only on a Boolean true without errors', () => {
    const attrs = { specversion: '1.0', id: '1', source: '/s', type: 'order.created', amount: '150' };
    expect(compileCesql("type LIKE 'order.%' AND INT(amount) > 100").matches(attrs)).toBe(true);
    expect(compileCesql('INT(amount)').matches(attrs)).toBe(false);
    expect(compileCesql('missing = 1 OR TRUE').matches(attrs)).toBe(false);
    expect(compileCesql("INT('x') = 0").matches(attrs)).toBe(false);
  });

  it('compiles LIKE patterns with escapes', () => {
    const cases: [string, string, boolean][] = [
      ['a\\%b_c%', 'a%bxc-anything', true],
      ['a.c', 'abc', false],
      ['%', '', true],
      ['_', '', false],
      ['_', '\u00e9', true],
      ['_', '\u{1F600}', true],
      ['a%', 'a', true],
      ['%a%b%', 'xaxb', true],
      ['%ab', 'ab', true],
      ['a%a', 'a', false],
      ['%b_', 'abc', true],
      ['x%_%y', 'xy', false],
      ['x%_%y', 'xzy', true],
      ['%aa%aa', 'aaa', false],
      ['%aa%aa', 'aaaa', true],
      ['a\\_b', 'a_b', true],
      ['a\\_b', 'axb', false],
    ];
    for (const [pattern, value, want] of cases)
      expect([pattern, value, compileLike(pattern)(value)]).toEqual([pattern, value, want]);
  });

  it('matches LIKE in time linear in the value, whatever the pattern', () => {
    // A backtracking RegExp takes minutes on these; the segment matcher takes a few milliseconds.
    const long = 'a'.repeat(200_000);
    expect(compileLike('%a%a%a%a%b')(long)).toBe(false);
    expect(compileLike('%a_a%a_a%a_b')(long)).toBe(false);
    expect(compileCesql("subject LIKE '%a%a%a%a%b'").matches({ subject: long })).toBe(false);
    expect(compileCesql("subject LIKE '%a%a%a%a%'").matches({ subject: long })).toBe(true);
  });

  it('refuses expressions too long or too deep with a parse error, never a stack overflow', () => {
    expect(parseError('('.repeat(5000) + '1' + ')'.repeat(5000)).message).toMatch(/nests deeper than 64/);
    expect(parseError(`${'NOT '.repeat(4000)}TRUE`).message).toMatch(/nests deeper than 64/);
    expect(parseError(`${'ABS('.repeat(3000)}1${')'.repeat(3000)}`).message).toMatch(/nests deeper/);
    expect(parseError(Array(3000).fill('1').join('+')).message).toMatch(/more than 1000 operators deep/);
    expect(parseError(`a = '${'x'.repeat(20_000)}'`).message).toMatch(/at most 16384/);
    // Just inside the bounds: parses, compiles and evaluates.
    expect(compileCesql(Array(999).fill('1').join('+')).evaluate({}).value).toBe(999);
    expect(compileCesql(`${'('.repeat(60)}TRUE${')'.repeat(60)}`).evaluate({}).value).toBe(true);
  });
});
