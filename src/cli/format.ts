/**
 * How the CLI prints resources: kubectl-like tables, describe pages, YAML and JSON.
 * @module
 */
import { stringify } from 'yaml';
import type { ApiResource, Stats } from '../client/admin-client.js';

interface Cond {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}

/** Age as kubectl prints it: 45s, 12m, 3h, 2d. */
export function age(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function readyCond(r: ApiResource): Cond | undefined {
  return (r.status?.['conditions'] as Cond[] | undefined)?.find((c) => c.type === 'Ready');
}

/** Left-aligned columns separated by three spaces, like kubectl. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) {
    for (const [i, c] of r.entries()) widths[i] = Math.max(widths[i] ?? 0, c.length);
  }
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join('   ')
        .trimEnd(),
    )
    .join('\n');
}

/** The columns of `trellis get` between NAME and AGE, per kind (kubectl's printer columns, roughly). */
const COLUMNS: Record<string, [string, (r: ApiResource) => string][]> = {
  Trigger: [
    ['BROKER', (r) => String(r.spec['broker'] ?? '')],
    ['SUBSCRIBER_URI', (r) => String(r.status?.['subscriberUri'] ?? '')],
  ],
  Subscription: [
    ['CHANNEL', (r) => String((r.spec['channel'] as { name?: string } | undefined)?.name ?? '')],
    [
      'SUBSCRIBER_URI',
      (r) =>
        String(
          (r.status?.['physicalSubscription'] as { subscriberUri?: string } | undefined)?.subscriberUri ?? '',
        ),
    ],
    [
      'REPLY_URI',
      (r) =>
        String((r.status?.['physicalSubscription'] as { replyUri?: string } | undefined)?.replyUri ?? ''),
    ],
  ],
};

COLUMNS['EventType'] = [
  [
    'TYPE',
    (r) =>
      String(
        (r.spec['attributes'] as { name: string; value?: string }[] | undefined)?.find(
          (a) => a.name === 'type',
        )?.value ?? '',
      ),
  ],
  [
    'REFERENCE',
    (r) => {
      const ref = r.spec['reference'] as { kind?: string; name?: string } | undefined;
      return ref ? `${ref.kind}/${ref.name}` : '';
    },
  ],
  ['SEEN', (r) => String((r.status?.['seen'] as { count?: number } | undefined)?.count ?? '')],
  ['LAST SEEN', (r) => age((r.status?.['seen'] as { lastSeen?: string } | undefined)?.lastSeen)],
];

COLUMNS['PingSource'] = [
  ['SINK', (r) => String(r.status?.['sinkUri'] ?? '')],
  ['SCHEDULE', (r) => String(r.spec['schedule'] ?? '')],
];

COLUMNS['IntegrationSource'] = [['SINK', (r) => String(r.status?.['sinkUri'] ?? '')]];
COLUMNS['ApiServerSource'] = COLUMNS['IntegrationSource'];
COLUMNS['SinkBinding'] = COLUMNS['IntegrationSource'];
COLUMNS['NatsSource'] = COLUMNS['IntegrationSource'];
COLUMNS['KafkaSource'] = COLUMNS['IntegrationSource'];
COLUMNS['RedisStreamSource'] = COLUMNS['IntegrationSource'];
COLUMNS['MqttSource'] = COLUMNS['IntegrationSource'];
COLUMNS['AmqpSource'] = COLUMNS['IntegrationSource'];
COLUMNS['ContainerSource'] = [
  ['SINK', (r) => String(r.status?.['sinkUri'] ?? '')],
  ['PROCESS', (r) => String((r.status?.['process'] as { state?: string } | undefined)?.state ?? '')],
];

COLUMNS['KnativeService'] = [
  ['URL', (r) => String(r.status?.['url'] ?? '')],
  ['PROCESS', (r) => String((r.status?.['process'] as { state?: string } | undefined)?.state ?? '')],
];

COLUMNS['ConsumerGroup'] = [
  [
    'STREAM',
    (r) => {
      const st = r.status?.['stream'] as { kind?: string; name?: string } | undefined;
      return st ? `${st.kind}/${st.name}` : String(r.spec['broker'] ?? r.spec['channel'] ?? '');
    },
  ],
  ['LAST ACTIVE', (r) => age(r.status?.['lastActiveTime'] as string | undefined)],
];

function addressOf(r: ApiResource): string {
  return String((r.status?.['address'] as { url?: string } | undefined)?.url ?? '');
}

/** The table `trellis get` prints. */
export function formatTable(
  kind: string,
  items: ApiResource[],
  opts: { wide: boolean; allNamespaces: boolean; stats?: Stats | undefined },
): string {
  // A flow's steps and branches are counted apart (`seq step 0`): its row adds them up.
  const counts = (ns: string, name: string) => {
    const sum = [0, 0, 0, 0];
    for (const x of opts.stats?.subscriptions ?? []) {
      if (x.namespace !== ns || (x.name !== name && !x.name.startsWith(`${name} `))) continue;
      [x.delivered, x.failedAttempts, x.deadLettered, x.lag].forEach((n, i) => {
        sum[i]! += n;
      });
    }
    return sum;
  };
  const rows: string[][] = [];
  const head: string[] = opts.allNamespaces ? ['NAMESPACE', 'NAME'] : ['NAME'];
  const cols = COLUMNS[kind] ?? [['URL', addressOf]];
  head.push(...cols.map(([h]) => h), 'AGE', 'READY', 'REASON');
  if (opts.stats !== undefined) head.push('DELIVERED', 'FAILED', 'DEAD-LETTERED', 'LAG');
  if (opts.wide) head.push('MESSAGE');
  rows.push(head);
  for (const r of items) {
    const c = readyCond(r);
    const row = opts.allNamespaces ? [r.metadata.namespace, r.metadata.name] : [r.metadata.name];
    for (const [, get] of cols) row.push(get(r));
    row.push(
      age(r.metadata['creationTimestamp'] as string | undefined),
      c?.status ?? 'Unknown',
      c?.reason ?? '',
    );
    if (opts.stats !== undefined) {
      row.push(...counts(r.metadata.namespace, r.metadata.name).map(String));
    }
    if (opts.wide) row.push(c?.message ?? '');
    rows.push(row);
  }
  return table(rows);
}

function indent(text: string, n: number): string {
  const pad = ' '.repeat(n);
  return text
    .trimEnd()
    .split('\n')
    .map((l) => pad + l)
    .join('\n');
}

/** The page `trellis describe` prints. */
export function formatDescribe(r: ApiResource): string {
  const m = r.metadata;
  const lines = [
    `Name:              ${m.name}`,
    `Namespace:         ${m.namespace}`,
    `Kind:              ${r.kind}`,
    `API Version:       ${r.apiVersion}`,
    `UID:               ${String(m['uid'] ?? '')}`,
    `Generation:        ${String(m['generation'] ?? '')}`,
    `Resource Version:  ${String(m['resourceVersion'] ?? '')}`,
    `Created:           ${String(m['creationTimestamp'] ?? '')} (${age(m['creationTimestamp'] as string)} ago)`,
  ];
  if (m['labels']) lines.push('Labels:', indent(stringify(m['labels']), 2));
  if (m['annotations']) lines.push('Annotations:', indent(stringify(m['annotations']), 2));
  lines.push('Spec:', Object.keys(r.spec).length ? indent(stringify(r.spec), 2) : '  {}');
  const { conditions, ...rest } = (r.status ?? {}) as { conditions?: Cond[] } & Record<string, unknown>;
  lines.push('Status:', Object.keys(rest).length ? indent(stringify(rest), 2) : '  {}');
  lines.push('Conditions:');
  const rows = [['TYPE', 'STATUS', 'REASON', 'MESSAGE', 'LAST TRANSITION']];
  for (const c of conditions ?? [])
    rows.push([c.type, c.status, c.reason ?? '', c.message ?? '', c.lastTransitionTime ?? '']);
  lines.push(indent(table(rows), 2));
  return lines.join('\n');
}

/** YAML or JSON output for `-o yaml|json`. */
export function formatObject(v: unknown, as: 'yaml' | 'json'): string {
  return as === 'json' ? JSON.stringify(v, null, 2) : stringify(v).trimEnd();
}
