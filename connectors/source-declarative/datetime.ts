// Python-style datetime formats (strftime/strptime), ISO 8601 durations and the special formats
// Airbyte manifests use ("%s" epoch seconds, "%ms" epoch milliseconds, "%s_as_float"). Every
// datetime is handled in UTC, like the CDK does once a value is parsed.

/** A point in time, kept in milliseconds (UTC). */
export type Instant = number;

const pad = (n: number, w = 2) => String(Math.trunc(Math.abs(n))).padStart(w, '0');
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

/** strftime in UTC, plus Airbyte's %s, %ms, %s_as_float whole-value formats. */
export function formatDatetime(t: Instant, format: string): string {
  if (format === '%s') return String(Math.floor(t / 1000));
  if (format === '%ms') return String(Math.floor(t));
  if (format === '%s_as_float') return String(t / 1000);
  const d = new Date(t);
  return format.replace(/%([a-zA-Z%])/g, (m, c: string) => {
    switch (c) {
      case 'Y':
        return pad(d.getUTCFullYear(), 4);
      case 'y':
        return pad(d.getUTCFullYear() % 100);
      case 'm':
        return pad(d.getUTCMonth() + 1);
      case 'd':
        return pad(d.getUTCDate());
      case 'e':
        return String(d.getUTCDate()).padStart(2, ' ');
      case 'H':
        return pad(d.getUTCHours());
      case 'I':
        return pad(d.getUTCHours() % 12 || 12);
      case 'p':
        return d.getUTCHours() < 12 ? 'AM' : 'PM';
      case 'M':
        return pad(d.getUTCMinutes());
      case 'S':
        return pad(d.getUTCSeconds());
      case 'f':
        return pad(d.getUTCMilliseconds() * 1000, 6);
      case 'z':
        return '+0000';
      case 'Z':
        return 'UTC';
      case 'j': {
        const start = Date.UTC(d.getUTCFullYear(), 0, 1);
        return pad(Math.floor((t - start) / 86_400_000) + 1, 3);
      }
      case 'a':
        return DAYS[d.getUTCDay()].slice(0, 3);
      case 'A':
        return DAYS[d.getUTCDay()];
      case 'b':
        return MONTHS[d.getUTCMonth()].slice(0, 3);
      case 'B':
        return MONTHS[d.getUTCMonth()];
      case 'F':
        return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
      case 'T':
        return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
      case 's':
        return String(Math.floor(t / 1000));
      case '%':
        return '%';
      default:
        return m;
    }
  });
}

const FIELD: Record<string, string> = {
  Y: '(?<Y>\\d{4})',
  y: '(?<y>\\d{2})',
  m: '(?<m>\\d{1,2})',
  d: '(?<d>\\d{1,2})',
  e: '\\s?(?<d>\\d{1,2})',
  H: '(?<H>\\d{1,2})',
  I: '(?<I>\\d{1,2})',
  p: '(?<p>AM|PM|am|pm)',
  M: '(?<M>\\d{1,2})',
  S: '(?<S>\\d{1,2})',
  f: '(?<f>\\d{1,6})',
  z: '(?<z>Z|[+-]\\d{2}:?\\d{2})',
  Z: '(?<Z>[A-Z]{1,5})',
  j: '(?<j>\\d{1,3})',
  a: '[A-Za-z]{3}',
  A: '[A-Za-z]+',
  b: '(?<b>[A-Za-z]{3})',
  B: '(?<B>[A-Za-z]+)',
  T: '(?<H>\\d{2}):(?<M>\\d{2}):(?<S>\\d{2})',
  F: '(?<Y>\\d{4})-(?<m>\\d{2})-(?<d>\\d{2})',
};
const parsers = new Map<string, RegExp>();

