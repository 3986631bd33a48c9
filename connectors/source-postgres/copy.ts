// Rows through `COPY (SELECT …) TO STDOUT` (text format): one streaming query instead of a round
// trip per page, with TCP backpressure (the socket is read only while the consumer asks for rows),
// so memory stays flat and the server never waits for us between pages. Field text is the type's
// output text with COPY escapes, so after unescaping the same parsers as for query results apply.
//
// The protocol is read straight off the connection's socket (the kit's CopyOutReader): the server
// sends one CopyData message per row, so row boundaries come from the message framing, and fields
// are cut out of one latin1 decoding of each network chunk (byte offset = character offset). Plain
// ASCII fields without a backslash (nearly all narrow data) are taken from that string directly,
// and integers and booleans are read without a string at all; a field with a backslash or a
// non-ASCII byte is decoded as UTF-8 from the row's bytes and unescaped (a row is never split:
// chunks are joined at message boundaries first, so a multi-byte character never straddles two
// decodings).
import type pg from 'pg';
import { copyOut, type CopyOutSink } from '../../src/cdk/postgres-copy.ts';
import { unescapeCopy } from './copy-escapes.ts';
import { asciiOutput, fastParserFor, parserFor, type FieldParser } from './types.ts';

type Row = Record<string, unknown>;

/** The chunk being parsed: its bytes and their latin1 text (byte offset = character offset). */
class ChunkText {
  buf: Buffer = Buffer.alloc(0);
  text = '';

  set(buf: Buffer, text: string): void {
    this.buf = buf;
    this.text = text;
  }

  /** A field's text the general way: UTF-8 from the bytes, then COPY unescaping. */
  field(start: number, end: number): string {
    const s = this.buf.toString('utf8', start, end);
    const backslash = s.indexOf('\\');
    return backslash < 0 ? s : unescapeCopy(s, 0, s.length, backslash);
  }
}

/** Longest field checked character by character for the fast path; longer ones decode natively. */
const SHORT_FIELD = 64;
/**
 * Rows handed out per pull at most: the rows in flight stay few, so young-generation GC rarely
 * has to keep (and promote) them.
 */
export const MAX_ROWS = 256;
/** Rows longer than this (payload bytes, with the newline) are decoded as UTF-8 on their own. */
const LONG_ROW = 251;

/** True when a short field is plain ASCII without backslashes (its latin1 text is its text). */
function plain(text: string, start: number, end: number): boolean {
  if (end - start > SHORT_FIELD) return false;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 92 || c > 127) return false;
  }
  return true;
}

/** Parses one row: [start, end) of `text`, the row without its newline. */
type RowParser = (text: string, start: number, end: number) => Row;

/** Where the next backslash is at or after `from` (Infinity: none). */
function nextBackslash(text: string, from: number): number {
  const i = text.indexOf('\\', from);
  return i < 0 ? Infinity : i;
}

/**
 * Row parsers with the column names baked into one object literal (every row gets the same
 * hidden class) and one call site per column (each stays monomorphic). `latin1` reads a row of
 * the chunk's latin1 text, with byte offsets; `decoded` reads a row that was decoded as UTF-8 on
 * its own (long rows: one decoding instead of two), where only backslashes need the slow path.
 */
function rowParsers(
  columns: { name: string; oid: number }[],
  chunk: ChunkText,
  digests?: DigestSink,
): { latin1: RowParser; decoded: RowParser } {
  const fast: FieldParser[] = columns.map((c) => fastParserFor(c.oid));
  const ascii = columns.map((c) => asciiOutput(c.oid));
  const parsers = columns.map((c) => parserFor(c.oid));
  const fromBytes = parsers.map((parse) => (start: number, end: number) => parse(chunk.field(start, end)));
  const unescaped = parsers.map(
    (parse) => (text: string, start: number, end: number, backslash: number) => parse(unescapeCopy(text, start, end, backslash)),
  );
  const bad = (text: string, start: number, end: number): never => {
    throw new Error(
      `COPY row has fewer fields than the ${columns.length} expected columns: ${JSON.stringify(text.slice(start, Math.min(end, start + 200)))}`,
    );
  };
  // `__proto__: v` in a literal would set the prototype; a computed key defines the property.
  const key = (name: string) => (name === '__proto__' ? `[${JSON.stringify(name)}]` : JSON.stringify(name));
  const make = (decoded: boolean): RowParser => {
    const lines: string[] = [decoded ? 'let a = s, b, bs = -1;' : 'let a = s, b;'];
    // With digests, a last field after the columns holds the row's digest (plain ASCII).
    const tabs = digests ? columns.length : columns.length - 1;
    columns.forEach((_, i) => {
      if (i < tabs) lines.push(`b = L.indexOf('\\t', a); if (b < 0 || b > e) bad(L, s, e);`);
      else lines.push('b = e;');
      // `\\N` is NULL; types whose output is always plain ASCII need no check for escapes.
      const isNull = 'b - a === 2 && L.charCodeAt(a) === 92 && L.charCodeAt(a + 1) === 78';
      const value = ascii[i]
        ? `f${i}(L, a, b)`
        : decoded
          ? `bs >= b || (bs < a && (bs = next(L, a)) >= b) ? f${i}(L, a, b) : g${i}(L, a, b, bs)`
          : `plain(L, a, b) ? f${i}(L, a, b) : g${i}(a, b)`;
      lines.push(`const v${i} = ${isNull} ? null : ${value};`);
      if (i < tabs) lines.push('a = b + 1;');
    });
    if (digests) lines.push('H.d.push(L.slice(a, e));');
    lines.push(`return {${columns.map((c, i) => `${key(c.name)}: v${i}`).join(', ')}};`);
    const locals = columns.map((_, i) => `const f${i} = F[${i}], g${i} = G[${i}];`).join('\n');
    const body = `${locals}\nreturn function row(L, s, e) {\n${lines.join('\n')}\n};`;
    return new Function('F', 'G', 'plain', 'next', 'bad', 'H', body)(
      fast,
      decoded ? unescaped : fromBytes,
      plain,
      nextBackslash,
      bad,
      digests,
    ) as RowParser;
  };
  return { latin1: make(false), decoded: make(true) };
}

