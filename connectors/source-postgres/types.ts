// PostgreSQL values → JSON values, and PostgreSQL types → JSON Schema.
// Exactness first: int8 and numeric stay strings (a double cannot hold them), timestamps keep
// their microseconds, bytea is base64. The same parsers serve query results and pgoutput tuples
// (both are the server's text output), so a row reads the same by snapshot and by CDC.
import pg from 'pg';

type Parser = (text: string) => unknown;

const identity: Parser = (s) => s;
const int: Parser = (s) => Number(s);
const float: Parser = (s) => {
  const n = Number(s);
  return Number.isFinite(n) ? n : s; // NaN / Infinity are not JSON numbers: keep the text
};
const bool: Parser = (s) => s === 't' || s === 'true';
const json: Parser = (s) => JSON.parse(s);
const bytea: Parser = (s) => {
  if (s.startsWith('\\x')) return Buffer.from(s.slice(2), 'hex').toString('base64');
  return Buffer.from(unescapeByteaEscapeFormat(s)).toString('base64');
};
function unescapeByteaEscapeFormat(s: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\') {
      if (s[i + 1] === '\\') {
        out.push(92);
        i++;
      } else {
        out.push(parseInt(s.slice(i + 1, i + 4), 8));
        i += 3;
      }
    } else out.push(s.charCodeAt(i));
  }
  return Uint8Array.from(out);
}
/** `2024-01-02 03:04:05.123456+00` → `2024-01-02T03:04:05.123456Z` (sessions run in UTC). */
const timestamptz: Parser = (s) => timestamptzField(s, 0, s.length);
/** Every timestamptz form but the common `…+00` one (timestamptzField's fast path). */
const timestamptzSlow: Parser = (s) => {
  if (s === 'infinity' || s === '-infinity') return s;
  const t = s.replace(' ', 'T');
  const m = /([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?$/.exec(t);
  if (!m) return t;
  if (m[2] === '00' && (m[3] ?? '00') === '00' && !m[4]) return t.slice(0, m.index) + 'Z';
  return t.slice(0, m.index) + `${m[1]}${m[2]}:${m[3] ?? '00'}`;
};
const timestamp: Parser = (s) => (s === 'infinity' || s === '-infinity' ? s : s.replace(' ', 'T'));

const arrayOf =
  (elem: Parser): Parser =>
  (s) =>
    (pg.types as unknown as { arrayParser: { create(src: string, t: Parser): { parse(): unknown[] } } }).arrayParser
      .create(s, elem)
      .parse();

/** Scalar parsers by type OID (text format). Unlisted types stay as text. */
const SCALAR: Record<number, Parser> = {
  16: bool,
  17: bytea,
  20: identity, // int8: exact as a string
  21: int,
  23: int,
  26: int,
  700: float,
  701: float,
  1700: identity, // numeric: exact as a string
  114: json,
  3802: json,
  1082: identity, // date
  1114: timestamp,
  1184: timestamptz,
  1083: identity,
  1266: identity,
  1186: identity, // interval: Postgres text form
  2950: identity,
};
/** Array type OID → element parser. */
const ARRAYS: Record<number, Parser> = {
  1000: bool,
  1001: bytea,
  1016: identity,
  1005: int,
  1007: int,
  1028: int,
  1021: float,
  1022: float,
  1231: identity,
  199: json,
  3807: json,
  1182: identity,
  1115: timestamp,
  1185: timestamptz,
  1183: identity,
  1270: identity,
  1187: identity,
  2951: identity,
  1009: identity,
  1015: identity,
  1014: identity,
  1002: identity,
  1003: identity,
};

/** Extra array OIDs learned from the catalog (enum arrays, domains…): parsed as text arrays. */
const learnedArrays = new Set<number>();
export function registerArrayType(oid: number): void {
  if (!(oid in ARRAYS)) learnedArrays.add(oid);
}

/** Domains parse like their base type. */
const domains = new Map<number, number>();
export function registerDomain(oid: number, baseOid: number): void {
  domains.set(oid, baseOid);
}

export function parserFor(oid: number): Parser {
  oid = domains.get(oid) ?? oid;
  const s = SCALAR[oid];
  if (s) return s;
  const a = ARRAYS[oid];
  if (a) return arrayOf(a);
  if (learnedArrays.has(oid)) return arrayOf(identity);
  return identity;
}

/**
 * Parses the field `text.slice(start, end)` without cutting it out first where the type allows.
 * Only called for plain ASCII text without backslashes (COPY's fast path), so it sees exactly the
 * characters the string parser would.
 */
export type FieldParser = (text: string, start: number, end: number) => unknown;

/** int2/int4/oid: at most 10 digits, exact in a double. */
const intField: FieldParser = (s, a, b) => {
  let i = a;
  const neg = s.charCodeAt(i) === 45;
  if (neg) i++;
  if (i === b || b - i > 10) return int(s.slice(a, b));
  let n = 0;
  for (; i < b; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return int(s.slice(a, b));
    n = n * 10 + d;
  }
  return neg ? -n : n;
};
const boolField: FieldParser = (s, a, b) => (b - a === 1 ? s.charCodeAt(a) === 116 : bool(s.slice(a, b)));
function timestamptzField(s: string, a: number, b: number): unknown {
  // Fast path: `YYYY-MM-DD HH:MM:SS[.ffffff]+00`; sessions run in UTC, so nearly every value has it.
  return b - a > 19 && s.charCodeAt(a + 10) === 32 && s.charCodeAt(b - 3) === 43 && s.charCodeAt(b - 2) === 48 && s.charCodeAt(b - 1) === 48
    ? s.slice(a, a + 10) + 'T' + s.slice(a + 11, b - 3) + 'Z'
    : timestamptzSlow(s.slice(a, b));
}
const FAST: Record<number, FieldParser> = {
  16: boolField,
  21: intField,
  23: intField,
  26: intField,
  1184: timestamptzField,
};
const sliceWith =
  (parse: Parser): FieldParser =>
  (s, a, b) =>
    parse(s.slice(a, b));
const sliceField: FieldParser = (s, a, b) => s.slice(a, b);

/** Scalar types whose text output is always plain ASCII without backslashes (numbers, dates, uuid…). */
const ASCII_OUTPUT = new Set([16, 20, 21, 23, 26, 700, 701, 1700, 1082, 1114, 1184, 1083, 1266, 1186, 2950]);
export function asciiOutput(oid: number): boolean {
  return ASCII_OUTPUT.has(domains.get(oid) ?? oid);
}

export function fastParserFor(oid: number): FieldParser {
  const base = domains.get(oid) ?? oid;
  const f = FAST[base];
  if (f) return f;
  const p = parserFor(oid);
  return p === identity ? sliceField : sliceWith(p);
}

/** `types` option for pg clients: every connection of this source parses the same way. */
export const pgTypes = {
  getTypeParser(oid: number, format?: string): Parser {
    if (format === 'binary') return identity;
    return parserFor(oid);
  },
};

/** Connection startup options: UTC so timestamptz text is comparable, ISO dates, no statement timeout. */
export const SESSION_OPTIONS =
  '-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex -c standard_conforming_strings=on';

export interface ColumnType {
  /** Type OID (parsers are chosen by it). */
  oid: number;
  /** `format_type()` text, e.g. `numeric(20,4)`, `timestamp with time zone`, `integer[]`. */
  sqlType: string;
  /** pg_type.typname of the element for arrays, else of the type (e.g. `int4`, `_int4` → `int4`). */
  typname: string;
  isArray: boolean;
  notNull: boolean;
}

function scalarSchema(typname: string): Record<string, unknown> {
  switch (typname) {
    case 'int2':
    case 'int4':
    case 'oid':
      return { type: 'integer' };
    case 'int8':
      return { type: 'string', pattern: '^-?[0-9]+$', airbyte_type: 'big_integer', description: 'bigint, as a string (exact)' };
    case 'numeric':
      return { type: 'string', format: 'decimal', description: 'numeric, as a string (exact)' };
    case 'float4':
    case 'float8':
      return { type: 'number' };
    case 'bool':
      return { type: 'boolean' };
    case 'date':
      return { type: 'string', format: 'date' };
    case 'timestamp':
      return { type: 'string', format: 'date-time', airbyte_type: 'timestamp_without_timezone' };
    case 'timestamptz':
      return { type: 'string', format: 'date-time', airbyte_type: 'timestamp_with_timezone' };
    case 'time':
      return { type: 'string', format: 'time', airbyte_type: 'time_without_timezone' };
    case 'timetz':
      return { type: 'string', format: 'time', airbyte_type: 'time_with_timezone' };
    case 'uuid':
      return { type: 'string', format: 'uuid' };
    case 'json':
    case 'jsonb':
      return { type: ['object', 'array', 'string', 'number', 'boolean'] };
    case 'bytea':
      return { type: 'string', contentEncoding: 'base64' };
    default:
      return { type: 'string' };
  }
}

export function jsonSchemaFor(col: ColumnType): Record<string, unknown> {
  const base = col.isArray ? { type: 'array', items: scalarSchema(col.typname) } : scalarSchema(col.typname);
  const out: Record<string, unknown> = { ...base, 'x-pg-type': col.sqlType };
  if (!col.notNull) {
    const t = out.type;
    out.type = Array.isArray(t) ? [...t, 'null'] : [t, 'null'];
  }
  return out;
}

/** Types that make sensible incremental cursors (ordered, usually monotonic). */
export function isCursorCandidate(col: ColumnType): boolean {
  return !col.isArray && ['int2', 'int4', 'int8', 'numeric', 'date', 'timestamp', 'timestamptz', 'float4', 'float8'].includes(col.typname);
}

/** A value we emitted, turned back into text Postgres accepts for `$n::type`. */
export function toParam(value: unknown, col: ColumnType | undefined): string | null {
  if (value === null || value === undefined) return null;
  if (col?.typname === 'bytea' && typeof value === 'string') return '\\x' + Buffer.from(value, 'base64').toString('hex');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}
