// The offline default: a feature-hashing embedder. No model, no download, same vector for the
// same text on every machine. Texts that share words, word pairs and word fragments end up close,
// which is enough for lexical search and for exercising a pipeline end to end.
import type { Embedder, EmbedResult } from './types.ts';
import { tokenizerFor } from '../text/tokenizer.ts';
import { SliceTable } from '../text/slice-table.ts';
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
// (emoji, math signs) is a word of its own. This regex defines the words; the scanner below
// finds exactly its matches (maximal runs of WORD code points, single SYMBOL code points) without
// allocating them, classifying each code point once with these two single-character tests:
//   /[\p{L}\p{N}\p{M}]+|[^\s\p{L}\p{N}\p{M}\p{P}]/gu
const WORD_CHAR_RE = /^[\p{L}\p{N}\p{M}]$/u;
const SYMBOL_CHAR_RE = /^[^\s\p{L}\p{N}\p{M}\p{P}]$/u;
const UNKNOWN = 0;
const SKIP = 1;
const WORD = 2;
const SYMBOL = 3;

function classify(codePoint: number): number {
  const ch = String.fromCodePoint(codePoint); // a lone surrogate stays one code point under /u
  return WORD_CHAR_RE.test(ch) ? WORD : SYMBOL_CHAR_RE.test(ch) ? SYMBOL : SKIP;
}

/** Class of every code point, filled on first sight (ASCII up front). */
const classes = new Uint8Array(0x110000);
for (let c = 0; c < 0x80; c++) classes[c] = classify(c);

function classOf(codePoint: number): number {
  const k = classes[codePoint];
  return k !== UNKNOWN ? k : (classes[codePoint] = classify(codePoint));
}

// Features are hashed without building their strings: FNV-1a over UTF-16 units, continued across
// the parts of a feature (kind, word, next word…), finished with a murmur3 mix.
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const KIND_WORD = 1;
const KIND_BIGRAM = 2;
const KIND_CHARS = 3;
const WORD_SEED = Math.imul(FNV_OFFSET ^ KIND_WORD, FNV_PRIME);
const BIGRAM_SEED = Math.imul(FNV_OFFSET ^ KIND_BIGRAM, FNV_PRIME);
const CHARS_SEED = Math.imul(FNV_OFFSET ^ KIND_CHARS, FNV_PRIME);
const LT = 0x3c; // '<'
const GT = 0x3e; // '>'

function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Stopwords packed 5 bits a letter ('a' = 1), so a word is checked without slicing it out. */
const MAX_STOPWORD_LENGTH = 6;
const PACKED_STOPWORDS = new Set<number>();
for (const w of STOPWORDS) {
  let packed = 0;
  for (let i = 0; i < w.length; i++) packed = packed * 32 + (w.charCodeAt(i) - 0x60);
  if (w.length > MAX_STOPWORD_LENGTH || !/^[a-z]+$/.test(w)) throw new Error(`stopword ${w} cannot be packed`);
  PACKED_STOPWORDS.add(packed);
}

// ---- feature table -------------------------------------------------------------------------------
// One reusable open-addressing table (feature id → its entry) plus the entries in first-seen order:
// id, occurrences, weight, place. The vector is summed in first-seen order, which is the insertion
// order of the Map the model was defined with: float addition order is part of the output.
// A slot is a pair [id, stamp] with stamp = base + entry + 1; raising `base` past every stamp
// empties the table without clearing it.
const INITIAL_CAPACITY = 1 << 11;
/** A table grown beyond this for one huge text is dropped afterwards (memory does not stay up). */
const RETAINED_CAPACITY = 1 << 16;
const MAX_BASE = 1 << 30;

let capacity = 0;
let slotMask = 0; // over table indices: (capacity - 1) * 2
let table = new Int32Array(0);
let base = 0;
let entryId = new Int32Array(0);
let entryCount = new Int32Array(0);
let entryWeight = new Float64Array(0);
let entryPlace = new Int32Array(0);
let entries = 0;
/** Numbers the texts, so a word cache entry knows whether it was seen in the current one. */
let textNumber = 0;

function allocate(cap: number): void {
  capacity = cap;
  slotMask = (cap - 1) << 1;
  table = new Int32Array(cap * 2);
  base = 0;
  const size = cap >> 1;
  const ids = new Int32Array(size);
  const counts = new Int32Array(size);
  const weights = new Float64Array(size);
  const places = new Int32Array(size);
  if (entries > 0) {
    ids.set(entryId.subarray(0, entries));
    counts.set(entryCount.subarray(0, entries));
    weights.set(entryWeight.subarray(0, entries));
    places.set(entryPlace.subarray(0, entries));
  }
  entryId = ids;
  entryCount = counts;
  entryWeight = weights;
  entryPlace = places;
}
allocate(INITIAL_CAPACITY);

