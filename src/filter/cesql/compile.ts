/**
 * CESQL v1 semantics (cesql_spec.md §3): an expression is compiled once into a tree of closures; each
 * evaluation returns a value and the list of errors met, as the spec asks (errors are values, never
 * thrown). An operator or function whose operand met an error (a missing attribute, a division by zero,
 * a failed cast inside it) returns the zero value of its type, keeping the error, as the TCK expects;
 * an operator's own cast that fails goes on with the cast's zero value.
 * @module
 */
import type { AttributeValue } from '../../cloudevents/event.js';
import { CesqlError, type Node, type Value, type ValueType } from './ast.js';
import { compileLike } from './like.js';
import { parse } from './parser.js';

interface Ctx {
  attrs: Readonly<Record<string, AttributeValue>>;
  errors: CesqlError[];
}

const MISSING = Symbol('missing');
type Out = Value | typeof MISSING;
type Ev = (c: Ctx) => Out;

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

function typeOf(v: Value): ValueType {
  return typeof v === 'string' ? 'String' : typeof v === 'number' ? 'Integer' : 'Boolean';
}

function zero(t: ValueType): Value {
  return t === 'String' ? '' : t === 'Integer' ? 0 : false;
}

function toInt(v: Value, c: Ctx): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (/^[+-]?[0-9]+$/.test(v)) {
    const n = Number(v);
    if (n >= INT32_MIN && n <= INT32_MAX) return n;
  }
  c.errors.push(new CesqlError('cast', `cannot cast '${v}' to Integer`));
  return 0;
}

function toBool(v: Value, c: Ctx): boolean {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v !== 0;
  const l = v.toLowerCase();
  if (l === 'true') return true;
  if (l === 'false') return false;
  c.errors.push(new CesqlError('cast', `cannot cast '${v}' to Boolean`));
  return false;
}

/**
 * The implicit cast to Boolean that operators (NOT, AND, OR, XOR) apply. An Integer operand is a cast
 * error here, as in the TCK and the reference SDKs, although BOOL(x) converts it (see docs/filters.md).
 */
function implicitBool(v: Value, c: Ctx): boolean {
  if (typeof v === 'number') {
    c.errors.push(
      new CesqlError('cast', `cannot use the Integer ${v} as a Boolean; write BOOL(${v}) to convert it`),
    );
    return false;
  }
  return toBool(v, c);
}

function toStr(v: Value): string {
  return typeof v === 'string' ? v : String(v);
}

function cast(v: Value, t: ValueType, c: Ctx): Value {
  return t === 'Integer' ? toInt(v, c) : t === 'Boolean' ? implicitBool(v, c) : toStr(v);
}

/** Wraps to 32 bits; an overflow is a MathError (the spec leaves it open; this is Trellis's choice). */
function int32(n: number, c: Ctx): number {
  if (n < INT32_MIN || n > INT32_MAX) {
    c.errors.push(new CesqlError('math', `integer overflow: ${n} is outside 32 bits`));
    return n | 0;
  }
  return n;
}

interface Fn {
  params: ValueType[] | 'any';
  variadic?: ValueType;
  returns: ValueType;
  call(args: Value[], c: Ctx): Value;
}

const chars = (s: string) => Array.from(s);

const FUNCTIONS: Record<string, Fn[]> = {
  LENGTH: [{ params: ['String'], returns: 'Integer', call: ([s]) => chars(s as string).length }],
  CONCAT: [{ params: [], variadic: 'String', returns: 'String', call: (a) => a.join('') }],
  CONCAT_WS: [
    { params: ['String'], variadic: 'String', returns: 'String', call: ([d, ...a]) => a.join(d as string) },
  ],
  LOWER: [{ params: ['String'], returns: 'String', call: ([s]) => (s as string).toLowerCase() }],
  UPPER: [{ params: ['String'], returns: 'String', call: ([s]) => (s as string).toUpperCase() }],
  TRIM: [{ params: ['String'], returns: 'String', call: ([s]) => (s as string).trim() }],
  LEFT: [
    {
      params: ['String', 'Integer'],
      returns: 'String',
      call: ([s, n], c) => {
        if ((n as number) < 0) {
          c.errors.push(new CesqlError('functionEvaluation', `LEFT: the length ${n} is negative`));
          return s as string;
        }
        return chars(s as string)
          .slice(0, n as number)
          .join('');
      },
    },
  ],
  RIGHT: [
    {
      params: ['String', 'Integer'],
      returns: 'String',
      call: ([s, n], c) => {
        if ((n as number) < 0) {
          c.errors.push(new CesqlError('functionEvaluation', `RIGHT: the length ${n} is negative`));
          return s as string;
        }
        const cs = chars(s as string);
        return n === 0 ? '' : cs.slice(Math.max(0, cs.length - (n as number))).join('');
      },
    },
  ],
  SUBSTRING: [
    {
      params: ['String', 'Integer'],
      returns: 'String',
      call: ([s, pos], c) => substring(s as string, pos as number, undefined, c),
    },
    {
      params: ['String', 'Integer', 'Integer'],
      returns: 'String',
      call: ([s, pos, len], c) => substring(s as string, pos as number, len as number, c),
    },
  ],
  ABS: [
    {
      params: ['Integer'],
      returns: 'Integer',
      call: ([n], c) => {
        if (n === INT32_MIN) {
          c.errors.push(new CesqlError('math', 'ABS(-2147483648) overflows 32 bits'));
          return INT32_MAX;
        }
        return Math.abs(n as number);
      },
    },
  ],
  INT: [{ params: 'any', returns: 'Integer', call: ([v], c) => toInt(v!, c) }],
  BOOL: [{ params: 'any', returns: 'Boolean', call: ([v], c) => toBool(v!, c) }],
  STRING: [{ params: 'any', returns: 'String', call: ([v]) => toStr(v!) }],
};

