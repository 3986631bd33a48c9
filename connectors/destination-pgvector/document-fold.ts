// The listing's `COPY (SELECT document_id, <fingerprint columns> … ORDER BY document_id) TO STDOUT
// (FORMAT binary)` (documents.ts), read straight off the connection's socket (the kit's
// CopyOutReader, which hands over each row's bytes in the network chunk) and folded into documents
// without a string or an object per row.
//
// Why by hand: the listing is on a sync's critical path (the read waits for it), and Node's CPU is
// what limits it. With pg-copy-streams and text rows, every row was sliced out of the socket's
// chunks and joined again, then needed a string per field. Here:
// - binary format: each field is its length and its bytes (text in the client encoding, UTF-8;
//   -1 for NULL), so there is nothing to unescape and nothing to search for;
// - a row of the document before (the same id bytes) only updates the fold: its fields are
//   compared as bytes, no string is made; for a new document, the metadata hash and embedder tag
//   are compared with the previous document's and that same string is reused (in a stream they
//   rarely differ), so only the id, the content hash and the source digest (one per row: nothing to
//   reuse) become strings (latin1 when plain ASCII, which is then their text; UTF-8 otherwise).
import type { CopyOutSink } from '../../src/cdk/postgres-copy.ts';
import type { StoredDocument, StoredSource } from '../../src/protocol/connector.ts';
import { fingerprintOf } from './schema.ts';

/** The binary COPY header's fixed start ("PGCOPY\n\377\r\n\0", flags, extension length). */
const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const HEADER = SIGNATURE.length + 8;

/** Big-endian int32 at `at` (a field length; -1 is NULL). */
const int32 = (buf: Buffer, at: number): number => (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3];

/**
 * What both listings' folds share: the binary COPY framing (the header, rows of `columns` fields,
 * the trailer) and the pages they hand out. A subclass folds each row (`row`) and hands out its
 * last document when the data ends (`last`).
 */
abstract class CopyFold<T> implements CopyOutSink<T[]> {
  /** Complete pages not handed out yet. */
  private readonly pages: T[][] = [];
  private page: T[] = [];
  private headerSeen = false;
  private trailerSeen = false;

  constructor(
    private readonly batch: number,
    private readonly columns: number,
  ) {}

  take(): T[] | undefined {
    return this.pages.shift();
  }

  /**
   * One CopyData message's payload, buf[start, end): a row (the first also carries the header).
   * Never asks the reader to stop inside a chunk: complete pages wait in `pages` until the chunk is
   * done (a chunk holds far fewer rows than a page), which measured ~10 ms less CPU on a cold
   * listing of 50 000 documents than stopping at each page.
   */
  data(buf: Buffer, start: number, end: number): boolean {
    let p = start;
    if (!this.headerSeen) {
      if (end - p < HEADER || SIGNATURE.compare(buf, p, p + SIGNATURE.length) !== 0) throw new Error('not a binary COPY header');
      p += HEADER + int32(buf, p + HEADER - 4); // and its extension area
      this.headerSeen = true;
      if (p === end) return false;
    }
    if (p + 2 > end) throw new Error('COPY row cut short');
    const fields = (buf[p] << 8) | buf[p + 1];
    if (fields === 0xffff) {
      this.trailerSeen = true;
      return false;
    }
    if (fields !== this.columns) throw new Error(`COPY row with ${fields} columns, expected ${this.columns}`);
    this.row(buf, p + 2, end);
    return false;
  }

  /** After the last row: the last document and page (an error when the data ended early). */
  end(): void {
    if (!this.trailerSeen) throw new Error('COPY data ended without its trailer');
    this.last();
    if (this.page.length) this.pages.push(this.page);
    this.page = [];
  }

  /** One row's fields, buf[at, end): each its 4-byte length (-1: NULL) and its bytes. */
  protected abstract row(buf: Buffer, at: number, end: number): void;

  /** After the last row: push() the document being folded, if any. */
  protected abstract last(): void;

  protected push(item: T): void {
    this.page.push(item);
    if (this.page.length === this.batch) {
      this.pages.push(this.page);
      this.page = [];
    }
  }
}

