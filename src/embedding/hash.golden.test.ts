// Golden test for the `hash` embedder: vectors are cached and compared across runs under the model
// id `sluice-hash-v1`, so any change to src/embedding/hash.ts must keep every output bit. The
// implementation under test is compared byte for byte against a frozen copy of the original
// (straightforward, slow) implementation kept below, on a seeded corpus of awkward texts.
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../test/helpers/random.ts';
import { createHashEmbedder, extractFeatures, hashEmbed } from './hash.ts';
import { tokenizerFor } from '../text/tokenizer.ts';

// ---- REFERENCE: frozen copy of the sluice-hash-v1 implementation. Never edit. -------------------

const REF_STOPWORDS = new Set(
  (
    'a an and are as at be but by for from has have he her his i if in into is it its me my no not of on or our ' +
    'she so than that the their them then there these they this to us was we were what when where which who will with you your ' +
    'how do does did can could should would about'
  ).split(' '),
);
const REF_WORD_RE = /[\p{L}\p{N}\p{M}]+|[^\s\p{L}\p{N}\p{M}\p{P}]/gu;
const refFnvUnit = (h: number, unit: number) => Math.imul(h ^ unit, 0x01000193);
function refFnvRange(h: number, text: string, from: number, to: number): number {
  for (let i = from; i < to; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h;
}
function refMix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function referenceExtractFeatures(text: string): Map<number, [number, number]> {
  const features = new Map<number, [number, number]>();
  const add = (id: number, weight: number) => {
    const f = features.get(id);
    if (f) f[0]++;
    else features.set(id, [1, weight]);
  };
  const words = text.normalize('NFKC').toLowerCase().match(REF_WORD_RE) ?? [];
  let prevHash = 0;
  for (let w = 0; w < words.length; w++) {
    const word = words[w];
    const stop = REF_STOPWORDS.has(word);
    const wordHash = refFnvRange(refFnvUnit(0x811c9dc5, 1), word, 0, word.length);
    add(refMix(wordHash), stop ? 0.1 : 1);
    if (w > 0) add(refMix(refFnvRange(refFnvUnit(refFnvUnit(0x811c9dc5, 2), prevHash), word, 0, word.length)), 0.7);
    prevHash = wordHash;
    if (stop) continue;
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
      for (let i = 0; i + n <= points; i++) add(refMix(refFnvRange(refFnvUnit(0x811c9dc5, 3), padded, offsets[i], offsets[i + n])), 0.25);
    }
  }
  return features;
}

