// Byte-pair encoding over tiktoken rank tables (the tables come from js-tiktoken). Written for
// counting speed and a cheap start: the ~100k tokens live in typed arrays (their bytes end to end,
// and an open-addressing table on an FNV hash of them), so loading a table is one pass over its
// base64 text and the garbage collector has two arrays to look at, not 100k strings in a Map.
// Merges only re-rank the neighbours of the merged pair, and whole pre-tokenised words are
// memoised, since natural text repeats its words. Results equal js-tiktoken's (tested).

import { SliceTable } from './slice-table.ts';

export interface RankTable {
  pat_str: string;
  bpe_ranks: string;
}

const MEMO_LIMIT = 100_000;
const PIECES = 1 << 14;
const PIECE_UNITS = 1 << 18;
// Pieces this long are rare and not worth memoising (and could be huge).
const MEMO_MAX_PIECE = 64;

const BASE64_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) BASE64_VALUE['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i;

/** Decodes base64 text[from, to) into out at `at`; returns how many bytes. '=' padding ends it. */
function decodeBase64(text: string, from: number, to: number, out: Uint8Array, at: number): number {
  let acc = 0;
  let bits = 0;
  let o = at;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? BASE64_VALUE[c] : -1;
    if (v < 0) break;
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return o - at;
}

/** cl100k_base's pre-tokeniser, which asciiPieceEnd() implements for ASCII text. */
const CL100K_PATTERN =
  "('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// ASCII classes as the pattern sees them: \p{L}, \p{N}, \s, [\r\n]; anything else is "other".
const LETTER = 1;
const DIGIT = 2;
const SPACE = 4;
const NEWLINE = 8;
const OTHER = 16;
const ASCII_CLASS = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  ASCII_CLASS[c] =
    (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
      ? LETTER
      : c >= 0x30 && c <= 0x39
        ? DIGIT
        : c === 0x0a || c === 0x0d
          ? SPACE | NEWLINE
          : c === 0x20 || (c >= 0x09 && c <= 0x0d)
            ? SPACE
            : OTHER;
}

/**
 * Where the cl100k piece starting at text[i] ends, for ASCII text: the pattern's alternatives in
 * its order (the first that matches wins, with the regex's greedy/backtracking results).
 */
export function asciiPieceEnd(text: string, i: number, n: number): number {
  const c = text.charCodeAt(i);
  const k = ASCII_CLASS[c];
  const next = i + 1 < n ? ASCII_CLASS[text.charCodeAt(i + 1)] : 0;
  // 's 't 're 've 'm 'll 'd, either case
  if (c === 0x27 && next === LETTER) {
    const a = text.charCodeAt(i + 1) | 0x20;
    if (a === 0x73 || a === 0x74 || a === 0x6d || a === 0x64) return i + 2;
    const b = i + 2 < n ? text.charCodeAt(i + 2) | 0x20 : 0;
    if (((a === 0x72 || a === 0x76) && b === 0x65) || (a === 0x6c && b === 0x6c)) return i + 3;
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  let j = -1;
  if (k === LETTER) j = i + 1;
  else if (next === LETTER && (k & (DIGIT | NEWLINE)) === 0) j = i + 2;
  if (j >= 0) {
    while (j < n && ASCII_CLASS[text.charCodeAt(j)] === LETTER) j++;
    return j;
  }
  // \p{N}{1,3}
  if (k === DIGIT) {
    j = i + 1;
    while (j < n && j < i + 3 && ASCII_CLASS[text.charCodeAt(j)] === DIGIT) j++;
    return j;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  if (k === OTHER) j = i + 1;
  else if (c === 0x20 && next === OTHER) j = i + 2;
  if (j >= 0) {
    while (j < n && ASCII_CLASS[text.charCodeAt(j)] === OTHER) j++;
    while (j < n && (ASCII_CLASS[text.charCodeAt(j)] & NEWLINE) !== 0) j++;
    return j;
  }
  // Whitespace from here on: the run [i, end).
  let end = i + 1;
  while (end < n && (ASCII_CLASS[text.charCodeAt(end)] & SPACE) !== 0) end++;
  // \s*[\r\n]+ ends after the run's last line break.
  for (let p = end - 1; p >= i; p--) if ((ASCII_CLASS[text.charCodeAt(p)] & NEWLINE) !== 0) return p + 1;
  // \s+(?!\S) leaves the last space to the word after it; else \s+.
  return end < n && end - 1 > i ? end - 1 : end;
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function fnv(bytes: Uint8Array, from: number, to: number): number {
  let h = FNV_OFFSET;
  for (let i = from; i < to; i++) h = Math.imul(h ^ bytes[i], FNV_PRIME);
  return h;
}

export class BytePairEncoder {
  private readonly pattern: RegExp;
  private readonly memo = new Map<string, number[]>();
  /** Token bytes end to end; token r is tokenBytes[tokenStart[r], tokenStart[r] + tokenLength[r]). */
  private readonly tokenBytes: Uint8Array;
  private readonly tokenStart: Int32Array;
  private readonly tokenLength: Int32Array;
  /** Open addressing on fnv(token bytes): rank + 1, 0 = empty. */
  private readonly slots: Int32Array;
  private readonly slotMask: number;
  /** UTF-8 bytes of the piece being encoded. */
  private scratch = new Uint8Array(256);
  /** ASCII text is cut into pieces by asciiPieceEnd() instead of the regular expression. */
  private readonly scanAscii: boolean;
  /** Recent short pieces (by their characters) and their token counts. */
  private readonly pieces = new SliceTable(PIECES, PIECE_UNITS);
  private readonly pieceTokens = new Int32Array(PIECES);

  constructor(table: RankTable, opts: { asciiScanner?: boolean } = {}) {
    this.pattern = new RegExp(table.pat_str, 'gu');
    this.scanAscii = (opts.asciiScanner ?? true) && table.pat_str === CL100K_PATTERN;
    // "<first char> <offset> <base64 token> <base64 token> …" (one or more lines), ranks counting
    // up from offset. Base64 is 4/3 the bytes, so its length bounds the byte array.
    const text = table.bpe_ranks;
    this.tokenBytes = new Uint8Array(Math.ceil((text.length * 3) / 4));
    const lines = text.split('\n').filter(Boolean);
    // Each line's first rank and its tokens (space-separated after the first two fields).
    const parsed = lines.map((line) => {
      const first = line.indexOf(' ');
      const second = line.indexOf(' ', first + 1);
      return { line, rank: Number.parseInt(line.slice(first + 1, second), 10), from: second + 1 };
    });
    let ranks = 0;
    for (const { line, rank, from } of parsed) {
      let tokens = 1;
      for (let i = line.indexOf(' ', from); i >= 0; i = line.indexOf(' ', i + 1)) tokens++;
      ranks = Math.max(ranks, rank + tokens);
    }
    this.tokenStart = new Int32Array(ranks).fill(-1);
    this.tokenLength = new Int32Array(ranks);
    let bytesUsed = 0;
    for (const { line, rank: firstRank, from } of parsed) {
      let rank = firstRank;
      for (let i = from; i < line.length; rank++) {
        let end = line.indexOf(' ', i);
        if (end < 0) end = line.length;
        const n = decodeBase64(line, i, end, this.tokenBytes, bytesUsed);
        this.tokenStart[rank] = bytesUsed;
        this.tokenLength[rank] = n;
        bytesUsed += n;
        i = end + 1;
      }
    }
    let capacity = 1;
    while (capacity < ranks * 2) capacity <<= 1;
    this.slots = new Int32Array(capacity);
    this.slotMask = capacity - 1;
    for (let r = 0; r < ranks; r++) {
      const start = this.tokenStart[r];
      if (start < 0) continue;
      let s = fnv(this.tokenBytes, start, start + this.tokenLength[r]) & this.slotMask;
      while (this.slots[s] !== 0) s = (s + 1) & this.slotMask;
      this.slots[s] = r + 1;
    }
  }

  /** The bytes of token `rank` (a view; undefined for ranks the table does not define). */
  tokenBytesOf(rank: number): Uint8Array | undefined {
    const start = rank >= 0 && rank < this.tokenStart.length ? this.tokenStart[rank] : -1;
    return start < 0 ? undefined : this.tokenBytes.subarray(start, start + this.tokenLength[rank]);
  }

  /** The rank of bytes[from, to) as one token, or -1. */
  rankOf(bytes: Uint8Array, from: number, to: number): number {
    const length = to - from;
    let s = fnv(bytes, from, to) & this.slotMask;
    for (;;) {
      const r = this.slots[s] - 1;
      if (r < 0) return -1;
      if (this.tokenLength[r] === length) {
        let a = this.tokenStart[r];
        let i = from;
        while (i < to && this.tokenBytes[a] === bytes[i]) (i++, a++);
        if (i === to) return r;
      }
      s = (s + 1) & this.slotMask;
    }
  }

  /** Token ids of scratch[0, length): one pre-tokenised piece's UTF-8 bytes. */
  private encodeBytes(length: number): number[] {
    const bytes = this.scratch;
    const whole = this.rankOf(bytes, 0, length);
    if (whole >= 0) return [whole];
    // starts[i] is where part i begins; part i ends where part i+1 begins.
    const starts: number[] = [];
    for (let i = 0; i <= length; i++) starts.push(i);
    const rankAt = (i: number): number => {
      if (i + 2 >= starts.length) return Infinity;
      const r = this.rankOf(bytes, starts[i], starts[i + 2]);
      return r < 0 ? Infinity : r;
    };
    const pairRanks: number[] = [];
    for (let i = 0; i < starts.length - 2; i++) pairRanks.push(rankAt(i));
    for (;;) {
      let best = Infinity;
      let at = -1;
      for (let i = 0; i < pairRanks.length; i++) {
        if (pairRanks[i] < best) {
          best = pairRanks[i];
          at = i;
        }
      }
      if (at < 0) break;
      starts.splice(at + 1, 1);
      pairRanks.splice(at, 1);
      if (at < pairRanks.length) pairRanks[at] = rankAt(at);
      if (at > 0) pairRanks[at - 1] = rankAt(at - 1);
    }
    const out: number[] = [];
    // Every single byte is a token, so each part left has a rank.
    for (let i = 0; i + 1 < starts.length; i++) out.push(this.rankOf(bytes, starts[i], starts[i + 1]));
    return out;
  }

  private encodePiece(piece: string): number[] {
    const cached = this.memo.get(piece);
    if (cached) return cached;
    if (piece.length * 3 > this.scratch.length) this.scratch = new Uint8Array(piece.length * 3);
    // ASCII text is its own UTF-8; anything else goes through the encoder.
    let length = 0;
    for (; length < piece.length; length++) {
      const c = piece.charCodeAt(length);
      if (c >= 0x80) break;
      this.scratch[length] = c;
    }
    if (length < piece.length) length = Buffer.from(this.scratch.buffer, 0, this.scratch.length).write(piece, 'utf8');
    const tokens = this.encodeBytes(length);
    if (piece.length <= MEMO_MAX_PIECE) {
      if (this.memo.size >= MEMO_LIMIT) this.memo.clear();
      this.memo.set(piece, tokens);
    }
    return tokens;
  }

  encode(text: string): number[] {
    const out: number[] = [];
    for (const match of text.matchAll(this.pattern)) for (const t of this.encodePiece(match[0])) out.push(t);
    return out;
  }

  count(text: string): number {
    // One byte per character in UTF-8 means ASCII (a native check, much faster than a loop).
    if (this.scanAscii && Buffer.byteLength(text) === text.length) return this.countAscii(text);
    let n = 0;
    for (const match of text.matchAll(this.pattern)) n += this.encodePiece(match[0]).length;
    return n;
  }

  private countAscii(text: string): number {
    let n = 0;
    for (let i = 0; i < text.length;) {
      const end = asciiPieceEnd(text, i, text.length);
      n += this.pieceTokenCount(text, i, end);
      i = end;
    }
    return n;
  }

  /** Tokens in the ASCII piece text[from, to), from the piece table when it was seen recently. */
  private pieceTokenCount(text: string, from: number, to: number): number {
    const length = to - from;
    if (length > MEMO_MAX_PIECE) return this.encodePiece(text.slice(from, to)).length;
    let h = FNV_OFFSET;
    for (let i = from; i < to; i++) h = Math.imul(h ^ text.charCodeAt(i), FNV_PRIME);
    const known = this.pieces.find(text, from, to, h);
    if (known >= 0) return this.pieceTokens[known];
    const tokens = this.encodePiece(text.slice(from, to)).length;
    if (!this.pieces.fits(length))
      this.pieces.clear(); // stored next time it comes
    else this.pieceTokens[this.pieces.add(text, from, to, h)] = tokens;
    return tokens;
  }

  decode(tokens: number[]): string {
    const parts: Uint8Array[] = [];
    for (const t of tokens) {
      const bytes = this.tokenBytesOf(t);
      if (bytes) parts.push(bytes);
    }
    return Buffer.concat(parts).toString('utf8');
  }
}
