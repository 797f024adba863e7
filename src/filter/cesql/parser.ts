/**
 * CESQL v1 lexer and parser (cesql_spec.md §2): keywords are case-insensitive, attribute names are
 * lower-cased, and every error carries its position and what was expected.
 * @module
 */
import { type BinaryOp, CesqlError, type Node } from './ast.js';

type Tok =
  | { t: 'int'; v: number; raw: string; pos: number }
  | { t: 'str'; v: string; pos: number }
  | { t: 'word'; v: string; pos: number }
  | { t: 'op'; v: string; pos: number }
  | { t: 'eof'; pos: number };

const KEYWORDS = new Set(['AND', 'OR', 'XOR', 'NOT', 'LIKE', 'IN', 'EXISTS', 'TRUE', 'FALSE']);

function lex(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const pos = i;
    if (/[0-9]/.test(c)) {
      let j = i;
      while (j < src.length && /[0-9]/.test(src[j]!)) j++;
      if (j < src.length && /[A-Za-z_]/.test(src[j]!)) {
        // an identifier may start with a digit (attribute names are [a-z0-9]+)
        while (j < src.length && /[A-Za-z0-9_]/.test(src[j]!)) j++;
        out.push({ t: 'word', v: src.slice(i, j), pos });
      } else out.push({ t: 'int', v: Number(src.slice(i, j)), raw: src.slice(i, j), pos });
      i = j;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      let j = i;
      while (j < src.length && /[A-Za-z0-9_]/.test(src[j]!)) j++;
      out.push({ t: 'word', v: src.slice(i, j), pos });
      i = j;
      continue;
    }
    if (c === "'" || c === '"') {
      let j = i + 1;
      let s = '';
      for (;;) {
        if (j >= src.length)
          throw new CesqlError('parse', `unterminated string literal starting at position ${pos}`, pos);
        const d = src[j]!;
        if (d === '\\' && src[j + 1] === c) {
          s += c;
          j += 2;
          continue;
        }
        if (d === c) break;
        s += d;
        j++;
      }
      out.push({ t: 'str', v: s, pos });
      i = j + 1;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === '!=' || two === '<>' || two === '<=' || two === '>=') {
      out.push({ t: 'op', v: two === '<>' ? '!=' : two, pos });
      i += 2;
      continue;
    }
    if ('=<>+-*/%(),'.includes(c)) {
      out.push({ t: 'op', v: c, pos });
      i++;
      continue;
    }
    throw new CesqlError('parse', `unexpected character '${c}' at position ${pos}`, pos);
  }
  out.push({ t: 'eof', pos: src.length });
  return out;
}

const INT32_MAX = 2147483647;

/** The longest expression accepted, in characters. */
export const MAX_EXPRESSION_LENGTH = 16_384;
/** How deep sub-expressions may nest in the text (parentheses, NOT, -, function calls). */
export const MAX_DEPTH = 64;
/** The tallest syntax tree accepted (a chain of 1,000 operators is 1,000 tall). */
export const MAX_HEIGHT = 1000;

/**
 * Parses a CESQL expression into a tree. Throws {@link CesqlError} of kind `parse` with the position and
 * what was expected.
 */
