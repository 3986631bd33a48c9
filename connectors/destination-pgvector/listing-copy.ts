// The listing's `COPY (SELECT document_id, <fingerprint columns> … ORDER BY document_id) TO STDOUT
// (FORMAT binary)` (documents.ts), read straight off the connection's socket and folded into
// documents without a string or an object per row.
//
// Why by hand: the listing is on a sync's critical path (the read waits for it), and Node's CPU is
// what limits it. pg-copy-streams slices every row out of the socket's chunks and joins them again
// (two buffers per row), then the text rows needed a string per field. Here:
// - the server sends one CopyData message per row (protocol docs, "COPY Operations"), so the
//   framing gives the rows; a message cut by the network is joined on its own (a few hundred bytes);
// - binary format: each field is its length and its bytes (text in the client encoding, UTF-8;
//   -1 for NULL), so there is nothing to unescape and nothing to search for;
// - a row of the document before (the same id bytes) only updates the fold: its fields are
//   compared as bytes, no string is made; for a new document, the metadata hash and embedder tag
//   are compared with the previous document's and that same string is reused (in a stream they
//   rarely differ), so only the id and the content hash become strings (latin1 when plain ASCII,
//   which is then their text; UTF-8 otherwise).
import type { Duplex } from 'node:stream';
import type { DocumentFingerprint, StoredDocument } from '../../src/protocol/connector.ts';

/** Message codes of the backend protocol that matter here. */
const COPY_DATA = 0x64; // d
const COPY_DONE = 0x63; // c
const ERROR_RESPONSE = 0x45; // E
const COPY_OUT_RESPONSE = 0x48; // H
const NOTICE = 0x4e; // N
const PARAMETER_STATUS = 0x53; // S
const NOTIFICATION = 0x41; // A

/** The binary COPY header's fixed start ("PGCOPY\n\377\r\n\0", flags, extension length). */
const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const HEADER = SIGNATURE.length + 8;

/** Big-endian int32 at `at` (a message length or a field length; -1 is NULL). */
const int32 = (buf: Buffer, at: number): number => (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3];

/**
 * Folds the listing's rows (document_id, fingerprint_content, fingerprint_metadata,
 * fingerprint_embedder; in document_id order, so a document's rows are adjacent) into
 * StoredDocuments by the rule of documentFingerprintSql: a fingerprint only when every row has one
 * and all are the same; the embedder tag only when every row has the same. (Text equality in
 * PostgreSQL's deterministic collations is byte equality, as here.) Documents come out in pages of
 * `batch`.
 */
export class DocumentFold {
  /** Complete pages not handed out yet. */
  readonly pages: StoredDocument[][] = [];
  private page: StoredDocument[] = [];
  /** The document being folded (undefined: none yet). */
  private id: string | undefined;
  private chunks = 0;
  private content: string | null = null;
  private metadata: string | null = null;
  private embedder: string | null = null;
  private sameFingerprint = false;
  private sameEmbedder = false;
  /** The previous document's metadata hash and embedder tag, reused when a document has the same. */
  private lastMetadata = '';
  private lastEmbedder = '';
  private headerSeen = false;
  private trailerSeen = false;

  constructor(private readonly batch: number) {}