/**
 * Folds the listing's rows (document_id, fingerprint_content, fingerprint_metadata,
 * fingerprint_embedder, fingerprint_source; in document_id order, so a document's rows are
 * adjacent) into StoredDocuments by the rule of documentFingerprintSql: a fingerprint only when
 * every row has one and all are the same; the embedder tag and the source digest each only when
 * every row has the same. (Text equality in
 * PostgreSQL's deterministic collations is byte equality, as here.) Documents come out in pages of
 * `batch`.
 */
export class DocumentFold extends CopyFold<StoredDocument> {
  /** The document being folded (undefined: none yet). */
  private id: string | undefined;
  private chunks = 0;
  private content: string | null = null;
  private metadata: string | null = null;
  private embedder: string | null = null;
  private source: string | null = null;
  private sameFingerprint = false;
  private sameEmbedder = false;
  private sameSource = false;
  /** The previous document's metadata hash and embedder tag, reused when a document has the same. */
  private lastMetadata = '';
  private lastEmbedder = '';
  /**
   * Where the previous row's fingerprint fields were (its buffer, kept only until the next row):
   * a further row of the same document whose fields are byte for byte the previous row's changes
   * nothing in the fold, and one native compare of those bytes costs less than comparing each
   * field with its string (~200 bytes a row).
   */
  private previous: Buffer | undefined;
  private previousAt = 0;
  private previousEnd = 0;

  constructor(batch: number) {
    super(batch, 5);
  }

  protected row(buf: Buffer, at: number, end: number): void {
    const idAt = at + 4;
    const idLen = int32(buf, at);
    const contentAt = idAt + idLen + 4;
    const contentLen = int32(buf, contentAt - 4);
    const metadataAt = contentAt + Math.max(contentLen, 0) + 4;
    const metadataLen = int32(buf, metadataAt - 4);
    const embedderAt = metadataAt + Math.max(metadataLen, 0) + 4;
    const embedderLen = int32(buf, embedderAt - 4);
    const sourceAt = embedderAt + Math.max(embedderLen, 0) + 4;
    const sourceLen = int32(buf, sourceAt - 4);
    if (idLen < 0 || contentLen < -1 || metadataLen < -1 || embedderLen < -1 || sourceLen < -1 || sourceAt + Math.max(sourceLen, 0) !== end)
      throw new Error('malformed COPY row');

    const previous = this.previous;
    this.previous = buf;
    const previousAt = this.previousAt;
    const previousEnd = this.previousEnd;
    this.previousAt = contentAt - 4;
    this.previousEnd = end;
    if (this.id !== undefined && fieldEquals(buf, idAt, idLen, this.id)) {
      // Another chunk of the same document: compare, keep nothing.
      this.chunks++;
      // The same bytes as the previous row (lengths included): the same values, nothing changes.
      if (
        previous === buf &&
        previousEnd - previousAt === end - contentAt + 4 &&
        buf.compare(buf, previousAt, previousEnd, contentAt - 4, end) === 0
      )
        return;
      if (
        this.sameFingerprint &&
        !(fieldIs(buf, contentAt, contentLen, this.content) && fieldIs(buf, metadataAt, metadataLen, this.metadata))
      )
        this.sameFingerprint = false;
      if (this.sameEmbedder && !fieldIs(buf, embedderAt, embedderLen, this.embedder)) this.sameEmbedder = false;
      if (this.sameSource && !fieldIs(buf, sourceAt, sourceLen, this.source)) this.sameSource = false;
      return;
    }
    if (this.id !== undefined) this.finish();
    this.id = fieldString(buf, idAt, idLen);
    this.chunks = 1;
    this.content = contentLen < 0 ? null : fieldString(buf, contentAt, contentLen);
    if (metadataLen < 0) this.metadata = null;
    else if (fieldEquals(buf, metadataAt, metadataLen, this.lastMetadata)) this.metadata = this.lastMetadata;
    else this.metadata = this.lastMetadata = fieldString(buf, metadataAt, metadataLen);
    if (embedderLen < 0) this.embedder = null;
    else if (fieldEquals(buf, embedderAt, embedderLen, this.lastEmbedder)) this.embedder = this.lastEmbedder;
    else this.embedder = this.lastEmbedder = fieldString(buf, embedderAt, embedderLen);
    this.source = sourceLen < 0 ? null : fieldString(buf, sourceAt, sourceLen);
    this.sameFingerprint = this.content !== null && this.metadata !== null;
    this.sameEmbedder = this.embedder !== null;
    this.sameSource = this.source !== null;
  }