/** strptime for one format; undefined when the text does not match it. */
export function parseDatetime(text: unknown, format: string): Instant | undefined {
  if (typeof text === 'number' || (typeof text === 'string' && /^-?\d+(\.\d+)?$/.test(text))) {
    const n = Number(text);
    if (format === '%s' || format === '%s_as_float') return n * 1000;
    if (format === '%ms') return n;
  }
  if (typeof text !== 'string') return undefined;
  let re = parsers.get(format);
  if (!re) {
    let src = '';
    const used = new Set<string>();
    for (let i = 0; i < format.length; i++) {
      const ch = format[i];
      if (ch === '%' && i + 1 < format.length) {
        const c = format[++i];
        let part = c === '%' ? '%' : (FIELD[c] ?? '');
        // A named group may appear only once in a JS regex.
        for (const name of part.match(/\?<(\w)>/g) ?? []) {
          const n = name.slice(2, -1);
          if (used.has(n)) part = part.replace(`?<${n}>`, '?:');
          used.add(n);
        }
        if (c === 's') part = '(?<s>-?\\d+)';
        src += part;
      } else src += ch.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    }
    re = new RegExp(`^${src}$`);
    parsers.set(format, re);
  }
  const m = re.exec(text.trim());
  if (!m) return undefined;
  const g = m.groups ?? {};
  if (g.s !== undefined) return Number(g.s) * 1000;
  const year = g.Y !== undefined ? Number(g.Y) : g.y !== undefined ? 2000 + Number(g.y) : 1900;
  let month = g.m !== undefined ? Number(g.m) - 1 : 0;
  if (g.b || g.B) month = MONTHS.findIndex((n) => n.toLowerCase().startsWith((g.b ?? g.B).toLowerCase().slice(0, 3)));
  let day = g.d !== undefined ? Number(g.d) : 1;
  if (g.j !== undefined) {
    month = 0;
    day = Number(g.j);
  }
  let hour = g.H !== undefined ? Number(g.H) : 0;
  if (g.I !== undefined) hour = (Number(g.I) % 12) + (g.p && g.p.toUpperCase() === 'PM' ? 12 : 0);
  const ms = g.f !== undefined ? Math.floor(Number(g.f.padEnd(6, '0')) / 1000) : 0;
  let t = Date.UTC(year, month, day, hour, g.M !== undefined ? Number(g.M) : 0, g.S !== undefined ? Number(g.S) : 0, ms);
  if (g.z && g.z !== 'Z') {
    const sign = g.z[0] === '-' ? -1 : 1;
    const digits = g.z.slice(1).replace(':', '');
    t -= sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2))) * 60_000;
  }
  if (!Number.isFinite(t) || month < 0) return undefined;
  return t;
}

/**
 * Parses the way the CDK's `str_to_datetime` / dateutil does for the forms APIs send: ISO 8601
 * dates and date-times (a missing zone is UTC), epoch seconds.
 */
export function parseAnyDatetime(text: unknown): Instant | undefined {
  if (typeof text === 'number') return text * 1000;
  if (typeof text !== 'string') return undefined;
  const s = text.trim();
  if (/^\d{4}-\d{2}-\d{2}$/.test(s)) return Date.parse(`${s}T00:00:00Z`);
  const iso = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(:\d{2}(\.\d+)?)?)(Z|[+-]\d{2}(:?\d{2})?)?$/i.exec(s);
  if (iso) {
    let zone = iso[5] ?? 'Z';
    if (/^[+-]\d{2}$/.test(zone)) zone += ':00';
    else if (/^[+-]\d{4}$/.test(zone)) zone = `${zone.slice(0, 3)}:${zone.slice(3)}`;
    const frac = iso[4] ? iso[4].slice(0, 4) : '';
    const time = iso[3] ? iso[2].replace(/\.\d+$/, '') : `${iso[2]}:00`;
    const t = Date.parse(`${iso[1]}T${time}${frac}${zone.toUpperCase()}`);
    return Number.isFinite(t) ? t : undefined;
  }
  if (/^\d{9,10}(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const t = Date.parse(s);
  return Number.isFinite(t) ? t : undefined;
}

/** A parsed ISO 8601 duration: months are calendar months, the rest milliseconds. */
export interface Duration {
  months: number;
  ms: number;
}

export function parseDuration(text: unknown): Duration | undefined {
  if (typeof text !== 'string') return undefined;
  const m =
    /^(-)?P(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(
      text.trim(),
    );
  if (!m || text.trim() === 'P' || text.trim().endsWith('T')) return undefined;
  const n = (i: number) => (m[i] ? Number(m[i]) : 0);
  const sign = m[1] ? -1 : 1;
  return {
    months: sign * (n(2) * 12 + n(3)),
    ms: sign * (((n(4) * 7 + n(5)) * 24 + n(6)) * 3_600_000 + n(7) * 60_000 + n(8) * 1000),
  };
}

export function addDuration(t: Instant, d: Duration, sign = 1): Instant {
  let out = t;
  if (d.months) {
    const date = new Date(out);
    date.setUTCMonth(date.getUTCMonth() + sign * d.months);
    out = date.getTime();
  }
  return out + sign * d.ms;
}

/** Python's str(datetime) for an aware UTC datetime: "2024-01-02 03:04:05.123000+00:00". */
export function pythonDatetimeString(t: Instant, sep = ' '): string {
  const ms = new Date(t).getUTCMilliseconds();
  return formatDatetime(t, `%Y-%m-%d${sep}%H:%M:%S`) + (ms ? `.${pad(ms * 1000, 6)}` : '') + '+00:00';
}