function reset(): void {
  if (++textNumber === 0x7fffffff) {
    textNumber = 1;
    forgetWords();
  }
  base += entries;
  entries = 0;
  if (capacity > RETAINED_CAPACITY) allocate(INITIAL_CAPACITY);
  else if (base > MAX_BASE) {
    table.fill(0);
    base = 0;
  }
}

function grow(): void {
  allocate(capacity * 2);
  for (let e = 0; e < entries; e++) {
    let s = (entryId[e] << 1) & slotMask;
    while (table[s + 1] > base) s = (s + 2) & slotMask;
    table[s] = entryId[e];
    table[s + 1] = base + e + 1;
  }
}

/** Where a feature goes in a vector of `placedFor` dimensions: its slot, or ~slot when it counts negatively. */
let placedFor = HASH_DEFAULT_DIMENSIONS;
/** Not yet placed (no slot of a real vector is this large). */
const UNPLACED = 0x7fffffff;

function place(id: number): number {
  const u = id >>> 0;
  // u % placedFor without an integer division: the double quotient of a uint32 by an integer is
  // never rounded up to the next integer, so its floor is exact.
  const slot = u - Math.floor(u / placedFor) * placedFor;
  // Signed hashing: collisions cancel out on average instead of piling up.
  // (Branch-free: the sign is a coin flip, which a branch predictor cannot learn.)
  return slot ^ ((mix(id ^ 0x9e3779b9) & 1) - 1);
}

/**
 * Counts one occurrence of feature `id` (a mixed hash, as int32); the first occurrence sets its
 * weight. `where` is place(id) if known. Returns the feature's entry, valid until the next text.
 */
function add(id: number, weight: number, where: number): number {
  let s = (id << 1) & slotMask;
  for (;;) {
    const stamp = table[s + 1];
    if (stamp <= base) break;
    if (table[s] === id) {
      const e = stamp - base - 1;
      entryCount[e]++;
      return e;
    }
    s = (s + 2) & slotMask;
  }
  if (entries >= capacity >> 1) {
    grow();
    return add(id, weight, where);
  }
  table[s] = id;
  table[s + 1] = base + entries + 1;
  entryId[entries] = id;
  entryCount[entries] = 1;
  entryWeight[entries] = weight;
  entryPlace[entries] = where === UNPLACED ? place(id) : where;
  return entries++;
}

// ---- words -------------------------------------------------------------------------------------------

/** UTF-16 units of the current padded word "<word>", and code point offsets into it. */
let units = new Int32Array(1 << 10);
let offsets = new Int32Array(1 << 10);

/** Whether text[from, from + length) is a stopword (all are a–z, packed to compare as one number). */
function isStopword(text: string, from: number, length: number): boolean {
  if (length > MAX_STOPWORD_LENGTH) return false;
  let packed = 0;
  for (let i = from; i < from + length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x61 || c > 0x7a) return false;
    packed = packed * 32 + (c - 0x60);
  }
  return PACKED_STOPWORDS.has(packed);
}

/**
 * Character 3–5-grams of the padded word "<text[from, to)>": morphology ("embedding" ~
 * "embeddings") and scripts written without spaces. Offsets are per code point, so no character is
 * split (a unit that is a low surrogate never starts a code point). Writes the mixed ids to `out`
 * from `at`, all 3-grams, then 4-grams, then 5-grams; returns how many.
 */
function charGrams(text: string, from: number, to: number, out: Int32Array, at: number): number {
  const padded = to - from + 2;
  if (padded > units.length) {
    units = new Int32Array(padded + (padded >> 1));
    offsets = new Int32Array(units.length + 1);
  }
  let lowSurrogates = false;
  units[0] = LT;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    units[i - from + 1] = c;
    if (c >= 0xdc00 && c <= 0xdfff) lowSurrogates = true;
  }
  units[padded - 1] = GT;
  let o = at;
  if (!lowSurrogates) {
    if (padded < 4) return 0;
    for (let n = 3; n <= 5; n++) {
      for (let i = 0; i + n <= padded; i++) {
        let h = CHARS_SEED;
        for (let k = i; k < i + n; k++) h = Math.imul(h ^ units[k], FNV_PRIME);
        out[o++] = mix(h);
      }
    }
    return o - at;
  }
  let points = 0;
  for (let i = 0; i < padded; i++) {
    const c = units[i];
    if (c < 0xdc00 || c > 0xdfff) offsets[points++] = i;
  }
  offsets[points] = padded;
  if (points < 4) return 0;
  for (let n = 3; n <= 5; n++) {
    for (let i = 0; i + n <= points; i++) {
      let h = CHARS_SEED;
      for (let k = offsets[i]; k < offsets[i + n]; k++) h = Math.imul(h ^ units[k], FNV_PRIME);
      out[o++] = mix(h);
    }
  }
  return o - at;
}

