import { describe, expect, it } from 'vitest';
import { createEmbedder, embeddingCacheKey, estimateCostUsd } from './index.ts';
import { EmbeddingConfigSchema } from './config.ts';

const logger = { debug() {}, info() {}, warn() {}, error() {} };
const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i], 0);

const docs = [
  'PostgreSQL logical replication streams row changes from the write-ahead log to subscribers.',
  'Bake the sourdough bread at 230 degrees with steam for the first twenty minutes.',
  'Kafka consumer groups share the partitions of a topic among their members.',
  'The goalkeeper saved a penalty in the final minute of the football match.',
  '한국어 문서: 서울의 날씨는 오늘 맑고 따뜻합니다.',
];

describe('hash embedder', () => {
  const embedder = createEmbedder(EmbeddingConfigSchema.parse({ provider: 'hash' }), { logger });

  it('is deterministic, 384-dimensional by default, and L2-normalised', async () => {
    expect(embedder.dimensions).toBe(384);
    const a = await embedder.embed(['hello world', 'hello world', 'something else']);
    expect(a.vectors).toHaveLength(3);
    expect(a.vectors[0]).toEqual(a.vectors[1]);
    expect(a.vectors[0]).not.toEqual(a.vectors[2]);
    for (const v of a.vectors) {
      expect(v).toBeInstanceOf(Float32Array);
      expect(v.length).toBe(384);
      expect(Math.sqrt(cosine(v, v))).toBeCloseTo(1, 5);
    }
    expect(a.requests).toBe(0);
    expect(a.tokens).toBe(embedder.countTokens('hello world') * 2 + embedder.countTokens('something else'));
    expect(a.tokens).toBeGreaterThan(0);
  });

  it('honours configured dimensions', async () => {
    const small = createEmbedder(EmbeddingConfigSchema.parse({ provider: 'hash', dimensions: 64 }), { logger });
    expect(small.dimensions).toBe(64);
    expect((await small.embed(['x y z'])).vectors[0].length).toBe(64);
  });

  it.each([
    ['how do subscribers receive replication changes from postgres', 0],
    ['baking bread with sourdough', 1],
    ['which consumer in the group reads a kafka partition', 2],
    ['football penalty goalkeeper', 3],
    ['서울 날씨', 4],
    ['replicated rows', 0], // word fragments: "replicated" ~ "replication", "rows" ~ "row"
  ])('ranks the matching document first for %j', async (query, expected) => {
    const { vectors } = await embedder.embed([query, ...docs]);
    const scores = vectors.slice(1).map((v) => cosine(vectors[0], v));
    const best = scores.indexOf(Math.max(...scores));
    expect(best).toBe(expected);
    const runnerUp = Math.max(...scores.filter((_, i) => i !== expected));
    expect(scores[expected]).toBeGreaterThan(runnerUp + 0.02);
  });

  it('gives emoji-only and punctuation-light text a non-zero vector', async () => {
    const { vectors } = await embedder.embed(['🎉🚀']);
    expect(cosine(vectors[0], vectors[0])).toBeCloseTo(1, 5);
  });
});

describe('cache keys and cost', () => {
  const hash = createEmbedder({ provider: 'hash' }, { logger });
  const hash64 = createEmbedder({ provider: 'hash', dimensions: 64 }, { logger });

  it('keys differ by dimensions and content, and are stable', () => {
    expect(embeddingCacheKey(hash, 'abc')).toBe(embeddingCacheKey(createEmbedder({ provider: 'hash' }, { logger }), 'abc'));
    expect(embeddingCacheKey(hash, 'abc')).not.toBe(embeddingCacheKey(hash64, 'abc'));
    expect(embeddingCacheKey(hash, 'abc')).not.toBe(embeddingCacheKey(hash, 'abd'));
    expect(embeddingCacheKey({ provider: 'openai', model: 'a|b', dimensions: 1 }, 'h')).not.toBe(
      embeddingCacheKey({ provider: 'openai|a', model: 'b', dimensions: 1 }, 'h'),
    );
  });

  it('estimates cost from the price table, a configured price, or 0 for hash', () => {
    expect(estimateCostUsd(1_000_000, hash)).toBe(0);
    const priced = createEmbedder({ provider: 'hash', price_per_million_tokens: 2 }, { logger });
    expect(estimateCostUsd(500_000, priced)).toBeCloseTo(1, 10);
    expect(estimateCostUsd(1_000_000, { ...hash, provider: 'openai', model: 'x', pricePerMillionTokens: 0.13 })).toBeCloseTo(0.13, 10);
    expect(
      estimateCostUsd(1_000_000, { ...hash, provider: 'openai-compatible', model: 'x', pricePerMillionTokens: undefined }),
    ).toBeUndefined();
  });
});
