/**
 * Bounds on how deeply a resource document may nest, checked before and after parsing so that no parser,
 * validator or encoder recurses over hostile input (YAML and JSON parsers and JSON.stringify all recurse).
 * @module
 */
import { jsonDepthExceeded } from '../cloudevents/json-depth.js';
import { TrellisError } from '../errors.js';

/** The deepest nesting a resource document may have (Knative's resources nest about ten levels). */
export const MAX_DOCUMENT_DEPTH = 64;

function tooDeep(where: string): never {
  throw new TrellisError(
    'TRELLIS_ERR_RESOURCE_PARSE',
    `the document nests deeper than ${MAX_DOCUMENT_DEPTH} levels (${where}); no Trellis resource needs that`,
  );
}

/** Refuses JSON text that nests too deeply, before it is parsed. */
export function checkJsonTextDepth(text: string): void {
  const at = jsonDepthExceeded(text, MAX_DOCUMENT_DEPTH);
  if (at >= 0) tooDeep(`at offset ${at}`);
}

/**
 * Refuses YAML text that nests too deeply, before it is parsed: flow collections (`[`, `{` outside quotes
 * and comments) and block nesting (indentation, `- ` and `? ` entries) are counted in one linear pass.
 * An estimate: the parsed value is checked again with {@link checkValueDepth}.
 */
export function checkYamlTextDepth(text: string): void {
  const indents: number[] = [];
  let line = 1;
  let i = 0;
  let flow = 0;
  while (i < text.length) {
    // The start of a line: its block depth (indentation, plus 2 columns per leading '- ' or '? ').
    let col = 0;
    while (text.charCodeAt(i) === 0x20) {
      i++;
      col++;
    }
    while ((text[i] === '-' || text[i] === '?') && (text[i + 1] === ' ' || text[i + 1] === '\t')) {
      i += 2;
      col += 2;
      while (text.charCodeAt(i) === 0x20) {
        i++;
        col++;
      }
      if (flow === 0) {
        while (indents.length > 0 && indents[indents.length - 1]! >= col) indents.pop();
        indents.push(col);
        if (indents.length > MAX_DOCUMENT_DEPTH) tooDeep(`line ${line}`);
      }
    }
    const blank = i >= text.length || text[i] === '\n' || text[i] === '#' || text[i] === '\r';
    if (!blank && flow === 0) {
      while (indents.length > 0 && indents[indents.length - 1]! >= col) indents.pop();
      indents.push(col);
      if (indents.length > MAX_DOCUMENT_DEPTH) tooDeep(`line ${line}`);
    }
    // The rest of the line: flow brackets outside quotes and comments.
    let quote = '';
    for (; i < text.length && text[i] !== '\n'; i++) {
      const c = text[i]!;
      if (quote !== '') {
        if (quote === '"' && c === '\\') i++;
        else if (c === quote) quote = '';
      } else if (c === '"' || c === "'") quote = c;
      else if (c === '#' && (i === 0 || text[i - 1] === ' ' || text[i - 1] === '\t')) {
        while (i < text.length && text[i] !== '\n') i++;
        break;
      } else if (c === '[' || c === '{') {
        if (++flow + indents.length > MAX_DOCUMENT_DEPTH) tooDeep(`line ${line}`);
      } else if ((c === ']' || c === '}') && flow > 0) flow--;
    }
    i++;
    line++;
  }
}

/** Refuses a parsed value that nests too deeply (an iterative walk, so it cannot overflow the stack). */
export function checkValueDepth(v: unknown): void {
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop()!;
    if (x === null || typeof x !== 'object') continue;
    if (d >= MAX_DOCUMENT_DEPTH) tooDeep(`${d} levels of lists and maps`);
    for (const c of Object.values(x as Record<string, unknown>))
      if (c !== null && typeof c === 'object') stack.push([c, d + 1]);
  }
}