// A word's own features (stopword or not, its character n-grams) do not depend on the text around
// it, and most words recur, so they are kept in a bounded cache of words (by their characters),
// emptied as a whole when full; the arrays below hold what is known of each cached word.
const CACHED_WORD_LENGTH = 64;
const CACHE_WORDS = 1 << 13;
const CACHE_GRAMS = 1 << 18;
const words = new SliceTable(CACHE_WORDS, 1 << 16);
const cachedStop = new Uint8Array(CACHE_WORDS);
const cachedGramsAt = new Int32Array(CACHE_WORDS + 1);
const cachedGrams = new Int32Array(CACHE_GRAMS);
// place() of the word and of its n-grams, for the current dimensions.
const cachedWordPlace = new Int32Array(CACHE_WORDS);
const cachedGramPlace = new Int32Array(CACHE_GRAMS);
// Where the word's features went in the feature table, if it already occurred in this text: a
// repeated word then counts its features without looking them up.
const cachedText = new Int32Array(CACHE_WORDS);
const cachedWordEntry = new Int32Array(CACHE_WORDS);
const cachedGramEntry = new Int32Array(CACHE_GRAMS);

function forgetWords(): void {
  words.clear();
}
/** Character n-grams of an uncached (long) word. */
let scratchGrams = new Int32Array(1 << 10);

/** The cached word text[from, to) with FNV hash `hash`, learning it if new; -1 if it is too long. */
function cachedWord(text: string, from: number, to: number, hash: number): number {
  const length = to - from;
  if (length > CACHED_WORD_LENGTH) return -1;
  const known = words.find(text, from, to, hash);
  if (known >= 0) return known;
  const gramsAt = cachedGramsAt[words.size];
  if (!words.fits(length) || gramsAt + 3 * (length + 2) > CACHE_GRAMS) {
    forgetWords();
    return cachedWord(text, from, to, hash);
  }
  const w = words.add(text, from, to, hash);
  const stop = isStopword(text, from, length);
  cachedStop[w] = stop ? 1 : 0;
  cachedText[w] = textNumber - 1;
  cachedWordPlace[w] = place(mix(hash) | 0);
  const end = gramsAt + (stop ? 0 : charGrams(text, from, to, cachedGrams, gramsAt));
  cachedGramsAt[w + 1] = end;
  for (let g = gramsAt; g < end; g++) cachedGramPlace[g] = place(cachedGrams[g]);
  return w;
}

/** Adds the features of word text[from, to) (already normalised and lower-cased); returns its hash. */
function addWord(text: string, from: number, to: number, first: boolean, prevHash: number): number {
  let wordHash = WORD_SEED;
  let bigramHash = Math.imul(BIGRAM_SEED ^ prevHash, FNV_PRIME);
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    wordHash = Math.imul(wordHash ^ c, FNV_PRIME);
    bigramHash = Math.imul(bigramHash ^ c, FNV_PRIME);
  }
  const w = cachedWord(text, from, to, wordHash);
  if (w >= 0 && cachedText[w] === textNumber) {
    // Seen in this text: its own features are all in the table already, so order is unaffected.
    entryCount[cachedWordEntry[w]]++;
    if (!first) add(mix(bigramHash) | 0, BIGRAM_WEIGHT, UNPLACED);
    for (let g = cachedGramsAt[w], end = cachedGramsAt[w + 1]; g < end; g++) entryCount[cachedGramEntry[g]]++;
    return wordHash;
  }
  const stop = w >= 0 ? cachedStop[w] === 1 : isStopword(text, from, to - from);
  const wordEntry = add(mix(wordHash) | 0, stop ? STOPWORD_WEIGHT : WORD_WEIGHT, w >= 0 ? cachedWordPlace[w] : UNPLACED);
  if (!first) add(mix(bigramHash) | 0, BIGRAM_WEIGHT, UNPLACED);
  if (w >= 0) {
    cachedText[w] = textNumber;
    cachedWordEntry[w] = wordEntry;
    // A stopword has no n-grams cached.
    for (let g = cachedGramsAt[w], end = cachedGramsAt[w + 1]; g < end; g++)
      cachedGramEntry[g] = add(cachedGrams[g], CHAR_NGRAM_WEIGHT, cachedGramPlace[g]);
    return wordHash;
  }
  if (stop) return wordHash;
  const room = 3 * (to - from + 2);
  if (room > scratchGrams.length) scratchGrams = new Int32Array(room);
  const n = charGrams(text, from, to, scratchGrams, 0);
  for (let g = 0; g < n; g++) add(scratchGrams[g], CHAR_NGRAM_WEIGHT, UNPLACED);
  return wordHash;
}

