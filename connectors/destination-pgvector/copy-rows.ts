// Rows of `COPY … TO STDOUT` (text format) from the chunks pg-copy-streams hands out. A chunk may end
// in the middle of a row; the rest of that row waits for the next chunk.
//
// Text format (https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.2): one row per
// line, columns split by a tab, NULL as `\N`, and in a value a backslash, newline, carriage return,
// tab, backspace, form feed and vertical tab are written as `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, `\v`.
// So a newline byte ends a row and a tab byte ends a column (UTF-8 never has those bytes inside a
// multi-byte character), and only a value holding a backslash needs unescaping.

const NEWLINE = 0x0a;
const ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

/** A text-format value back to its text (`\N`, NULL, is handled by the caller). */
export function unescapeCopyText(value: string): string {
  // PostgreSQL's output uses only the escapes above; \digits and \x are input-only, but read them too.
  return value.replace(/\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)/gs, (_, e: string) => {
    if (e in ESCAPES) return ESCAPES[e];
    if (e[0] === 'x' && e.length > 1) return String.fromCharCode(parseInt(e.slice(1), 16));
    if (e.charCodeAt(0) >= 0x30 && e.charCodeAt(0) <= 0x37) return String.fromCharCode(parseInt(e, 8));
    return e;
  });
}

/**
 * Splits COPY text chunks into rows of `columns` text values (null for NULL). `push` gets each
 * chunk's complete rows; call `end()` after the last chunk (a row left incomplete is an error).
 */
export class CopyTextRows {
  private rest: Buffer | undefined;

  constructor(private readonly columns: number) {}

  /** The complete rows of this chunk (plus the start of a row the previous chunk ended in). */
  push(chunk: Buffer, onRow: (row: (string | null)[]) => void): void {
    const last = chunk.lastIndexOf(NEWLINE);
    if (last < 0) {
      this.rest = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
      return;
    }
    const whole = this.rest ? Buffer.concat([this.rest, chunk.subarray(0, last + 1)]) : chunk.subarray(0, last + 1);
    this.rest = last + 1 < chunk.length ? Buffer.from(chunk.subarray(last + 1)) : undefined;
    // One decode per chunk; the values are slices of that string.
    const text = whole.toString('utf8');
    const escaped = text.includes('\\');
    const n = this.columns;
    let at = 0;
    while (at < text.length) {
      const end = text.indexOf('\n', at);
      const row: (string | null)[] = new Array(n);
      for (let c = 0; c < n; c++) {
        const stop = c === n - 1 ? end : text.indexOf('\t', at);
        if (stop < 0 || stop > end) throw new Error(`COPY row with fewer than ${n} columns`);
        let value: string | null = text.slice(at, stop);
        if (escaped && value.includes('\\')) value = value === '\\N' ? null : unescapeCopyText(value);
        row[c] = value;
        at = stop + 1;
      }
      onRow(row);
    }
  }

  end(): void {
    if (this.rest?.length) throw new Error('COPY data ended inside a row');
  }
}
