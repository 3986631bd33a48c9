// Rows through `COPY (SELECT …) TO STDOUT` (text format): one streaming query instead of a round
// trip per page, with TCP backpressure (the socket is read only while the consumer asks for rows),
// so memory stays flat and the server never waits for us between pages. Field text is the type's
// output text with COPY escapes, so after unescaping the same parsers as for query results apply.
//
// The protocol is read straight off the connection's socket: the server sends one CopyData
// message per row, so row boundaries come from the message framing, and fields are cut out of
// one latin1 decoding of each network chunk (byte offset = character offset). Plain ASCII fields
// without a backslash (nearly all narrow data) are taken from that string directly, and integers
// and booleans are read without a string at all; a field with a backslash or a non-ASCII byte is
// decoded as UTF-8 from the row's bytes and unescaped (a row is never split: chunks are joined
// at message boundaries first, so a multi-byte character never straddles two decodings).
import type { Duplex } from 'node:stream';
import type pg from 'pg';
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
/** Rows longer than this (bytes, with the message header) are decoded as UTF-8 on their own. */
const LONG_ROW = 256;

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
function rowParsers(columns: { name: string; oid: number }[], chunk: ChunkText): { latin1: RowParser; decoded: RowParser } {
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
    columns.forEach((_, i) => {
      if (i < columns.length - 1) lines.push(`b = L.indexOf('\\t', a); if (b < 0 || b > e) bad(L, s, e);`);
      else lines.push('b = e;');
      // `\\N` is NULL; types whose output is always plain ASCII need no check for escapes.
      const isNull = 'b - a === 2 && L.charCodeAt(a) === 92 && L.charCodeAt(a + 1) === 78';
      const value = ascii[i]
        ? `f${i}(L, a, b)`
        : decoded
          ? `bs >= b || (bs < a && (bs = next(L, a)) >= b) ? f${i}(L, a, b) : g${i}(L, a, b, bs)`
          : `plain(L, a, b) ? f${i}(L, a, b) : g${i}(a, b)`;
      lines.push(`const v${i} = ${isNull} ? null : ${value};`);
      if (i < columns.length - 1) lines.push('a = b + 1;');
    });
    lines.push(`return {${columns.map((c, i) => `${key(c.name)}: v${i}`).join(', ')}};`);
    const locals = columns.map((_, i) => `const f${i} = F[${i}], g${i} = G[${i}];`).join('\n');
    const body = `${locals}\nreturn function row(L, s, e) {\n${lines.join('\n')}\n};`;
    return new Function('F', 'G', 'plain', 'next', 'bad', body)(
      fast,
      decoded ? unescaped : fromBytes,
      plain,
      nextBackslash,
      bad,
    ) as RowParser;
  };
  return { latin1: make(false), decoded: make(true) };
}

/** Message codes of the backend protocol that matter here. */
const COPY_DATA = 0x64; // d
const COPY_DONE = 0x63; // c
const ERROR_RESPONSE = 0x45; // E
const COPY_OUT_RESPONSE = 0x48; // H
const NOTICE = 0x4e; // N
const PARAMETER_STATUS = 0x53; // S
const NOTIFICATION = 0x41; // A

/** A message's length field (big-endian, counting itself), at `at`. */
const messageLength = (buf: Buffer, at: number): number => buf[at] * 0x1000000 + ((buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]);

interface PgConnection {
  stream: Duplex;
  query(text: string): void;
}

/**
 * `COPY … TO STDOUT` as a pg Submittable that parses rows itself. While the COPY runs it owns the
 * connection's socket (pg's own parser is detached, as pg-copy-streams does); the first message
 * after the copy data (or an ErrorResponse) and everything after it go back to pg, which then
 * completes the query as usual.
 */
export class CopyOut {
  private conn?: PgConnection;
  private pgOnData?: (b: Buffer) => void;
  private attached = false;
  private finished = false;
  private error?: Error;
  private waiting?: { resolve: (rows: Row[] | null) => void; reject: (err: Error) => void };
  /** Bytes of an incomplete message, and how many bytes that message needs in all. */
  private parts: Buffer[] = [];
  private partsLen = 0;
  private need = 0;
  /** A chunk whose rows are only partly handed out yet, and where the next message starts. */
  private rest?: Buffer;
  private restAt = 0;
  private readonly chunk = new ChunkText();
  private readonly rows: { latin1: RowParser; decoded: RowParser };
  private readonly onReadable = () => this.wake();

  constructor(
    private readonly text: string,
    columns: { name: string; oid: number }[],
  ) {
    this.rows = rowParsers(columns, this.chunk);
  }

  /** Called by pg when the query's turn comes; an Error returned fails the query. */
  submit(connection: PgConnection): Error | undefined {
    this.conn = connection;
    const stream = connection.stream;
    const listeners = stream.listeners('data');
    if (listeners.length !== 1) return new Error(`COPY needs the connection's own data listener (found ${listeners.length})`);
    this.pgOnData = listeners[0] as (b: Buffer) => void;
    stream.removeListener('data', this.pgOnData);
    stream.pause();
    stream.on('readable', this.onReadable);
    this.attached = true;
    connection.query(this.text);
    this.wake();
    return undefined;
  }

