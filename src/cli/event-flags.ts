/**
 * The event attributes the CLI builds from flags (`send`, `explain`): --id, --type, --source, --subject
 * and repeated `-e name=value` extensions.
 * @module
 */
import { InvalidArgumentError } from 'commander';
import type { AttributeValue } from '../cloudevents/event.js';

/** Builds attributes from the flags; throws InvalidArgumentError for an extension not written name=value. */
export function attributesFromFlags(
  opts: Record<string, unknown>,
  id: string,
): Record<string, AttributeValue> {
  const attrs: Record<string, AttributeValue> = {
    specversion: '1.0',
    id,
    source: String(opts['source']),
    type: String(opts['type']),
  };
  if (opts['subject']) attrs['subject'] = String(opts['subject']);
  for (const kv of (opts['extension'] as string[] | undefined) ?? []) {
    const eq = kv.indexOf('=');
    if (eq < 1) throw new InvalidArgumentError(`--extension '${kv}': write it as name=value`);
    attrs[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return attrs;
}
