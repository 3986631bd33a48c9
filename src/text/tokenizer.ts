// Token counting with the tokenizer the embedding model uses (tiktoken rank tables from
// js-tiktoken, our own faster BPE in bpe.ts). Each encoding's table is loaded on first use, once
// per process (~20 ms, most of it parsing js-tiktoken's module).
import { createRequire } from 'node:module';
import { BytePairEncoder, type RankTable } from './bpe.ts';
import { isWhitespaceUnit } from './whitespace.ts';

export type EncodingName = 'cl100k_base' | 'o200k_base';

export interface Tokenizer {
  readonly encoding: EncodingName;
  count(text: string): number;
  encode(text: string): number[];
  decode(tokens: number[]): string;
}

const require = createRequire(import.meta.url);
const loaded = new Map<EncodingName, BytePairEncoder>();

function load(encoding: EncodingName): BytePairEncoder {
  let enc = loaded.get(encoding);
  if (!enc) {
    // require() keeps loading synchronous, so countTokens() can stay a plain function.
    const ranksModule = require(`js-tiktoken/ranks/${encoding}`) as { default?: RankTable } & RankTable;
    enc = new BytePairEncoder(ranksModule.default ?? ranksModule);
    loaded.set(encoding, enc);
  }
  return enc;
}

/** OpenAI embedding models use cl100k_base; newer chat-family names use o200k_base. */
export function encodingForModel(model: string | undefined): EncodingName {
  const m = (model ?? '').toLowerCase();
  if (/^(gpt-4o|gpt-4\.1|gpt-5|o1|o3|o4|chatgpt-4o)/.test(m)) return 'o200k_base';
  return 'cl100k_base';
}

/** Runs of non-space text longer than this are counted in blocks (see countTokens). */
const LONG_RUN = 256;
const LONG_RUN_RE = new RegExp(`\\S{${LONG_RUN + 1},}`, 'g');

/**
 * Whether `text` has a run of more than LONG_RUN non-space characters (as LONG_RUN_RE). Any such
 * run covers a multiple of LONG_RUN + 1, so only the runs through those positions are measured:
 * a few dozen character tests for a page of prose instead of one per character.
 */
export function hasLongRun(text: string): boolean {
  const step = LONG_RUN + 1;
  for (let probe = LONG_RUN; probe < text.length; probe += step) {
    if (isWhitespaceUnit(text.charCodeAt(probe))) continue;
    let from = probe;
    while (from > 0 && !isWhitespaceUnit(text.charCodeAt(from - 1))) from--;
    let to = probe + 1;
    while (to < text.length && to - from <= LONG_RUN && !isWhitespaceUnit(text.charCodeAt(to))) to++;
    if (to - from > LONG_RUN) return true;
  }
  return false;
}

/**
 * BPE is quadratic in the length of one pre-tokenised word, so a 100 kB base64 blob or a line of
 * emoji would take seconds. Long runs are counted in blocks; cutting can only prevent merges, so
 * the count errs on the high side, which is the safe side for input limits.
 */
function countTokens(enc: BytePairEncoder, text: string): number {
  if (text.length === 0) return 0;
  if (text.length <= LONG_RUN || !hasLongRun(text)) return enc.count(text);
  let total = 0;
  let last = 0;
  for (const match of text.matchAll(LONG_RUN_RE)) {
    if (match.index > last) total += enc.count(text.slice(last, match.index));
    const run = match[0];
    for (let i = 0; i < run.length;) {
      let end = Math.min(run.length, i + LONG_RUN);
      // Never cut a surrogate pair.
      const code = run.charCodeAt(end - 1);
      if (end < run.length && code >= 0xd800 && code <= 0xdbff) end++;
      total += enc.count(run.slice(i, end));
      i = end;
    }
    last = match.index + run.length;
  }
  if (last < text.length) total += enc.count(text.slice(last));
  return total;
}

// The chunker counts each chunk it emits; the embedder (packing) and dry runs count the same
// strings again soon after. A memo of recent long texts saves that second pass. It has two
// generations (new entries go to the young one; when that is full it becomes the old one and the
// previous old one is dropped), so forgetting costs nothing per entry.
const MEMO_MIN_LENGTH = 256;
/** Characters per generation (two generations: at most ~16 MB of strings kept alive). */
const MEMO_GENERATION_CHARS = 4_000_000;
interface Memo {
  young: Map<string, number>;
  old: Map<string, number>;
  youngChars: number;
}
const memos = new Map<EncodingName, Memo>();

function memoCount(encoding: EncodingName, text: string): number {
  if (text.length < MEMO_MIN_LENGTH || text.length > MEMO_GENERATION_CHARS / 16) return countTokens(load(encoding), text);
  let memo = memos.get(encoding);
  if (!memo) memos.set(encoding, (memo = { young: new Map(), old: new Map(), youngChars: 0 }));
  const hit = memo.young.get(text) ?? memo.old.get(text);
  if (hit !== undefined) return hit;
  const n = countTokens(load(encoding), text);
  if (memo.youngChars + text.length > MEMO_GENERATION_CHARS) {
    memo.old = memo.young;
    memo.young = new Map();
    memo.youngChars = 0;
  }
  memo.young.set(text, n);
  memo.youngChars += text.length;
  return n;
}

const tokenizers = new Map<EncodingName, Tokenizer>();

export function tokenizerFor(model: string | undefined): Tokenizer {
  const encoding = encodingForModel(model);
  let t = tokenizers.get(encoding);
  if (!t) {
    t = {
      encoding,
      // Special-token text such as "<|endoftext|>" in user data is ordinary text here, not an error.
      encode: (text) => load(encoding).encode(text),
      count: (text) => memoCount(encoding, text),
      decode: (tokens) => load(encoding).decode(tokens),
    };
    tokenizers.set(encoding, t);
  }
  return t;
}
