// Document fingerprints (docs/fingerprints.md): what produced a document's stored chunks, so a
// document that did not change is neither chunked, embedded nor written again.
import { hash } from 'node:crypto';
import type { Embedder } from '../embedding/types.ts';
import type { DocumentFingerprint } from '../protocol/connector.ts';
import type { ConfiguredStream } from '../protocol/messages.ts';
import { sha256 } from '../protocol/identity.ts';
import { NO_METADATA, TEXT_SEPARATOR } from '../text/extract.ts';
import type { ExtractedText, TextProcessor } from '../text/index.ts';

/** Bumped whenever what goes into a fingerprint changes: every stored document then counts as changed once. */
export const FINGERPRINT_VERSION = 1;

/** The largest reused buffer for content fingerprints (bytes). */
const MAX_BUFFER = 1 << 20;

/** What JSON.stringify escapes in a string: `"`, `\\`, control characters, and (when lone) surrogates. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/g;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
/** JSON.stringify's own escapes: control characters by code, then `"` at 0x20 and `\\` at 0x21. */
const ESCAPES = [...Array.from({ length: 0x20 }, (_, c) => String.fromCharCode(c)), '"', '\\'].map((ch) => JSON.stringify(ch).slice(1, -1));
/** TEXT_SEPARATOR as it is inside a JSON string. */
const SEPARATOR_JSON = JSON.stringify(TEXT_SEPARATOR).slice(1, -1);

/**
 * Computes fingerprints for one connection. The settings part (processing settings, embedder
 * identity) is serialized once; per document only the text and the metadata are hashed.
 */
export class Fingerprinter {
  /** The UTF-8 bytes hashed for a content fingerprint are assembled here: `head` stays at the start. */
  private bytes: Buffer;
  /** `bytes`' memory as 32-bit words, for escapeAsciiInPlace's scan. */
  private words: Uint32Array;
  private readonly headLength: number;
  private readonly head: string;
  private readonly tail: string;
  /** `provider/model/dimensions`, stored beside the fingerprint (DocumentFingerprint.embedder). */
  readonly embedder: string;

  constructor(
    processor: Pick<TextProcessor, 'settings'>,
    embedder: Pick<Embedder, 'provider' | 'model' | 'dimensions'> | undefined,
    /** What else shapes a document besides its row (source digests' tag, sourceTag): absent where no digests are used. */
    private readonly connection?: SourceTagInputs,
  ) {
    // The canonical JSON {"embedder":…,"processing":…,"text":…,"version":…} (keys sorted), with the
    // fixed parts serialized once rather than once per document.
    const embedderIdentity = embedder ? { provider: embedder.provider, model: embedder.model, dimensions: embedder.dimensions } : null;
    this.head = `{"embedder":${stableJson(embedderIdentity)},"processing":${stableJson(processor.settings)},"text":`;
    this.tail = `,"version":${FINGERPRINT_VERSION}}`;
    this.embedder = embedderTag(embedder);
    this.headLength = Buffer.byteLength(this.head);
    this.bytes = Buffer.allocUnsafe(this.headLength + 16 * 1024);
    this.bytes.write(this.head, 0);
    this.words = wordsOf(this.bytes);
  }

  /**
   * The tag that prefixes a stream's stored source digests (`<tag>:<digest>`, DocumentFingerprint.source):
   * 16 hex of sha256 over everything besides the row that shapes its documents (fingerprint version,
   * the whole processing config and the normalized settings, embedder identity, the configured
   * stream, source type, schema-change policy), so any change of them makes every stored digest
   * mismatch and the rows are read in full. Computed once per stream.
   */
  sourceTag(cs: ConfiguredStream): string {
    let tag = this.tags.get(cs);
    if (tag === undefined) {
      const c = this.connection;
      tag = sha256(`${this.head}${stableJson({ connection: c ? { ...c } : null, stream: cs })}${this.tail}`).slice(0, 16);
      this.tags.set(cs, tag);
    }
    return tag;
  }

  private readonly tags = new WeakMap<ConfiguredStream, string>();

  /**
   * Equal content ⇒ identical chunks and vectors; equal metadata ⇒ identical chunk metadata.
   * `source`: the stored form of the row's source digest (`<sourceTag>:<digest>`), when the source gave one.
   */
  of(extracted: ExtractedText, source?: string): DocumentFingerprint {
    // No metadata_fields (the usual case): every document's metadata is {}, serialized without stableJson's arrays.
    const metadata = extracted.metadata === NO_METADATA || isEmptyPlainObject(extracted.metadata) ? '{}' : stableJson(extracted.metadata);
    // Consecutive documents often share their metadata (none at all, or the same few tags).
    if (metadata !== this.lastMetadata) this.lastMetadataHash = sha256((this.lastMetadata = metadata));
    const content = this.contentHash(extracted.text, extracted.parts);
    return source === undefined
      ? { content, metadata: this.lastMetadataHash, embedder: this.embedder }
      : { content, metadata: this.lastMetadataHash, embedder: this.embedder, source };
  }