  /** The next rows (at least one), or null once the copy is complete. */
  next(): Promise<Row[] | null> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.wake(); // settles it now when rows, an error or the end are already there
    });
  }

  /** Stops reading: the COPY keeps running on the connection, which the caller must close. */
  abandon(): void {
    this.finished = true;
    if (this.attached) {
      this.attached = false;
      this.conn!.stream.removeListener('readable', this.onReadable);
    }
    this.parts = [];
    this.rest = undefined;
  }

  private wake(): void {
    const w = this.waiting;
    if (!w) return;
    if (this.error) {
      this.waiting = undefined;
      return w.reject(this.error);
    }
    const rows = this.drain();
    if (this.error && !rows.length) {
      this.waiting = undefined;
      return w.reject(this.error);
    }
    if (rows.length || this.finished) {
      this.waiting = undefined;
      w.resolve(rows.length ? rows : null);
    }
  }

  private drain(): Row[] {
    const out: Row[] = [];
    if (!this.attached) return out;
    const stream = this.conn!.stream;
    while (this.attached && !out.length) {
      try {
        const rest = this.rest;
        if (rest) {
          this.rest = undefined;
          this.frames(rest, this.restAt, out);
          continue;
        }
        const chunk = stream.read() as Buffer | null;
        if (chunk === null) break;
        this.parse(chunk, out);
      } catch (err) {
        this.error = err as Error;
        this.abandon();
      }
    }
    return out;
  }

  private parse(chunk: Buffer, out: Row[]): void {
    let from = 0;
    // Finish the message begun in earlier chunks, copying only its own bytes.
    while (this.partsLen) {
      const take = Math.min(this.need - this.partsLen, chunk.length - from);
      this.parts.push(chunk.subarray(from, from + take));
      this.partsLen += take;
      from += take;
      if (this.partsLen < this.need) return;
      const message = Buffer.concat(this.parts, this.partsLen);
      this.parts = [];
      this.partsLen = 0;
      this.frames(message, 0, out); // a whole message, or only its header (then parts again)
      if (!this.attached) {
        // The copy ended in that message: the rest of the chunk is pg's too.
        if (from < chunk.length) this.pgOnData!(chunk.subarray(from));
        return;
      }
    }
    if (from < chunk.length) this.frames(chunk, from, out);
  }

  /** Parses the messages of `buf` from `p` on; keeps an incomplete last one in `parts`. */
  private frames(buf: Buffer, p: number, out: Row[]): void {
    const n = buf.length;
    let text = this.chunk.buf === buf ? this.chunk.text : undefined;
    while (p + 5 <= n) {
      const code = buf[p];
      // ErrorResponse: pg parses it and fails the query (handleError).
      if (code === ERROR_RESPONSE) return this.detach(buf.subarray(p));
      let end = p + 1 + messageLength(buf, p + 1);
      if (end > n) break;
      if (code === COPY_DATA) {
        const { latin1, decoded } = this.rows;
        // The rows of a chunk, back to back.
        for (;;) {
          if (buf[end - 1] !== 10) throw new Error('COPY data message without a trailing newline');
          if (end - p > LONG_ROW) {
            // One UTF-8 decoding of a long row rather than latin1 for the chunk and UTF-8 for its long fields.
            const row = buf.toString('utf8', p + 5, end - 1);
            out.push(decoded(row, 0, row.length));
          } else {
            if (text === undefined) {
              text = buf.toString('latin1', 0, n);
              this.chunk.set(buf, text);
            }
            out.push(latin1(text, p + 5, end - 1));
          }
          p = end;
          if (out.length >= MAX_ROWS && p < n) {
            // Enough for one batch: the rest of the chunk waits for the next pull.
            this.rest = buf;
            this.restAt = p;
            return;
          }
          if (p + 5 > n || buf[p] !== COPY_DATA) break;
          end = p + 1 + messageLength(buf, p + 1);
          if (end > n) break;
        }
        continue;
      }
      if (code === COPY_DONE) {
        this.finished = true;
        return this.detach(buf.subarray(end));
      }
      if (code !== COPY_OUT_RESPONSE && code !== NOTICE && code !== PARAMETER_STATUS && code !== NOTIFICATION) {
        // Not a COPY response at all: let pg handle it.
        this.finished = true;
        return this.detach(buf.subarray(p));
      }
      p = end;
    }
    if (p < n) {
      const rest = buf.subarray(p);
      this.parts = [rest];
      this.partsLen = rest.length;
      this.need = rest.length >= 5 ? 1 + messageLength(rest, 1) : 5;
    }
  }

  /** Gives the socket back to pg, starting with `rest` (the bytes after the copy data). */
  private detach(rest: Buffer): void {
    if (!this.attached) return;
    this.attached = false;
    const stream = this.conn!.stream;
    stream.removeListener('readable', this.onReadable);
    stream.on('data', this.pgOnData!);
    if (rest.length) this.pgOnData!(rest);
    // pg's data handler may pause the stream; resume once it has returned.
    process.nextTick(() => stream.resume());
  }

  handleError(err: Error): void {
    this.error ??= err;
    if (this.attached) this.abandon();
    this.finished = true;
    this.wake();
  }
  handleCommandComplete(): void {}
  handleReadyForQuery(): void {}
  handleCopyData(): void {}
  handleEmptyQuery(): void {}
}

/**
 * Yields arrays of parsed rows of `select` (a SELECT statement; no trailing semicolon), one array
 * per network chunk. `columns` are the result's column names and type OIDs, in order.
 */
export async function* copyRows(
  client: pg.Client,
  select: string,
  columns: { name: string; oid: number }[],
): AsyncGenerator<Record<string, unknown>[]> {
  const copy = new CopyOut(`COPY (${select}) TO STDOUT`, columns);
  client.query(copy as unknown as pg.Submittable);
  let done = false;
  try {
    for (;;) {
      const rows = await copy.next();
      if (rows === null) break;
      yield rows;
    }
    done = true;
  } finally {
    // Stopped early: the COPY is still running on this connection, which therefore cannot be
    // reused; the caller closes it.
    if (!done) copy.abandon();
  }
}
