// The partial line readers must give exactly what JSON.parse of the whole line gives, on lines as
// the writer makes them: escapes, quotes, backslashes, control characters, non-ASCII, emoji, lone
// surrogates, metadata with keys named like the line's own (`embedding`, `stream`), no vector.
import { describe, expect, it } from 'vitest';
import type { JsonlChunkLine } from './index.ts';
import { lineHead, lineWithoutEmbedding } from './lines.ts';

const PIECES = [
  'a',
  'Z',
  ' ',
  '"',
  '\\',
  '\\"',
  '\n',
  '\t',
  '\u0000',
  '\u001f',
  'é',
  '東',
  '😀',
  '\ud800',
  '\udc00',
  ',"embedding":[',
  '"}',
  ']}',
  '\\u0041',
  '/',
];

function randomSource(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => ((s = (Math.imul(s ^ (s >>> 15), 2246822519) + 0x9e3779b9) >>> 0), s);
  const int = (n: number) => next() % n;
  const text = () => Array.from({ length: int(6) }, () => PIECES[int(PIECES.length)]).join('');
  return { int, text };
}

function randomLine(seed: number): JsonlChunkLine {
  const { int, text } = randomSource(seed);
  const metadata: Record<string, unknown> = {};
  for (let k = int(4); k > 0; k--) {
    const key = [text(), 'embedding', 'stream', 'id'][int(4)]!;
    metadata[key] = [text(), int(100), [int(5), text()], { embedding: [int(3)] }, null][int(5)];
  }
  const line: JsonlChunkLine = {
    stream: text(),
    id: text(),
    document_id: text(),
    chunk_index: int(10),
    content: text(),
    content_hash: text(),
    metadata,
  };
  if (int(2)) line.fingerprint = { content: text(), metadata: text(), ...(int(2) ? { source: text() } : {}) };
  if (int(3)) line.embedding = Array.from({ length: int(5) }, () => int(1000) / 7 - 50);
  return line;
}

describe('jsonl partial line readers', () => {
  it('read the same stream, id and document id, and the same line without its vector, as a full parse', () => {
    for (let seed = 1; seed <= 20_000; seed++) {
      const raw = JSON.stringify(randomLine(seed));
      const full = JSON.parse(raw) as JsonlChunkLine;
      expect(lineHead(raw)).toStrictEqual({ stream: full.stream, id: full.id, document_id: full.document_id });
      const { embedding: _vector, ...rest } = full;
      expect(lineWithoutEmbedding(raw)).toStrictEqual(rest);
    }
  });

  it('fall back to a full parse for lines the writer would not make, and still throw on broken ones', () => {
    const reordered = '{"id":"c","stream":"s","document_id":"d","embedding":[1],"metadata":{}}';
    expect(lineHead(reordered)).toStrictEqual({ stream: 's', id: 'c', document_id: 'd' });
    expect(lineWithoutEmbedding(reordered)).toStrictEqual({ id: 'c', stream: 's', document_id: 'd', metadata: {} });
    // A vector-like key in metadata is not the line's vector.
    const inMetadata = '{"stream":"s","id":"c","document_id":"d","metadata":{"x":1,"embedding":[2]}}';
    expect(lineWithoutEmbedding(inMetadata)).toStrictEqual({ stream: 's', id: 'c', document_id: 'd', metadata: { x: 1, embedding: [2] } });
    expect(() => lineHead('{"stream":"s\u0001","id":"c","document_id":"d"')).toThrow(SyntaxError);
    expect(() => lineWithoutEmbedding('{"stream":"s","metadata":{"embedding":[1]}')).toThrow(SyntaxError);
  });
});