  /**
   * sha256 of the UTF-8 of head + JSON.stringify(text) + tail, without building that string: the
   * text is written into one reused buffer with JSON's escapes, then hashed in one call (a Hash
   * object per document costs more). JSON.stringify and the joined string made ~5 KB of garbage per
   * 1 KB document, most of a re-sync's garbage. Given the text's `parts` (text_fields), they are
   * written one by one with the escaped separator between them: the joined text (a rope of the
   * parts) is then never flattened into a copy, which was as much garbage again.
   */
  private contentHash(text: string, parts: readonly string[] | undefined): string {
    const most = this.headLength + 2 + text.length * 6 + this.tail.length * 3; // an escape is at most 6 bytes, UTF-8 3 per UTF-16 unit
    // A very large document is hashed as one string rather than kept as a buffer that size.
    if (most > MAX_BUFFER) return sha256(this.head + JSON.stringify(text) + this.tail);
    if (most > this.bytes.length) {
      this.bytes = Buffer.allocUnsafe(Math.min(most * 2, MAX_BUFFER));
      this.bytes.write(this.head, 0);
      this.words = wordsOf(this.bytes);
    }
    const { bytes, words } = this;
    let n = this.headLength;
    bytes[n++] = QUOTE;
    if (parts && parts.length > 1) {
      for (let i = 0; i < parts.length; i++) {
        // A surrogate at a part's edge has the separator beside it in the text: escaped as lone, as here.
        if (i) n += bytes.write(SEPARATOR_JSON, n);
        n = writeJsonText(bytes, words, n, parts[i]);
      }
    } else n = writeJsonText(bytes, words, n, text);
    bytes[n++] = QUOTE;
    n += bytes.write(this.tail, n);
    // A plain Uint8Array view of the bytes: Buffer's subarray() costs several times more to make
    // (~0.25 µs a document, about a quarter of the hash itself).
    return hash('sha256', new Uint8Array(bytes.buffer, bytes.byteOffset, n), 'hex');
  }

  private lastMetadata: string | undefined;
  private lastMetadataHash = '';
}

/** Besides the processor and embedder, what the source digests' tag covers (Fingerprinter.sourceTag). */
export interface SourceTagInputs {
  /** The source connector's type (the digest's meaning is the source's). */
  sourceType: string;
  /** The connection's whole processing config (metadata_fields too, which the settings leave out). */
  processing?: unknown;
  /** The schema-change policy: it decides which columns are stripped from records. */
  schemaChanges?: string;
}

/** The whole memory of `buf` as 32-bit words (escapeAsciiInPlace reads `buf`'s bytes through it). */
const wordsOf = (buf: Buffer) => new Uint32Array(buf.buffer, 0, buf.buffer.byteLength >>> 2);

/**
 * writeEscaped, faster for the usual text: ASCII. The native encoder writes it; as many bytes as
 * UTF-16 units means every unit is ASCII (anything else, a lone surrogate too, takes 2 or 3 bytes),
 * and then JSON's escapes are made in place in those bytes (escapeAsciiInPlace). Otherwise
 * writeEscaped writes the text again in the same place. (A regular expression per text was ~3x
 * slower for plain text, and most texts have a newline: paragraphs, the text_fields separator.)
 */
function writeJsonText(bytes: Buffer, words: Uint32Array, n: number, text: string): number {
  const written = bytes.write(text, n);
  if (written === text.length) return escapeAsciiInPlace(bytes, words, n, n + written);
  return writeEscaped(bytes, n, text);
}

const HIGH_BITS = 0x80808080 | 0;

/** Per ASCII byte: how many bytes its JSON escape adds (0: written as it is). */
const ESCAPE_EXTRA = new Uint8Array(0x80);
/** Per escaped ASCII byte: its escape's bytes. */
const ESCAPE_BYTES: Uint8Array[] = [];
for (let c = 0; c < 0x80; c++) {
  const escape = JSON.stringify(String.fromCharCode(c)).slice(1, -1);
  if (escape.length > 1) {
    ESCAPE_EXTRA[c] = escape.length - 1;
    ESCAPE_BYTES[c] = Buffer.from(escape, 'latin1');
  }
}
/** Where escapeAsciiInPlace found bytes to escape (reused; grows as needed), how many, and the bytes they add. */
let escapedAt = new Int32Array(64);
let count = 0;
let extra = 0;

/** Notes the bytes to escape in [from, to) of `bytes`. */
function noteEscapes(bytes: Buffer, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const more = ESCAPE_EXTRA[bytes[i]];
    if (more === 0) continue;
    if (count === escapedAt.length) {
      const grown = new Int32Array(2 * count);
      grown.set(escapedAt);
      escapedAt = grown;
    }
    escapedAt[count++] = i;
    extra += more;
  }
}

