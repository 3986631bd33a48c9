// Rows through `COPY (SELECT …) TO STDOUT` (text format): one streaming query instead of a round
// trip per page, with TCP backpressure (the socket pauses while the consumer is busy), so memory
// stays flat and the server never waits for us between pages. Field text is the type's output
// text with COPY escapes, so after unescaping the same parsers as for query results apply.
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import type pg from 'pg';
import { parserFor } from './types.ts';

const require = createRequire(import.meta.url);
const { to: copyTo } = require('pg-copy-streams') as { to: (sql: string) => Readable & pg.Submittable };

const ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };

function unescapeCopy(s: string): string {
  return s.replace(/\\(?:([bfnrtv\\])|([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))/g, (_, e, oct, hex, other) => {
    if (e) return ESCAPES[e];
    if (oct) return String.fromCharCode(parseInt(oct, 8));
    if (hex) return String.fromCharCode(parseInt(hex, 16));
    return other;
  });
}

type RowBuilder = (fields: string[]) => Record<string, unknown>;

/**
 * A row builder with the column names baked into one object literal: every row gets the same
 * hidden class, which is markedly faster than adding properties one by one.
 */
function rowBuilder(columns: { name: string; oid: number }[]): RowBuilder {
  const parsers = columns.map((c) => parserFor(c.oid));
  const props = columns.map((c, i) => `${JSON.stringify(c.name)}: v(f[${i}], p[${i}])`).join(',\n');
  const make = new Function('p', 'v', `return (f) => ({${props}});`) as (p: unknown, v: unknown) => RowBuilder;
  const value = (f: string | undefined, parse: (s: string) => unknown) =>
    f === '\\N' || f === undefined ? null : parse(f.includes('\\') ? unescapeCopy(f) : f);
  return make(parsers, value);
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
  const build = rowBuilder(columns);
  const stream = client.query(copyTo(`COPY (${select}) TO STDOUT`));
  let rest: Buffer = Buffer.alloc(0);
  let done = false;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      // Decode only whole lines: a multi-byte character may straddle chunks, a newline cannot.
      const lastNl = chunk.lastIndexOf(10);
      if (lastNl < 0) {
        rest = Buffer.concat([rest, chunk]);
        continue;
      }
      const text = (rest.length ? Buffer.concat([rest, chunk.subarray(0, lastNl)]) : chunk.subarray(0, lastNl)).toString('utf8');
      rest = Buffer.from(chunk.subarray(lastNl + 1));
      const lines = text.split('\n');
      const rows: Record<string, unknown>[] = new Array(lines.length);
      for (let i = 0; i < lines.length; i++) rows[i] = build(lines[i].split('\t'));
      yield rows;
    }
    done = true;
  } finally {
    // Stopped early: the COPY is still running on this connection, which therefore cannot be
    // reused; the caller closes it.
    if (!done) stream.destroy();
  }
}