export function parse(src: string): Node {
  if (src.length > MAX_EXPRESSION_LENGTH)
    throw new CesqlError(
      'parse',
      `the expression is ${src.length} characters long; at most ${MAX_EXPRESSION_LENGTH} are accepted`,
      MAX_EXPRESSION_LENGTH,
    );
  const toks = lex(src);
  let p = 0;
  // Nesting is bounded so that parsing, compiling and evaluating never exhaust the stack.
  let depth = 0;
  const enter = (pos: number) => {
    if (++depth > MAX_DEPTH)
      throw new CesqlError(
        'parse',
        `the expression nests deeper than ${MAX_DEPTH} levels at position ${pos}; split it into several filters`,
        pos,
      );
  };
  const peek = () => toks[p]!;
  const describe = (t: Tok) =>
    t.t === 'eof'
      ? 'the end of the expression'
      : `'${t.t === 'str' ? t.v : String((t as { v: unknown }).v)}'`;
  const fail = (expected: string): never => {
    const t = peek();
    throw new CesqlError('parse', `expected ${expected} at position ${t.pos}, found ${describe(t)}`, t.pos);
  };
  // Each node's height, so a long chain of operators cannot make compiling or evaluating recurse too deep.
  const heights = new WeakMap<Node, number>();
  const h = (n: Node) => heights.get(n) ?? 1;
  const node = <N extends Node>(n: N, ...children: Node[]): N => {
    let m = 0;
    for (const c of children) m = Math.max(m, h(c));
    if (m + 1 > MAX_HEIGHT)
      throw new CesqlError(
        'parse',
        `the expression is more than ${MAX_HEIGHT} operators deep at position ${n.pos}; split it into several filters`,
        n.pos,
      );
    heights.set(n, m + 1);
    return n;
  };
  const isKw = (t: Tok, kw: string) => t.t === 'word' && t.v.toUpperCase() === kw;
  const isOp = (t: Tok, op: string) => t.t === 'op' && t.v === op;
  const expectOp = (op: string) => {
    if (!isOp(peek(), op)) fail(`'${op}'`);
    p++;
  };

  // Precedence, loosest first (§3.6): AND/OR/XOR; comparisons; + -; * / %; then the postfix LIKE and IN,
  // the prefix NOT, - and EXISTS, and function calls, literals, identifiers and sub-expressions.
  const LEVELS: readonly (readonly string[])[] = [
    ['AND', 'OR', 'XOR'],
    ['=', '!=', '<', '<=', '>', '>='],
    ['+', '-'],
    ['*', '/', '%'],
  ];
  const binaryAt = (level: number): Node => {
    if (level === LEVELS.length) return postfix();
    let left = binaryAt(level + 1);
    for (;;) {
      const t = peek();
      const op = t.t === 'op' ? t.v : t.t === 'word' ? t.v.toUpperCase() : '';
      if (!LEVELS[level]!.includes(op) || (t.t === 'word' && level !== 0) || (t.t === 'op' && level === 0))
        return left;
      p++;
      const right = binaryAt(level + 1);
      left = node({ k: 'bin', op: op as BinaryOp, l: left, r: right, pos: t.pos }, left, right);
    }
  };
  const postfix = (): Node => {
    let e = unary();
    for (;;) {
      const t = peek();
      let not = false;
      if (isKw(t, 'NOT') && (isKw(toks[p + 1]!, 'LIKE') || isKw(toks[p + 1]!, 'IN'))) {
        not = true;
        p++;
      }
      const u = peek();
      if (isKw(u, 'LIKE')) {
        p++;
        const pat = peek();
        if (pat.t !== 'str') fail('a string literal as the LIKE pattern');
        p++;
        e = node({ k: 'like', e, pattern: (pat as { v: string }).v, not, pos: u.pos }, e);
      } else if (isKw(u, 'IN')) {
        p++;
        expectOp('(');
        const set: Node[] = [binaryAt(0)];
        while (isOp(peek(), ',')) {
          p++;
          set.push(binaryAt(0));
        }
        expectOp(')');
        e = node({ k: 'in', e, set, not, pos: u.pos }, e, ...set);
      } else {
        if (not) fail('LIKE or IN after NOT');
        return e;
      }
    }
  };
  const unary = (): Node => {
    const t = peek();
    if (isKw(t, 'NOT')) {
      p++;
      enter(t.pos);
      const e = unary();
      depth--;
      return node({ k: 'not', e, pos: t.pos }, e);
    }
    if (isOp(t, '-')) {
      p++;
      const n = peek();
      if (n.t === 'int') {
        p++;
        if (Number(n.raw) > INT32_MAX + 1)
          throw new CesqlError(
            'parse',
            `integer literal -${n.raw} at position ${t.pos} is outside 32 bits`,
            t.pos,
          );
        return { k: 'lit', v: -Number(n.raw), pos: t.pos };
      }
      enter(t.pos);
      const e = unary();
      depth--;
      return node({ k: 'neg', e, pos: t.pos }, e);
    }
    if (isOp(t, '+') && toks[p + 1]?.t === 'int') p++;
    if (isKw(t, 'EXISTS')) {
      p++;
      const id = peek();
      if (id.t !== 'word' || KEYWORDS.has(id.v.toUpperCase())) fail('an attribute name after EXISTS');
      p++;
      return { k: 'exists', name: (id as { v: string }).v.toLowerCase(), pos: t.pos };
    }
    return primary();
  };
  const primary = (): Node => {
    const t = peek();
    if (t.t === 'int') {
      p++;
      if (t.v > INT32_MAX)
        throw new CesqlError(
          'parse',
          `integer literal ${t.raw} at position ${t.pos} is outside 32 bits`,
          t.pos,
        );
      return { k: 'lit', v: t.v, pos: t.pos };
    }
    if (t.t === 'str') {
      p++;
      return { k: 'lit', v: t.v, pos: t.pos };
    }
    if (isOp(t, '(')) {
      p++;
      enter(t.pos);
      const e = binaryAt(0);
      expectOp(')');
      depth--;
      return e;
    }
    if (t.t === 'word') {
      const up = t.v.toUpperCase();
      if (up === 'TRUE' || up === 'FALSE') {
        p++;
        return { k: 'lit', v: up === 'TRUE', pos: t.pos };
      }
      if (isOp(toks[p + 1]!, '(')) {
        if (!/^[A-Za-z][A-Za-z_]*$/.test(t.v)) fail('a function name (letters and _)');
        p += 2;
        enter(t.pos);
        const args: Node[] = [];
        if (!isOp(peek(), ')')) {
          args.push(binaryAt(0));
          while (isOp(peek(), ',')) {
            p++;
            args.push(binaryAt(0));
          }
        }
        expectOp(')');
        depth--;
        return node({ k: 'call', name: up, args, pos: t.pos }, ...args);
      }
      if (KEYWORDS.has(up)) fail('a value');
      if (!/^[A-Za-z0-9]+$/.test(t.v)) fail('an attribute name (letters and digits)');
      p++;
      return { k: 'id', name: t.v.toLowerCase(), pos: t.pos };
    }
    return fail('a value, an attribute, a function call or (');
  };

  const e = binaryAt(0);
  if (peek().t !== 'eof') fail('an operator or the end of the expression');
  return e;
}