/**
 * Makes JSON.stringify's escapes in bytes [from, to) (all ASCII) in place, moving what follows each
 * escaped byte back; returns the new end. `bytes` must have room for the escapes (up to 6 bytes per
 * byte). Four bytes at a time where none is escaped, with per-byte tests made on a whole word
 * (in the manner of graphics.stanford.edu/~seander/bithacks.html#ZeroInWord): exact for bytes
 * below 0x80.
 */
export function escapeAsciiInPlace(bytes: Buffer, words: Uint32Array, from: number, to: number): number {
  const offset = bytes.byteOffset;
  count = 0;
  extra = 0;
  // Byte by byte up to a word boundary, then word by word (the bytes of a word with an escape one
  // by one), then the bytes after the last whole word.
  const firstWord = (offset + from + 3) >>> 2;
  const lastWord = (offset + to) >>> 2;
  if (firstWord >= lastWord) noteEscapes(bytes, from, to);
  else {
    noteEscapes(bytes, from, (firstWord << 2) - offset);
    for (let w = firstWord; w < lastWord; w++) {
      const x = words[w] | 0;
      // Per byte b (all below 0x80, so no sum carries into the next byte), the high bit of
      // b + 0x60 is set iff b >= 0x20, and of (b ^ k) + 0x7f iff b !== k: a byte to escape has it
      // clear in one of the three words.
      const quote = x ^ 0x22222222;
      const backslash = x ^ 0x5c5c5c5c;
      const plain = (x + 0x60606060) & (quote + 0x7f7f7f7f) & (backslash + 0x7f7f7f7f);
      if (~plain & HIGH_BITS) {
        const at = (w << 2) - offset;
        noteEscapes(bytes, at, at + 4);
      }
    }
    noteEscapes(bytes, (lastWord << 2) - offset, to);
  }
  if (!count) return to;
  // From the back: each run of plain bytes moves to its place, then the escape before it is written.
  let src = to;
  let dst = to + extra;
  for (let k = count - 1; k >= 0; k--) {
    const at = escapedAt[k];
    const run = src - at - 1;
    if (run) bytes.copyWithin(dst - run, at + 1, src);
    dst -= run;
    const escape = ESCAPE_BYTES[bytes[at]];
    dst -= escape.length;
    for (let j = 0; j < escape.length; j++) bytes[dst + j] = escape[j];
    src = at;
  }
  return to + extra;
}

/** Writes `text` as UTF-8 with JSON.stringify's escapes (no quotes) at `n`; returns the end. */
function writeEscaped(bytes: Buffer, n: number, text: string): number {
  let from = 0;
  NEEDS_ESCAPE.lastIndex = 0;
  // test() rather than exec(): no match object per escape.
  while (NEEDS_ESCAPE.test(text)) {
    const at = NEEDS_ESCAPE.lastIndex - 1;
    const c = text.charCodeAt(at);
    if (c >= 0xd800 && c <= 0xdbff) {
      const low = text.charCodeAt(at + 1); // NaN past the end
      // A surrogate pair is a character like any other; JSON.stringify escapes lone surrogates only.
      if (low >= 0xdc00 && low <= 0xdfff) {
        NEEDS_ESCAPE.lastIndex = at + 2;
        continue;
      }
    }
    if (at > from) n += bytes.write(text.slice(from, at), n);
    const escape = c < 0x20 ? ESCAPES[c] : c === QUOTE ? ESCAPES[0x20] : c === BACKSLASH ? ESCAPES[0x21] : `\\u${c.toString(16)}`;
    n += bytes.write(escape, n);
    from = at + 1;
  }
  if (from < text.length) n += bytes.write(from === 0 ? text : text.slice(from), n);
  return n;
}

/** `{}` or `Object.create(null)` with no members: what stableJson turns into `{}`. */
function isEmptyPlainObject(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const _ in value) return false;
  return true;
}

/** The embedder tag stored with each fingerprint: `provider/model/dimensions`, or `none`. */
export function embedderTag(embedder: Pick<Embedder, 'provider' | 'model' | 'dimensions'> | undefined): string {
  return embedder ? `${embedder.provider}/${embedder.model}/${embedder.dimensions}` : 'none';
}

/**
 * JSON with sorted keys, values as destinations store them (JSON.stringify semantics: a Date is its
 * ISO string, undefined members are left out), bigints as decimal text.
 */
export function stableJson(value: unknown): string {
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function')
    value = (value as { toJSON(): unknown }).toJSON();
  if (typeof value === 'bigint') return JSON.stringify(String(value));
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return 'null';
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  return `{${Object.keys(obj)
    .sort()
    .filter((k) => obj[k] !== undefined && typeof obj[k] !== 'function')
    .map((k) => `${JSON.stringify(k)}:${stableJson(obj[k])}`)
    .join(',')}}`;
}

/** Same chunks and metadata. Not the source digest (`source`): it only says whether the row must be read again. */
export const sameFingerprint = (a: DocumentFingerprint, b: DocumentFingerprint) => a.content === b.content && a.metadata === b.metadata;
