/** CESQL behaviour beyond the TCK: parse error positions, overflow, compiled once, fail-fast matching. */
import { describe, expect, it } from 'vitest';
import { CesqlError } from '../src/filter/cesql/ast.js';
import { compileCesql, likeToRegExp } from '../src/filter/cesql/compile.js';

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
    expect(likeToRegExp('a\\%b_c%').test('a%bxc-anything')).toBe(true);
    expect(likeToRegExp('a.c').test('abc')).toBe(false);
  });
});
