// Byte-pair encoding over tiktoken rank tables (the tables come from js-tiktoken). Written for
// counting speed: byte sequences are keyed as latin1 strings (ASCII text needs no conversion),
// merges only re-rank the neighbours of the merged pair, and whole pre-tokenised words are
// memoised, since natural text repeats its words. Results equal js-tiktoken's (tested).

export interface RankTable {
  pat_str: string;
  bpe_ranks: string;
}

const MEMO_LIMIT = 100_000;
// Pieces this long are rare and not worth memoising (and could be huge).
const MEMO_MAX_PIECE = 64;

const BASE64_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) BASE64_VALUE['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i;

/** A short base64 token → its bytes as a latin1 string (a third of Buffer's cost for 100k tokens). */
export function base64ToLatin1(text: string): string {
  let out = '';
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < text.length; i++) {
    const v = BASE64_VALUE[text.charCodeAt(i)];
    if (v === undefined || v < 0) break; // '=' padding ends the data
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += String.fromCharCode((acc >> bits) & 0xff);
    }
  }
  return out;
}

export class BytePairEncoder {
  private readonly ranks = new Map<string, number>();
  private readonly bytesOfRank: string[] = [];
  private readonly pattern: RegExp;
  private readonly memo = new Map<string, number[]>();

  constructor(table: RankTable) {
    this.pattern = new RegExp(table.pat_str, 'gu');
    // Each line: "<first char> <offset> <base64 token> <base64 token> …", ranks counting up from offset.
    for (const line of table.bpe_ranks.split('\n')) {
      if (!line) continue;
      const fields = line.split(' ');
      const offset = Number.parseInt(fields[1], 10);
      for (let i = 2; i < fields.length; i++) {
        const bytes = base64ToLatin1(fields[i]);
        const rank = offset + i - 2;
        this.ranks.set(bytes, rank);
        this.bytesOfRank[rank] = bytes;
      }
    }
  }

  /** Token ids of one pre-tokenised piece (as a latin1 byte string). */
  private encodeBytes(bytes: string): number[] {
    const whole = this.ranks.get(bytes);
    if (whole !== undefined) return [whole];
    // starts[i] is where part i begins; part i ends where part i+1 begins.
    const starts: number[] = [];
    for (let i = 0; i <= bytes.length; i++) starts.push(i);
    const rankAt = (i: number): number =>
      i + 2 < starts.length ? (this.ranks.get(bytes.slice(starts[i], starts[i + 2])) ?? Infinity) : Infinity;
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
    for (let i = 0; i + 1 < starts.length; i++) out.push(this.ranks.get(bytes.slice(starts[i], starts[i + 1]))!);
    return out;
  }

  private encodePiece(piece: string): number[] {
    const cached = this.memo.get(piece);
    if (cached) return cached;
    // ASCII text is its own UTF-8 byte string.
    const bytes = /^[\x00-\x7f]*$/.test(piece) ? piece : Buffer.from(piece, 'utf8').toString('latin1');
    const tokens = this.encodeBytes(bytes);
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
    let n = 0;
    for (const match of text.matchAll(this.pattern)) n += this.encodePiece(match[0]).length;
    return n;
  }

  decode(tokens: number[]): string {
    return Buffer.from(tokens.map((t) => this.bytesOfRank[t] ?? '').join(''), 'latin1').toString('utf8');
  }
}