/** Where a row parser puts each row's trailing digest field (`d` is swapped out per batch). */
interface DigestSink {
  d: string[];
}

/**
 * The rows of the COPY's CopyData messages, parsed into objects and handed out in batches of at
 * most MAX_ROWS (the kit's CopyOutReader does the protocol and the socket).
 */
export class RowBatches implements CopyOutSink<Row[]> {
  private out: Row[] = [];
  private readonly chunk = new ChunkText();
  private readonly latin1: RowParser;
  private readonly decoded: RowParser;

  /** `digests`: each row has one more field after `columns`, its digest, pushed there (not into the row). */
  constructor(columns: { name: string; oid: number }[], digests?: DigestSink) {
    ({ latin1: this.latin1, decoded: this.decoded } = rowParsers(columns, this.chunk, digests));
  }

  data(buf: Buffer, start: number, end: number): boolean {
    if (buf[end - 1] !== 10) throw new Error('COPY data message without a trailing newline');
    if (end - start > LONG_ROW) {
      // One UTF-8 decoding of a long row rather than latin1 for the chunk and UTF-8 for its long fields.
      const row = buf.toString('utf8', start, end - 1);
      this.out.push(this.decoded(row, 0, row.length));
    } else {
      // The chunk's latin1 text, decoded once for all its short rows.
      const chunk = this.chunk;
      if (chunk.buf !== buf) chunk.set(buf, buf.toString('latin1', 0, buf.length));
      this.out.push(this.latin1(chunk.text, start, end - 1));
    }
    // Enough for one batch: the rest of the chunk waits for the next pull.
    return this.out.length >= MAX_ROWS;
  }

  end(): void {}

  take(): Row[] | undefined {
    const rows = this.out;
    if (!rows.length) return undefined;
    this.out = [];
    return rows;
  }
}

/** A batch of rows and their digests (digests[i] is rows[i]'s). */
export interface DigestedRows {
  rows: Row[];
  digests: string[];
}

/** RowBatches for a SELECT whose last column is the row's digest: the rows as without it, plus their digests. */
export class DigestedRowBatches implements CopyOutSink<DigestedRows> {
  private readonly held: DigestSink = { d: [] };
  private readonly rows: RowBatches;

  constructor(columns: { name: string; oid: number }[]) {
    this.rows = new RowBatches(columns, this.held);
  }

  data(buf: Buffer, start: number, end: number): boolean {
    return this.rows.data(buf, start, end);
  }

  end(): void {}

  take(): DigestedRows | undefined {
    const rows = this.rows.take();
    if (!rows) return undefined;
    const digests = this.held.d;
    this.held.d = [];
    return { rows, digests };
  }
}

/** copyRows for a `select` whose last column (after `columns`) is each row's digest. */
export function copyDigestedRows(
  client: pg.Client,
  select: string,
  columns: { name: string; oid: number }[],
): AsyncGenerator<DigestedRows> {
  return copyOut(client, `COPY (${select}) TO STDOUT`, new DigestedRowBatches(columns));
}

/**
 * Yields arrays of parsed rows of `select` (a SELECT statement; no trailing semicolon), one array
 * per network chunk (at most MAX_ROWS). `columns` are the result's column names and type OIDs, in
 * order. Stopped early, the COPY still runs on the connection, which the caller closes.
 */
export function copyRows(
  client: pg.Client,
  select: string,
  columns: { name: string; oid: number }[],
): AsyncGenerator<Record<string, unknown>[]> {
  return copyOut(client, `COPY (${select}) TO STDOUT`, new RowBatches(columns));
}