/** Fills the feature table with the features of `text`, in the order the model defines. */
function collect(text: string, dimensions: number): void {
  if (dimensions !== placedFor) {
    placedFor = dimensions;
    forgetWords(); // their places are for other dimensions
  }
  reset();
  // NFKC is the identity on ASCII, and ASCII lower-casing is cheap (one UTF-8 byte per unit iff ASCII).
  const s = Buffer.byteLength(text) === text.length ? text.toLowerCase() : text.normalize('NFKC').toLowerCase();
  const n = s.length;
  let prevHash = 0;
  let first = true;
  let i = 0;
  while (i < n) {
    let c = s.charCodeAt(i);
    let width = 1;
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
        width = 2;
      }
    }
    const k = c < 0x80 ? classes[c] : classOf(c);
    if (k === SKIP) {
      i += width;
      continue;
    }
    const from = i;
    i += width;
    if (k === WORD) {
      while (i < n) {
        c = s.charCodeAt(i);
        if (c < 0x80) {
          if (classes[c] !== WORD) break;
          i++;
          continue;
        }
        width = 1;
        if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
          const d = s.charCodeAt(i + 1);
          if (d >= 0xdc00 && d <= 0xdfff) {
            c = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
            width = 2;
          }
        }
        if (classOf(c) !== WORD) break;
        i += width;
      }
    }
    prevHash = addWord(s, from, i, first, prevHash);
    first = false;
  }
}

/** Hashed feature id → [occurrences, weight of its kind], in first-seen order. */
export function extractFeatures(text: string): Map<number, [number, number]> {
  collect(text, placedFor);
  const features = new Map<number, [number, number]>();
  for (let e = 0; e < entries; e++) features.set(entryId[e] >>> 0, [entryCount[e], entryWeight[e]]);
  return features;
}

/** 1 + ln(count) for small counts, the same doubles Math.log gives, without the call. */
const TF = new Float64Array(256);
for (let c = 1; c < TF.length; c++) TF[c] = 1 + Math.log(c);

export function hashEmbed(text: string, dimensions: number): Float32Array {
  const vector = new Float32Array(dimensions);
  embedInto(text, vector);
  return vector;
}

/** Writes the embedding of `text` into `vector` (all zeros, of the embedder's dimensions). */
function embedInto(text: string, vector: Float32Array): void {
  collect(text, vector.length);
  for (let e = 0; e < entries; e++) {
    const where = entryPlace[e];
    // Sub-linear tf: repeating a word ten times is not ten times the evidence.
    const count = entryCount[e];
    const tf = count < TF.length ? TF[count] : 1 + Math.log(count);
    const negative = where >> 31; // 0 or -1, branch-free as in place()
    vector[where ^ negative] += (negative | 1) * entryWeight[e] * tf;
  }
  let norm = 0;
  for (let i = 0; i < vector.length; i++) norm += vector[i] * vector[i];
  if (norm > 0) {
    const inv = 1 / Math.sqrt(norm);
    for (let i = 0; i < vector.length; i++) vector[i] *= inv;
  }
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
    local: true,
    countTokens: (text) => tokenizer.count(text),
    async embed(texts: string[], signal?: AbortSignal): Promise<EmbedResult> {
      // One allocation for the whole batch, each vector a view of its own slice (see EmbedResult).
      const slab = new Float32Array(texts.length * dimensions);
      const vectors: Float32Array[] = [];
      let tokens = 0;
      for (let i = 0; i < texts.length; i++) {
        signal?.throwIfAborted();
        const vector = slab.subarray(i * dimensions, (i + 1) * dimensions);
        embedInto(texts[i], vector);
        vectors.push(vector);
        tokens += tokenizer.count(texts[i]);
      }
      return { vectors, requests: 0, tokens };
    },
  };
}
