// The offline default: a feature-hashing embedder. No model, no download, same vector for the
// same text on every machine. Texts that share words, word pairs and word fragments end up close,
// which is enough for lexical search and for exercising a pipeline end to end.
import type { Embedder, EmbedResult } from './types.ts';
import { tokenizerFor } from '../text/tokenizer.ts';
import { OPENAI_LIMITS } from './models.ts';

export const HASH_MODEL = 'sluice-hash-v1';
export const HASH_DEFAULT_DIMENSIONS = 384;

const WORD_WEIGHT = 1;
const BIGRAM_WEIGHT = 0.7;
const CHAR_NGRAM_WEIGHT = 0.25;
/** Function words would otherwise dominate short texts (there is no corpus for IDF). */
const STOPWORD_WEIGHT = 0.1;
const STOPWORDS = new Set(
  (
    'a an and are as at be but by for from has have he her his i if in into is it its me my no not of on or our ' +
    'she so than that the their them then there these they this to us was we were what when where which who will with you your ' +
    'how do does did can could should would about'
  ).split(' '),
);

// Letters/numbers (with combining marks) form words; any other non-space, non-punctuation symbol
// (emoji, math signs) is a word of its own.
const WORD_RE = /[\p{L}\p{N}\p{M}]+|[^\s\p{L}\p{N}\p{M}\p{P}]/gu;

// Features are hashed without building their strings: FNV-1a over UTF-16 units, continued across
// the parts of a feature (kind, word, next word…), finished with a murmur3 mix.
const FNV_OFFSET = 0x811c9dc5;
const KIND_WORD = 1;
const KIND_BIGRAM = 2;
const KIND_CHARS = 3;

function fnvUnit(h: number, unit: number): number {
  return Math.imul(h ^ unit, 0x01000193);
}

function fnvRange(h: number, text: string, from: number, to: number): number {
  for (let i = from; i < to; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h;
}

function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hashed feature id → [occurrences, weight of its kind]. */
export function extractFeatures(text: string): Map<number, [number, number]> {
  const features = new Map<number, [number, number]>();
  const add = (id: number, weight: number) => {
    const f = features.get(id);
    if (f) f[0]++;
    else features.set(id, [1, weight]);
  };
  const words = text.normalize('NFKC').toLowerCase().match(WORD_RE) ?? [];
  let prevHash = 0;
  for (let w = 0; w < words.length; w++) {
    const word = words[w];
    const stop = STOPWORDS.has(word);
    const wordHash = fnvRange(fnvUnit(FNV_OFFSET, KIND_WORD), word, 0, word.length);
    add(mix(wordHash), stop ? STOPWORD_WEIGHT : WORD_WEIGHT);
    if (w > 0) add(mix(fnvRange(fnvUnit(fnvUnit(FNV_OFFSET, KIND_BIGRAM), prevHash), word, 0, word.length)), BIGRAM_WEIGHT);
    prevHash = wordHash;
    if (stop) continue;
    // Character 3–5-grams of the padded word "<word>": morphology ("embedding" ~ "embeddings")
    // and scripts written without spaces. Offsets are per code point, so no character is split.
    const padded = `<${word}>`;
    const offsets: number[] = [];
    for (let i = 0; i < padded.length; i++) {
      const c = padded.charCodeAt(i);
      if (c < 0xdc00 || c > 0xdfff) offsets.push(i);
    }
    offsets.push(padded.length);
    const points = offsets.length - 1;
    if (points < 4) continue;
    for (let n = 3; n <= 5; n++) {
      for (let i = 0; i + n <= points; i++)
        add(mix(fnvRange(fnvUnit(FNV_OFFSET, KIND_CHARS), padded, offsets[i], offsets[i + n])), CHAR_NGRAM_WEIGHT);
    }
  }
  return features;
}

export function hashEmbed(text: string, dimensions: number): Float32Array {
  const vector = new Float32Array(dimensions);
  for (const [id, [count, weight]] of extractFeatures(text)) {
    // Signed hashing: collisions cancel out on average instead of piling up.
    const sign = mix(id ^ 0x9e3779b9) & 1 ? 1 : -1;
    // Sub-linear tf: repeating a word ten times is not ten times the evidence.
    vector[id % dimensions] += sign * weight * (1 + Math.log(count));
  }
  let norm = 0;
  for (let i = 0; i < dimensions; i++) norm += vector[i] * vector[i];
  if (norm > 0) {
    const inv = 1 / Math.sqrt(norm);
    for (let i = 0; i < dimensions; i++) vector[i] *= inv;
  }
  return vector;
}

export function createHashEmbedder(
  opts: { dimensions?: number; batchSize?: number; concurrency?: number; pricePerMillionTokens?: number } = {},
): Embedder {
  const dimensions = opts.dimensions ?? HASH_DEFAULT_DIMENSIONS;
  const tokenizer = tokenizerFor(undefined);
  return {
    provider: 'hash',
    model: HASH_MODEL,
    dimensions,
    maxInputTokens: OPENAI_LIMITS.maxTokensPerInput,
    pricePerMillionTokens: opts.pricePerMillionTokens,
    concurrency: opts.concurrency ?? 1,
    batchSize: opts.batchSize ?? 256,
    countTokens: (text) => tokenizer.count(text),
    async embed(texts: string[], signal?: AbortSignal): Promise<EmbedResult> {
      const vectors: Float32Array[] = [];
      let tokens = 0;
      for (const text of texts) {
        signal?.throwIfAborted();
        vectors.push(hashEmbed(text, dimensions));
        tokens += tokenizer.count(text);
      }
      return { vectors, requests: 0, tokens };
    },
  };
}