function substring(s: string, pos: number, len: number | undefined, c: Ctx): string {
  const cs = chars(s);
  if (pos > cs.length || pos < -cs.length) {
    c.errors.push(
      new CesqlError(
        'functionEvaluation',
        `SUBSTRING: position ${pos} is outside a string of length ${cs.length}`,
      ),
    );
    return '';
  }
  if (len !== undefined && len < 0) {
    c.errors.push(new CesqlError('functionEvaluation', `SUBSTRING: the length ${len} is negative`));
    return '';
  }
  if (pos === 0) return '';
  const start = pos > 0 ? pos - 1 : cs.length + pos;
  return cs.slice(start, len === undefined ? undefined : start + len).join('');
}

interface Compiled {
  ev: Ev;
  /** The static return type, or undefined when it depends on the event (an attribute). */
  type: ValueType | undefined;
}

function compileNode(n: Node): Compiled {
  switch (n.k) {
    case 'lit': {
      const v = n.v;
      return { ev: () => v, type: typeOf(v) };
    }
    case 'id': {
      const name = n.name;
      return {
        ev: (c) => {
          const v = c.attrs[name];
          if (v === undefined) {
            c.errors.push(new CesqlError('missingAttribute', `attribute '${name}' is missing`));
            return MISSING;
          }
          return v;
        },
        type: undefined,
      };
    }
    case 'exists': {
      const name = n.name;
      return { ev: (c) => c.attrs[name] !== undefined, type: 'Boolean' };
    }
    case 'not': {
      const e = compileNode(n.e).ev;
      return {
        ev: (c) => {
          const n = c.errors.length;
          const v = e(c);
          return v === MISSING || c.errors.length > n ? false : !implicitBool(v, c);
        },
        type: 'Boolean',
      };
    }
    case 'neg': {
      const e = compileNode(n.e).ev;
      return {
        ev: (c) => {
          const n = c.errors.length;
          const v = e(c);
          return v === MISSING || c.errors.length > n ? 0 : int32(-toInt(v, c), c);
        },
        type: 'Integer',
      };
    }
    case 'like': {
      const e = compileNode(n.e).ev;
      const like = compileLike(n.pattern);
      const not = n.not;
      return {
        ev: (c) => {
          const n = c.errors.length;
          const v = e(c);
          if (v === MISSING || c.errors.length > n) return false;
          return like(toStr(v)) !== not;
        },
        type: 'Boolean',
      };
    }
    case 'in': {
      const e = compileNode(n.e).ev;
      const set = n.set.map((s) => compileNode(s).ev);
      const not = n.not;
      return {
        ev: (c) => {
          const n = c.errors.length;
          const v = e(c);
          const xs = set.map((s) => s(c));
          if (v === MISSING || c.errors.length > n) return false;
          // The left operand's type is the target type of the set's elements (§3.7).
          const t = typeOf(v);
          let found = false;
          for (const x of xs) if (x !== MISSING && cast(x, t, c) === v) found = true;
          return found !== not;
        },
        type: 'Boolean',
      };
    }
    case 'call':
      return compileCall(n.name, n.args.map(compileNode));
    case 'bin':
      return compileBinary(n.op, compileNode(n.l), compileNode(n.r));
  }
}

function compileCall(name: string, args: Compiled[]): Compiled {
  const overloads = FUNCTIONS[name];
  const fn = overloads?.find((f) =>
    f.params === 'any'
      ? args.length === 1
      : f.variadic
        ? args.length >= f.params.length
        : args.length === f.params.length,
  );
  if (!fn) {
    const why = overloads
      ? `${name} does not take ${args.length} argument(s)`
      : `there is no function ${name}`;
    return {
      ev: (c) => {
        c.errors.push(new CesqlError('missingFunction', why));
        return false;
      },
      type: 'Boolean',
    };
  }
  const evs = args.map((a) => a.ev);
  const types = evs.map((_, i) => (fn.params === 'any' ? undefined : (fn.params[i] ?? fn.variadic)));
  return {
    ev: (c) => {
      const n = c.errors.length;
      const raw = evs.map((e) => e(c));
      if (c.errors.length > n) return zero(fn.returns);
      const vals = raw.map((v, i) => {
        const t = types[i];
        return t === undefined ? (v as Value) : cast(v as Value, t, c);
      });
      return fn.call(vals, c);
    },
    type: fn.returns,
  };
}