  /** One CopyData message's payload, buf[start, end): a row (the first also carries the header). */
  row(buf: Buffer, start: number, end: number): void {
    let p = start;
    if (!this.headerSeen) {
      if (end - p < HEADER || SIGNATURE.compare(buf, p, p + SIGNATURE.length) !== 0) throw new Error('not a binary COPY header');
      p += HEADER + int32(buf, p + HEADER - 4); // and its extension area
      this.headerSeen = true;
      if (p === end) return;
    }
    if (p + 2 > end) throw new Error('COPY row cut short');
    const fields = (buf[p] << 8) | buf[p + 1];
    if (fields === 0xffff) {
      this.trailerSeen = true;
      return;
    }
    if (fields !== 4) throw new Error(`COPY row with ${fields} columns, expected 4`);
    const idAt = p + 6;
    const idLen = int32(buf, p + 2);
    const contentAt = idAt + idLen + 4;
    const contentLen = int32(buf, contentAt - 4);
    const metadataAt = contentAt + Math.max(contentLen, 0) + 4;
    const metadataLen = int32(buf, metadataAt - 4);
    const embedderAt = metadataAt + Math.max(metadataLen, 0) + 4;
    const embedderLen = int32(buf, embedderAt - 4);
    if (idLen < 0 || contentLen < -1 || metadataLen < -1 || embedderLen < -1 || embedderAt + Math.max(embedderLen, 0) !== end)
      throw new Error('malformed COPY row');

    if (this.id !== undefined && fieldEquals(buf, idAt, idLen, this.id)) {
      // Another chunk of the same document: compare, keep nothing.
      this.chunks++;
      if (
        this.sameFingerprint &&
        !(fieldIs(buf, contentAt, contentLen, this.content) && fieldIs(buf, metadataAt, metadataLen, this.metadata))
      )
        this.sameFingerprint = false;
      if (this.sameEmbedder && !fieldIs(buf, embedderAt, embedderLen, this.embedder)) this.sameEmbedder = false;
      return;
    }
    if (this.id !== undefined) this.finish();
    this.id = this.string(buf, idAt, idLen);
    this.chunks = 1;
    this.content = contentLen < 0 ? null : this.string(buf, contentAt, contentLen);
    if (metadataLen < 0) this.metadata = null;
    else if (fieldEquals(buf, metadataAt, metadataLen, this.lastMetadata)) this.metadata = this.lastMetadata;
    else this.metadata = this.lastMetadata = this.string(buf, metadataAt, metadataLen);
    if (embedderLen < 0) this.embedder = null;
    else if (fieldEquals(buf, embedderAt, embedderLen, this.lastEmbedder)) this.embedder = this.lastEmbedder;
    else this.embedder = this.lastEmbedder = this.string(buf, embedderAt, embedderLen);
    this.sameFingerprint = this.content !== null && this.metadata !== null;
    this.sameEmbedder = this.embedder !== null;
  }

  /** After the last row: the last document and page (an error when the data ended early). */
  end(): void {
    if (!this.trailerSeen) throw new Error('COPY data ended without its trailer');
    if (this.id !== undefined) this.finish();
    this.id = undefined;
    if (this.page.length) this.pages.push(this.page);
    this.page = [];
  }

  private finish(): void {
    let doc: StoredDocument;
    if (this.sameFingerprint) {
      // Two literal shapes rather than a spread (as storedFingerprint): once per listed document.
      const fingerprint: DocumentFingerprint =
        this.sameEmbedder && this.embedder
          ? { content: this.content!, metadata: this.metadata!, embedder: this.embedder }
          : { content: this.content!, metadata: this.metadata! };
      doc = { documentId: this.id!, chunks: this.chunks, fingerprint };
    } else doc = { documentId: this.id!, chunks: this.chunks };
    this.page.push(doc);
    if (this.page.length === this.batch) {
      this.pages.push(this.page);
      this.page = [];
    }
  }

