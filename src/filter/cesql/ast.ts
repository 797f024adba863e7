/**
 * The CESQL v1 syntax tree and the errors of the language (cesql_spec.md §3.3).
 * @module
 */

/** A CESQL value: the three primitive types. */
export type Value = string | number | boolean;
export type ValueType = 'String' | 'Integer' | 'Boolean';

/** The error kinds every CESQL engine supports. */
export type CesqlErrorKind =
  | 'parse'
  | 'math'
  | 'cast'
  | 'missingFunction'
  | 'functionEvaluation'
  | 'missingAttribute'
  | 'generic';

/** An error of the language; evaluation errors are collected, never thrown. */
export class CesqlError extends Error {
  constructor(
    readonly kind: CesqlErrorKind,
    message: string,
    /** For parse errors: the 0-based offset in the expression. */
    readonly position?: number,
  ) {
    super(message);
    this.name = 'CesqlError';
  }
}

export type Node =
  | { k: 'lit'; v: Value; pos: number }
  | { k: 'id'; name: string; pos: number }
  | { k: 'exists'; name: string; pos: number }
  | { k: 'not'; e: Node; pos: number }
  | { k: 'neg'; e: Node; pos: number }
  | { k: 'bin'; op: BinaryOp; l: Node; r: Node; pos: number }
  | { k: 'like'; e: Node; pattern: string; not: boolean; pos: number }
  | { k: 'in'; e: Node; set: Node[]; not: boolean; pos: number }
  | { k: 'call'; name: string; args: Node[]; pos: number };

export type BinaryOp =
  | 'AND'
  | 'OR'
  | 'XOR'
  | '='
  | '!='
  | '<'
  | '<='
  | '>'
  | '>='
  | '+'
  | '-'
  | '*'
  | '/'
  | '%';
