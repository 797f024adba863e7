/**
 * Formats an event for people to read, in the layout of Knative's event-display.
 * @module
 */
import { type CloudEvent, canonicalString, isCoreAttribute, isJsonContentType } from './event.js';

/** Renders an event as Knative's event-display prints it. */
export function formatEvent(e: CloudEvent): string {
  const lines = ['☁️  cloudevents.Event', 'Context Attributes,'];
  for (const k of [
    'specversion',
    'type',
    'source',
    'subject',
    'id',
    'time',
    'dataschema',
    'datacontenttype',
  ]) {
    const v = e.attrs[k];
    if (v !== undefined) lines.push(`  ${k}: ${canonicalString(v)}`);
  }
  const ext = Object.keys(e.attrs)
    .filter((k) => !isCoreAttribute(k))
    .sort();
  if (ext.length > 0) {
    lines.push('Extensions,');
    for (const k of ext) lines.push(`  ${k}: ${canonicalString(e.attrs[k]!)}`);
  }
  if (e.data !== undefined && e.data.length > 0) {
    lines.push('Data,');
    const ct = e.attrs['datacontenttype'] as string | undefined;
    let text = e.data.toString('utf8');
    if (ct !== undefined && isJsonContentType(ct)) {
      try {
        text = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        // keep the raw text
      }
    }
    lines.push(...text.split('\n').map((l) => `  ${l}`));
  }
  return lines.join('\n');
}
