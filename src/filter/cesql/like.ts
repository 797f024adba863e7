/**
 * CESQL `LIKE` matching without regular expressions: the pattern is split at `%` into segments and each
 * segment is found leftmost-first, so the cost is linear in the value's length for any pattern (a
 * backtracking RegExp is exponential for patterns such as `%a%a%a%b`).
 * @module
 */

/** One character of a segment: a literal code point, or `_` (any one character). */
type Item = string | typeof ANY;
const ANY = Symbol('any');

/**
 * Compiles a LIKE pattern (`%` any run, `_` one character, `\%` and `\_` themselves) into a matcher.
 *
 * @example
 * compileLike('order.%')('order.created'); // true
 */
export function compileLike(pattern: string): (value: string) => boolean {
  const segments: Item[][] = [[]];
  let hasAny = false;
  const cps = Array.from(pattern);
  for (let i = 0; i < cps.length; i++) {
    const ch = cps[i]!;
    const cur = segments[segments.length - 1]!;
    if (ch === '\\' && (cps[i + 1] === '%' || cps[i + 1] === '_')) cur.push(cps[++i]!);
    else if (ch === '%') segments.push([]);
    else if (ch === '_') {
      cur.push(ANY);
      hasAny = true;
    } else cur.push(ch);
  }
  if (!hasAny) {
    const parts = segments.map((s) => s.join(''));
    return (v) => matchStrings(parts, v);
  }
  return (v) => matchItems(segments, Array.from(v));
}

/** Segments without `_`: plain string search on UTF-16 (whole code points never match half a pair). */
function matchStrings(parts: string[], v: string): boolean {
  if (parts.length === 1) return v === parts[0];
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  if (v.length < first.length + last.length) return false;
  if (!v.startsWith(first) || !v.endsWith(last)) return false;
  let pos = first.length;
  const end = v.length - last.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const p = parts[i]!;
    if (p === '') continue;
    const at = v.indexOf(p, pos);
    if (at < 0 || at + p.length > end) return false;
    pos = at + p.length;
  }
  return true;
}

function matchAt(seg: Item[], v: string[], at: number): boolean {
  for (let j = 0; j < seg.length; j++) {
    const it = seg[j]!;
    if (it !== ANY && v[at + j] !== it) return false;
  }
  return true;
}

/** Segments with `_`: code points; each middle segment is found leftmost-first (O(length × segment)). */
function matchItems(segments: Item[][], v: string[]): boolean {
  if (segments.length === 1) return v.length === segments[0]!.length && matchAt(segments[0]!, v, 0);
  const first = segments[0]!;
  const last = segments[segments.length - 1]!;
  if (v.length < first.length + last.length) return false;
  const end = v.length - last.length;
  if (!matchAt(first, v, 0) || !matchAt(last, v, end)) return false;
  let pos = first.length;
  for (let i = 1; i < segments.length - 1; i++) {
    const seg = segments[i]!;
    let found = -1;
    for (let at = pos; at + seg.length <= end; at++) {
      if (matchAt(seg, v, at)) {
        found = at;
        break;
      }
    }
    if (found < 0) return false;
    pos = found + seg.length;
  }
  return true;
}