  protected last(): void {
    this.previous = undefined;
    if (this.id !== undefined) this.finish();
    this.id = undefined;
  }

  private finish(): void {
    let doc: StoredDocument;
    if (this.sameFingerprint) {
      const fingerprint = fingerprintOf(
        this.content!,
        this.metadata!,
        this.sameEmbedder ? this.embedder : null,
        this.sameSource ? this.source : null,
      );
      doc = { documentId: this.id!, chunks: this.chunks, fingerprint };
    } else doc = { documentId: this.id!, chunks: this.chunks };
    this.push(doc);
  }
}

/** Whether the field buf[at, at+len) (len -1: NULL) is `value`. */
function fieldIs(buf: Buffer, at: number, len: number, value: string | null): boolean {
  if (len < 0 || value === null) return len < 0 && value === null;
  return fieldEquals(buf, at, len, value);
}

/** Whether the UTF-8 bytes buf[at, at+len) are `value`: byte by byte while ASCII, decoded otherwise. */
function fieldEquals(buf: Buffer, at: number, len: number, value: string): boolean {
  // A string has at most as many UTF-16 units as its UTF-8 bytes, and as many when it is ASCII.
  if (len < value.length) return false;
  const ascii = len === value.length;
  for (let i = 0; i < len; i++) {
    const b = buf[at + i];
    if (b > 0x7f) return buf.toString('utf8', at, at + len) === value;
    if (ascii && b !== value.charCodeAt(i)) return false;
  }
  return ascii;
}

/**
 * Folds the light listing's rows (document_id, a hash of fingerprint_content and
 * fingerprint_metadata or NULL when either is, fingerprint_source; in document_id order) into
 * StoredSources (documents.ts `listDocumentSources`): a source only where DocumentFold would give the
 * document a fingerprint with that source, i.e. every row has a fingerprint, all the same (their
 * hashes equal: rows of one document differ only if written outside sluice) and all the same source.
 * Only the id and the source become strings: a third of the full listing's bytes.
 */
export class SourceFold extends CopyFold<StoredSource> {
  private id: string | undefined;
  private source: string | null = null;
  /** The first row's fingerprint hash (4 bytes, big-endian); null when it had none. */
  private hash: number | null = null;
  /** Every row so far has that same fingerprint hash and that same source. */
  private same = false;

  constructor(batch: number) {
    super(batch, 3);
  }

  protected row(buf: Buffer, at: number, end: number): void {
    const idAt = at + 4;
    const idLen = int32(buf, at);
    const hashAt = idAt + idLen + 4;
    const hashLen = int32(buf, hashAt - 4);
    const sourceAt = hashAt + Math.max(hashLen, 0) + 4;
    const sourceLen = int32(buf, sourceAt - 4);
    if (idLen < 0 || (hashLen !== 4 && hashLen !== -1) || sourceLen < -1 || sourceAt + Math.max(sourceLen, 0) !== end)
      throw new Error('malformed COPY row');
    const hash = hashLen < 0 ? null : int32(buf, hashAt);
    if (this.id !== undefined && fieldEquals(buf, idAt, idLen, this.id)) {
      if (this.same && (hash === null || hash !== this.hash || !fieldIs(buf, sourceAt, sourceLen, this.source))) this.same = false;
      return;
    }
    if (this.id !== undefined) this.finish();
    this.id = fieldString(buf, idAt, idLen);
    this.hash = hash;
    this.source = sourceLen < 0 ? null : fieldString(buf, sourceAt, sourceLen);
    this.same = hash !== null && this.source !== null;
  }

  protected last(): void {
    if (this.id !== undefined) this.finish();
    this.id = undefined;
  }

  private finish(): void {
    // '' is no source (fingerprintOf).
    this.push(this.same && this.source ? { documentId: this.id!, source: this.source } : { documentId: this.id! });
  }
}

/**
 * A field's text: latin1 when plain ASCII, else UTF-8. Its own flat string: a slice of one
 * decoding of the chunk would keep the chunk's whole text alive as long as the listing is kept
 * (the sweep keeps ids and content hashes), and costs the GC more than a decoding per field.
 */
function fieldString(buf: Buffer, at: number, len: number): string {
  const end = at + len;
  for (let i = at; i < end; i++) if (buf[i] > 0x7f) return buf.toString('utf8', at, end);
  return buf.toString('latin1', at, end);
}