/**
 * Evaluates both operands, left first; undefined when either is a missing attribute or met an error,
 * in which case the operator returns its zero value.
 */
function operands(c: Ctx, le: Ev, re: Ev): [Value, Value] | undefined {
  const n = c.errors.length;
  const a = le(c);
  const b = re(c);
  return a === MISSING || b === MISSING || c.errors.length > n ? undefined : [a, b];
}

function compileBinary(op: string, l: Compiled, r: Compiled): Compiled {
  const le = l.ev;
  const re = r.ev;
  switch (op) {
    case 'AND':
      return {
        ev: (c) => {
          const n = c.errors.length;
          const a = le(c);
          if (a === MISSING || c.errors.length > n || !implicitBool(a, c)) return false;
          const m = c.errors.length;
          const b = re(c);
          return b === MISSING || c.errors.length > m ? false : implicitBool(b, c);
        },
        type: 'Boolean',
      };
    case 'OR':
      return {
        ev: (c) => {
          const n = c.errors.length;
          const a = le(c);
          if (a === MISSING || c.errors.length > n) return false;
          if (implicitBool(a, c)) return true;
          const m = c.errors.length;
          const b = re(c);
          return b === MISSING || c.errors.length > m ? false : implicitBool(b, c);
        },
        type: 'Boolean',
      };
    case 'XOR':
      return {
        ev: (c) => {
          const ab = operands(c, le, re);
          return ab !== undefined && implicitBool(ab[0], c) !== implicitBool(ab[1], c);
        },
        type: 'Boolean',
      };
    case '=':
    case '!=': {
      const eq = op === '=';
      return {
        ev: (c) => {
          const ab = operands(c, le, re);
          if (ab === undefined) return false;
          // '=' is ambiguous: the right operand's type picks the definition, the left is cast to it.
          return (cast(ab[0], typeOf(ab[1]), c) === ab[1]) === eq;
        },
        type: 'Boolean',
      };
    }
    case '<':
    case '<=':
    case '>':
    case '>=': {
      const cmp =
        op === '<'
          ? (x: number, y: number) => x < y
          : op === '<='
            ? (x: number, y: number) => x <= y
            : op === '>'
              ? (x: number, y: number) => x > y
              : (x: number, y: number) => x >= y;
      return {
        ev: (c) => {
          const ab = operands(c, le, re);
          return ab !== undefined && cmp(toInt(ab[0], c), toInt(ab[1], c));
        },
        type: 'Boolean',
      };
    }
    default: {
      const f =
        op === '+'
          ? (x: number, y: number) => x + y
          : op === '-'
            ? (x: number, y: number) => x - y
            : op === '*'
              ? (x: number, y: number) => x * y
              : op === '/'
                ? (x: number, y: number) => Math.trunc(x / y)
                : (x: number, y: number) => x % y;
      const divides = op === '/' || op === '%';
      return {
        ev: (c) => {
          const ab = operands(c, le, re);
          if (ab === undefined) return 0;
          const x = toInt(ab[0], c);
          const y = toInt(ab[1], c);
          if (divides && y === 0) {
            c.errors.push(new CesqlError('math', `${op === '/' ? 'division' : 'modulo'} by zero`));
            return 0;
          }
          const r = f(x, y);
          return int32(r === 0 ? 0 : r, c);
        },
        type: 'Integer',
      };
    }
  }
}

/** The result of one evaluation: the value and every error met on the way. */
export interface CesqlResult {
  value: Value;
  errors: CesqlError[];
}

/** A compiled expression. */
export interface CesqlExpression {
  readonly source: string;
  /** Evaluates against an event's attributes. */
  evaluate(attrs: Readonly<Record<string, AttributeValue>>): CesqlResult;
  /** As a Trigger filter (fail-fast): true only for a Boolean true with no error. */
  matches(attrs: Readonly<Record<string, AttributeValue>>): boolean;
}

/**
 * Parses and compiles an expression once. Throws {@link CesqlError} (`parse`) for invalid syntax.
 *
 * @example
 * const e = compileCesql("type LIKE 'order.%' AND INT(amount) > 100");
 * e.matches(event.attrs);
 */
export function compileCesql(source: string): CesqlExpression {
  const ev = compileNode(parse(source)).ev;
  const evaluate = (attrs: Readonly<Record<string, AttributeValue>>): CesqlResult => {
    const c: Ctx = { attrs, errors: [] };
    const v = ev(c);
    return { value: v === MISSING ? false : v, errors: c.errors };
  };
  return {
    source,
    evaluate,
    matches: (attrs) => {
      const r = evaluate(attrs);
      return r.value === true && r.errors.length === 0;
    },
  };
}
