import { describe, expect, it } from 'vitest';
import { parseEmbeddingResponse } from '../../src/embedding/response.ts';
import { decodeEmbeddings } from '../../src/embedding/openai.ts';

const vectors = [0, 1, 2].map((k) => Float32Array.from({ length: 6 }, (_, i) => k + i / 8));
const b64 = vectors.map((v) => Buffer.from(v.buffer).toString('base64'));
const body = (value: unknown, indent?: number) => Buffer.from(JSON.stringify(value, null, indent));
const response = (items: Array<Record<string, unknown>>) => ({
  object: 'list',
  data: items,
  model: 'text-embedding-3-small',
  usage: { prompt_tokens: 17, total_tokens: 17 },
});
const item = (i: number, embedding: unknown = b64[i]) => ({ object: 'embedding', index: i, embedding });

describe('parseEmbeddingResponse', () => {
  it.each([
    ['compact', body(response([item(0), item(1), item(2)]))],
    ['pretty-printed, as OpenAI sends it', body(response([item(0), item(1), item(2)]), 2)],
    ['out of order, embedding before index', body(response([2, 0, 1].map((i) => ({ embedding: b64[i], index: i, object: 'embedding' }))))],
    [
      'float arrays (JSON.parse path)',
      body(response([item(0, Array.from(vectors[0])), item(1, Array.from(vectors[1])), item(2, Array.from(vectors[2]))])),
    ],
    ['escaped slashes (JSON.parse path)', Buffer.from(JSON.stringify(response([item(0), item(1), item(2)])).replace(/\//g, '\\/'))],
    ['non-ASCII model name', body({ ...response([item(0), item(1), item(2)]), model: 'modèle-✓' })],
  ])('reads %s', (_name, raw) => {
    const parsed = parseEmbeddingResponse(raw);
    expect(decodeEmbeddings(parsed.embeddings, 6)).toEqual(vectors);
    expect(parsed.promptTokens).toBe(17);
  });

  it('the escaped-slash case really has escapes in base64', () => {
    expect(b64.join('')).toContain('/');
  });

  it('works without usage, and rejects a body with no data', () => {
    expect(parseEmbeddingResponse(body({ data: [item(0)] })).promptTokens).toBeUndefined();
    expect(() => parseEmbeddingResponse(body({ error: { message: 'x' } }))).toThrow(/no "data"/);
  });

  it('falls back when indexes are not a permutation', () => {
    const dup = parseEmbeddingResponse(body(response([item(0), { ...item(1), index: 0 }])));
    expect(dup.embeddings).toHaveLength(2); // JSON.parse path: the count check upstream still applies
  });
});
