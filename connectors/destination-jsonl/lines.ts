// Reading the file's lines without parsing what a pass does not use. A commit that updates or
// deletes documents rewrites the whole file and the next fingerprint lookup re-indexes it, so such a
// sync reads each stored line once per commit (commits come every batch_records documents), and the
// vector (384 numbers, most of a line's bytes) was most of the parsing. The values returned are
// exactly what JSON.parse of the whole line gives (test: lines.test.ts, on random lines).
import type { JsonlChunkLine } from './index.ts';

/** What a rewrite needs to decide a line's fate: its stream, chunk id and document. */
export type LineHead = Pick<JsonlChunkLine, 'stream' | 'id' | 'document_id'>;

// The writer puts these three keys first. A JSON string literal: no raw quote, backslash or
// control character except in an escape (anything else falls back to a full parse, which throws
// on a broken line as before).
const STRING = '"(?:[^"\\\\\\u0000-\\u001f]|\\\\.)*"';
const HEAD = new RegExp(`^\\{"stream":(${STRING}),"id":(${STRING}),"document_id":(${STRING})[,}]`);

const stringValue = (literal: string): string => (literal.includes('\\') ? (JSON.parse(literal) as string) : literal.slice(1, -1));

export function lineHead(raw: string): LineHead {
  const m = HEAD.exec(raw);
  if (!m) {
    const l = JSON.parse(raw) as JsonlChunkLine;
    return { stream: l.stream, id: l.id, document_id: l.document_id };
  }
  return { stream: stringValue(m[1]!), id: stringValue(m[2]!), document_id: stringValue(m[3]!) };
}

/**
 * The line without its `embedding` (the writer puts it last). `,"embedding":[` cannot occur inside a
 * string literal (its quote would be escaped), and where it is a key deeper down (in metadata) the
 * cut leaves a bracket open, so the parse throws and the whole line is parsed instead.
 */
export function lineWithoutEmbedding(raw: string): Omit<JsonlChunkLine, 'embedding'> {
  const at = raw.lastIndexOf(',"embedding":[');
  if (at > 0 && raw.endsWith(']}')) {
    try {
      return JSON.parse(raw.slice(0, at) + '}') as JsonlChunkLine;
    } catch {
      // not the top-level key: parse it all
    }
  }
  const l = JSON.parse(raw) as JsonlChunkLine;
  delete l.embedding;
  return l;
}
