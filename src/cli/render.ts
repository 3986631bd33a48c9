// Human renderings of command results that are JSON with --json.
import { stringify } from 'yaml';

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

const isBytesKey = (k: string) => /(^|_)bytes$|Bytes$/.test(k);

/** A report of any shape as indented "key: value" lines (YAML), sizes in kB/MB. */
export function renderReport(report: unknown): string {
  const humanize = (v: unknown, key = ''): unknown => {
    if (typeof v === 'number' && isBytesKey(key)) return formatBytes(v);
    if (Array.isArray(v)) return v.map((x) => humanize(x));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, humanize(x, k)]));
    return v;
  };
  return stringify(humanize(report), { lineWidth: 0 });
}

/** `state show`: per connection, per stream, its saved state on one line. */
export function renderStates(states: Record<string, { streams: Record<string, unknown>; shared?: unknown } | null>): string {
  const out: string[] = [];
  for (const [connection, state] of Object.entries(states)) {
    if (!state) {
      out.push(`${connection}: no saved state (the next sync starts from scratch)`);
      continue;
    }
    const streams = Object.entries(state.streams ?? {});
    out.push(`${connection}: ${streams.length} stream${streams.length === 1 ? '' : 's'} with saved state`);
    if (state.shared !== undefined) out.push(`  (shared): ${JSON.stringify(state.shared)}`);
    for (const [name, s] of streams) out.push(`  ${name}: ${JSON.stringify(s)}`);
  }
  return out.join('\n') + '\n';
}