function referenceHashEmbed(text: string, dimensions: number): Float32Array {
  const vector = new Float32Array(dimensions);
  for (const [id, [count, weight]] of referenceExtractFeatures(text)) {
    const sign = refMix(id ^ 0x9e3779b9) & 1 ? 1 : -1;
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

// ---- END REFERENCE -----------------------------------------------------------------------------

const STOP = [...REF_STOPWORDS];
const ASCII_WORDS =
  'replication postgres Kafka consumer embedding vector Index chunk sourdough bread goalkeeper PostgreSQL WAL x y z ab abc abcd'.split(' ');
const ASCII_PUNCT = [...'!"#%&\'()*,-./:;?@[\\]_{}$+<=>^`|~'];
const ASCII_SPACE = [' ', ' ', ' ', '  ', '\n', '\n\n', '\t', '\r\n', '\v', '\f'];
const ASCII_CONTROL = ['\0', '\x01', '\x07', '\x1b', '\x1c', '\x1f', '\x7f'];
const UNICODE = [
  // CJK, Hangul, kana, Thai, Arabic, Devanagari
  '東京都の天気',
  '数据同步',
  '서울의 날씨는',
  'カタカナ',
  'ｶﾀｶﾅ', // half-width kana (NFKC widens them)
  'ภาษาไทย',
  'مرحبا بالعالم',
  'हिन्दी',
  // emoji: surrogate pairs, ZWJ sequences, skin tones, flags, variation selectors
  '🎉',
  '🚀🚀',
  '👩‍💻',
  '👍🏽',
  '🇩🇪',
  '❤️',
  '😀x😀',
  // combining marks (composed by NFKC, or standing alone)
  'e\u0301',
  'cafe\u0301',
  ' \u0301 ',
  '\u0301\u0302',
  'a\u20dd',
  // NFKC-affected: ligatures, full-width, compatibility letters and digits, symbols
  'ﬁle',
  'ﬀ',
  'ﬃx',
  'Ｆｕｌｌ　ｗｉｄｔｈ',
  '１２３',
  '①②',
  '™',
  '㎏',
  'Ⅻ',
  'x²',
  'ℌ',
  'ｈｅｌｌｏ，ｗｏｒｌｄ！',
  // case mappings that change length or depend on context
  'İstanbul',
  'STRASSE Straße',
  'ΟΔΟΣ',
  'ǅ',
  'ﬅ',
  // unusual spaces and invisibles
  '\u00a0',
  '\u2028',
  '\u3000',
  '\ufeff',
  '\u200b',
  '\u200d',
  '\u2009',
  // lone surrogates and astral letters/digits
  '\ud800',
  '\udc00',
  'a\udc00b',
  '\udbff\udbff',
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
  '𝟙𝟚',
  '𠀀𠀁',
  // symbols and punctuation beyond ASCII
  '€',
  '±√∞',
  '«»',
  '—',
  '…',
  '¿¡',
  '§¶',
];

function randomCodePoint(rnd: () => number): string {
  const r = rnd();
  if (r < 0.4) return String.fromCharCode(Math.floor(rnd() * 0x80));
  if (r < 0.8) return String.fromCharCode(Math.floor(rnd() * 0x10000)); // may be a lone surrogate
  return String.fromCodePoint(0x10000 + Math.floor(rnd() * 0x100000));
}

function makeText(rnd: () => number, i: number): string {
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
  // Most texts are plain ASCII prose (the common, fast path); the rest mix in everything else.
  const kind = i % 10;
  if (kind === 0 && rnd() < 0.1) return '';
  const parts: string[] = [];
  const length = Math.floor(rnd() * (rnd() < 0.1 ? 400 : 60));
  const vocab = [...STOP, ...ASCII_WORDS, ...ASCII_WORDS.map((w) => w.toUpperCase())];
  let last = '';
  for (let p = 0; p < length; p++) {
    const r = rnd();
    let part: string;
    if (r < 0.15 && last)
      part = last; // repeated words: tf > 1
    else if (r < 0.6) part = pick(vocab);
    else if (r < 0.68) part = String(Math.floor(rnd() * 100000));
    else if (r < 0.78) part = pick(ASCII_PUNCT);
    else if (r < 0.8) part = pick(ASCII_CONTROL);
    else if (r < 0.82) part = pick(vocab) + pick(ASCII_PUNCT) + pick(vocab);
    else if (r < 0.83)
      part = 'x'.repeat(1 + Math.floor(rnd() * 2000)); // very long word
    else if (r < 0.84) part = pick(ASCII_WORDS).repeat(1 + Math.floor(rnd() * 50));
    else if (kind < 6) part = pick(vocab);
    else if (r < 0.93) part = pick(UNICODE);
    else if (r < 0.97) part = Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => randomCodePoint(rnd)).join('');
    else part = pick(UNICODE) + pick(vocab) + pick(UNICODE);
    parts.push(part);
    last = part;
    parts.push(rnd() < 0.05 ? '' : pick(ASCII_SPACE));
  }
  return parts.join('');
}

/** Many distinct words: more features and words than any fixed-size table or cache holds. */
function hugeText(rnd: () => number, words: number, maxLength: number): string {
  const letters = 'abcdefghijklmnopqrstuvwxyzäé';
  return Array.from({ length: words }, () =>
    Array.from({ length: 1 + Math.floor(rnd() * maxLength) }, () => letters[Math.floor(rnd() * letters.length)]).join(''),
  ).join(' ');
}

function corpus(n: number, seed: number): string[] {
  const rnd = mulberry32(seed);
  const texts = Array.from({ length: n }, (_, i) => makeText(rnd, i));
  // Fixed edge cases first.
  return [
    '',
    ' ',
    'a',
    'ab',
    'the',
    'The THE the',
    '\ud800',
    '\udc00',
    '🎉',
    'ﬁ',
    'x'.repeat(100_000),
    hugeText(rnd, 30_000, 12),
    hugeText(rnd, 300, 80), // words on both sides of any length limit
    ...UNICODE,
    ...ASCII_PUNCT,
    ...ASCII_CONTROL,
    ...texts,
  ];
}

const bytes = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

describe('hash embedder stays bit-identical to sluice-hash-v1', () => {
  const texts = corpus(3000, 20240611);

  it.each([1, 8, 100, 384, 1536])('hashEmbed at %i dimensions', (dimensions) => {
    let mismatches = 0;
    for (const text of texts) {
      const got = hashEmbed(text, dimensions);
      const want = referenceHashEmbed(text, dimensions);
      if (got.length !== dimensions || !bytes(got).equals(bytes(want))) {
        if (mismatches++ < 3) expect({ text, got: [...got] }).toEqual({ text, got: [...want] });
      }
    }
    expect(mismatches).toBe(0);
  });

  it('extractFeatures gives the same features, counts, weights and order', () => {
    for (const text of texts.slice(0, 1500)) {
      expect([...extractFeatures(text)]).toEqual([...referenceExtractFeatures(text)]);
    }
  });

  it('every single code point of the BMP, and a sample of astral ones, in and next to words', () => {
    const rnd = mulberry32(7);
    const singles: string[] = [];
    for (let c = 0; c < 0x10000; c += 64) {
      singles.push(Array.from({ length: 64 }, (_, k) => String.fromCharCode(c + k)).join(''));
      singles.push(Array.from({ length: 64 }, (_, k) => `a${String.fromCharCode(c + k)}b `).join(''));
    }
    for (let k = 0; k < 2000; k++) singles.push(`x${String.fromCodePoint(0x10000 + Math.floor(rnd() * 0x100000))}y z`);
    for (const text of singles) expect(bytes(hashEmbed(text, 384)).equals(bytes(referenceHashEmbed(text, 384)))).toBe(true);
  });

  it('interleaves fast and slow paths, huge and small texts and dimensions without leaking state between calls', () => {
    const order = mulberry32(99);
    for (let k = 0; k < 2000; k++) {
      const text = texts[Math.floor(order() * texts.length)];
      const dimensions = [64, 384, 1536][Math.floor(order() * 3)];
      expect(bytes(hashEmbed(text, dimensions)).equals(bytes(referenceHashEmbed(text, dimensions)))).toBe(true);
    }
  });

  it('embed() returns the same vectors and token count', async () => {
    const embedder = createHashEmbedder({ dimensions: 384 });
    const tokenizer = tokenizerFor(undefined);
    const sample = texts.slice(0, 500);
    const { vectors, tokens } = await embedder.embed(sample);
    sample.forEach((text, i) => expect(bytes(vectors[i]).equals(bytes(referenceHashEmbed(text, 384)))).toBe(true));
    expect(tokens).toBe(sample.reduce((n, t) => n + tokenizer.count(t), 0));
  });
});