  /**
   * A field's text: latin1 when plain ASCII, else UTF-8. Its own flat string: a slice of one
   * decoding of the chunk would keep the chunk's whole text alive as long as the listing is kept
   * (the sweep keeps ids and content hashes), and costs the GC more than a decoding per field.
   */
  private string(buf: Buffer, at: number, len: number): string {
    const end = at + len;
    for (let i = at; i < end; i++) if (buf[i] > 0x7f) return buf.toString('utf8', at, end);
    return buf.toString('latin1', at, end);
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

interface PgConnection {
  stream: Duplex;
  query(text: string): void;
}

/**
 * The COPY as a pg Submittable. While it runs it owns the connection's socket (pg's own parser is
 * detached, as pg-copy-streams does); the message after the copy data (or an ErrorResponse) and
 * everything after it go back to pg, which completes (or fails) the query as usual. The socket is
 * read only while a page is asked for (next()), so a slow caller leaves the rest in the socket and
 * the server waits: memory stays bounded.
 */
export class ListingCopy {
  private conn?: PgConnection;
  private pgOnData?: (b: Buffer) => void;
  private attached = false;
  private finished = false;
  private error?: Error;
  private waiting?: { resolve: (page: StoredDocument[] | null) => void; reject: (err: Error) => void };
  /** Bytes of a message cut by the network, and how many bytes that message has in all. */
  private parts: Buffer[] = [];
  private partsLen = 0;
  private need = 0;
  private readonly fold: DocumentFold;
  private readonly onReadable = () => this.wake();

  constructor(
    private readonly text: string,
    batch: number,
  ) {
    this.fold = new DocumentFold(batch);
  }

  /** Called by pg when the query's turn comes; an Error returned fails the query. */
  submit(connection: PgConnection): Error | undefined {
    this.conn = connection;
    const stream = connection.stream;
    const listeners = stream.listeners('data');
    if (listeners.length !== 1) return new Error(`COPY needs the connection's own data listener (found ${listeners.length})`);
    this.pgOnData = listeners[0] as (b: Buffer) => void;
    stream.removeListener('data', this.pgOnData);
    stream.pause();
    stream.on('readable', this.onReadable);
    this.attached = true;
    connection.query(this.text);
    this.wake();
    return undefined;
  }

  /** The next page of documents, or null once the listing is complete. */
  next(): Promise<StoredDocument[] | null> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.wake(); // settles it now when a page, an error or the end is already there
    });
  }

  /** Stops reading: the COPY keeps running on the connection, which the caller must close. */
  abandon(): void {
    this.finished = true;
    this.release();
  }

  private feed(chunk: Buffer): void {
    let from = 0;
    // Finish the message begun in earlier chunks, copying only its own bytes.
    while (this.partsLen) {
      const take = Math.min(this.need - this.partsLen, chunk.length - from);
      this.parts.push(chunk.subarray(from, from + take));
      this.partsLen += take;
      from += take;
      if (this.partsLen < this.need) return;
      const message = Buffer.concat(this.parts, this.partsLen);
      this.parts = [];
      this.partsLen = 0;
      this.frames(message, 0); // a whole message, or only its header (then parts again)
      if (!this.attached) {
        // The copy ended in that message: the rest of the chunk is pg's too.
        if (from < chunk.length) this.pgOnData!(chunk.subarray(from));
        return;
      }
    }
    if (from < chunk.length) this.frames(chunk, from);
  }

  private wake(): void {
    const w = this.waiting;
    if (!w) return;
    try {
      const stream = this.conn?.stream;
      while (!this.error && !this.fold.pages.length && this.attached) {
        const chunk = stream!.read() as Buffer | null;
        if (chunk === null) break;
        this.feed(chunk);
      }
    } catch (err) {
      this.error = err as Error;
      this.abandon();
    }
    if (this.error) {
      this.waiting = undefined;
      return w.reject(this.error);
    }
    const page = this.fold.pages.shift();
    if (page || this.finished) {
      this.waiting = undefined;
      w.resolve(page ?? null);
    }
  }

  /** Parses the messages of `buf` from `p` on; keeps an incomplete last one in `parts`. */
  private frames(buf: Buffer, p: number): void {
    const n = buf.length;
    while (p + 5 <= n) {
      const code = buf[p];
      // ErrorResponse: pg parses it and fails the query (handleError).
      if (code === ERROR_RESPONSE) return this.detach(buf.subarray(p));
      const end = p + 1 + int32(buf, p + 1);
      if (end > n) break;
      if (code === COPY_DATA) this.fold.row(buf, p + 5, end);
      else if (code === COPY_DONE) {
        this.fold.end();
        this.finished = true;
        return this.detach(buf.subarray(end));
      } else if (code !== COPY_OUT_RESPONSE && code !== NOTICE && code !== PARAMETER_STATUS && code !== NOTIFICATION) {
        // Not a COPY response at all: let pg handle it.
        this.finished = true;
        return this.detach(buf.subarray(p));
      }
      p = end;
    }
    if (p < n) {
      const rest = buf.subarray(p);
      this.parts = [rest];
      this.partsLen = rest.length;
      this.need = rest.length >= 5 ? 1 + int32(rest, 1) : 5;
    }
  }

  /** Gives the socket back to pg, starting with `rest` (the bytes after the copy data). */
  private detach(rest: Buffer): void {
    if (!this.attached) return;
    this.release();
    const stream = this.conn!.stream;
    stream.on('data', this.pgOnData!);
    if (rest.length) this.pgOnData!(rest);
    // pg's data handler may pause the stream; resume once it has returned.
    process.nextTick(() => stream.resume());
  }

  private release(): void {
    if (this.attached) {
      this.attached = false;
      this.conn!.stream.removeListener('readable', this.onReadable);
    }
    this.parts = [];
    this.partsLen = 0;
  }

  handleError(err: Error): void {
    this.error ??= err;
    this.abandon();
    this.wake();
  }
  handleCommandComplete(): void {}
  handleReadyForQuery(): void {}
  handleCopyData(): void {}
  handleEmptyQuery(): void {}
}
