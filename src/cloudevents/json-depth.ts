/**
 * How deeply a JSON text nests, found in one linear pass without parsing, so that input too deep to
 * re-encode (V8's JSON.stringify recurses) is refused before anything recurses over it.
 * @module
 */

/** The deepest JSON nesting Trellis accepts in a structured event (arrays and objects). */
export const MAX_JSON_DEPTH = 512;

/**
 * Returns the offset at which `text` nests deeper than `max`, or -1 when it does not. Brackets inside
 * strings are skipped; the text need not be valid JSON.
 *
 * @example
 * jsonDepthExceeded('[[1]]', 1); // 1
 */
export function jsonDepthExceeded(text: string, max: number): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return i;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return -1;
}
