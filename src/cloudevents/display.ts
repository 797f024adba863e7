/**
 * Formats an event for people to read, in the layout of Knative's event-display.
 * @module
 */
import { type CloudEvent, canonicalString, isCoreAttribute, isJsonContentType } from './event.js';

// C0 and C1 control characters, DEL, and the Unicode bidirectional overrides that reorder what a terminal shows.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
const CONTROL_OR_NEWLINE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Makes text safe to print on a terminal: control characters (an escape sequence could move the cursor,
 * rewrite the screen or set the window title) are shown as `\u001b`. Tabs stay; newlines stay when
 * `multiline` is set.
 */
export function escapeControl(s: string, multiline = false): string {
  return s.replace(
    multiline ? CONTROL : CONTROL_OR_NEWLINE,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Renders an event as Knative's event-display prints it, with control characters escaped. */
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
    if (v !== undefined) lines.push(`  ${k}: ${escapeControl(canonicalString(v))}`);
  }
  const ext = Object.keys(e.attrs)
    .filter((k) => !isCoreAttribute(k))
    .sort();
  if (ext.length > 0) {
    lines.push('Extensions,');
    for (const k of ext) lines.push(`  ${k}: ${escapeControl(canonicalString(e.attrs[k]!))}`);
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
    lines.push(
      ...escapeControl(text, true)
        .split('\n')
        .map((l) => `  ${l}`),
    );
  }
  return lines.join('\n');
}
