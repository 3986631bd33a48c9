// `COPY … TO STDOUT` read straight off a pg connection's socket: one streaming statement instead of
// a round trip per page, with TCP backpressure (the socket is read only while the caller asks for a
// batch, so a slow caller leaves the rest in the socket and the server waits: memory stays flat).
//
// Why not pg-copy-streams: it slices every row out of the network chunks and joins them again (two
// buffers per row). Here the server sends one CopyData message per row (protocol docs, "COPY
// Operations"), so the framing gives the rows, and each is handed to the sink as offsets into the
// network chunk it arrived in; only a message cut by the network is joined on its own.
import type { Duplex } from 'node:stream';

/**
 * What a CopyOutReader hands the COPY data to and takes batches from. `data` is called once per
 * CopyData message, directly on the network bytes: keep what you need (decode or compare), not
 * `buf` or a subarray of it past the call unless you mean to keep the whole chunk alive.
 */
export interface CopyOutSink<T> {
  /**
   * One CopyData message's payload, buf[start, end) (a row, in COPY's text or binary format).
   * Return true when a batch is ready: the reader stops there, and the rest of the chunk waits
   * for the next pull. An exception fails the read.
   */
  data(buf: Buffer, start: number, end: number): boolean;
  /** After the last row (CopyDone). An exception fails the read, e.g. when a trailer is missing. */
  end(): void;
  /** The next batch to hand out, taken from the sink (undefined: none ready). */
  take(): T | undefined;
}

/** Message codes of the backend protocol that matter here. */
const COPY_DATA = 0x64; // d
const COPY_DONE = 0x63; // c
const ERROR_RESPONSE = 0x45; // E
const COPY_OUT_RESPONSE = 0x48; // H
const NOTICE = 0x4e; // N
const PARAMETER_STATUS = 0x53; // S
const NOTIFICATION = 0x41; // A

/** A message's length field (big-endian, counting itself), at `at`. */
const messageLength = (buf: Buffer, at: number): number => buf[at] * 0x1000000 + ((buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]);

/**
 * What copyOut needs of a pg client (a `pg.Client` or a pool's client): its `query()` taking a
 * Submittable. Written out here so that the kit's type declarations do not need `@types/pg`.
 */
export interface CopyOutClient {
  query(submittable: { submit(connection: CopyOutConnection): Error | undefined }): unknown;
}

/** The part of pg's connection a Submittable is given. */
export interface CopyOutConnection {
  stream: Duplex;
  query(text: string): void;
}

/**
 * `COPY … TO STDOUT` as a pg Submittable (`client.query(reader)`), its rows going to `sink`. While
 * the COPY runs it owns the connection's socket (pg's own parser is detached, as pg-copy-streams
 * does); the message after the copy data (or an ErrorResponse) and everything after it go back to
 * pg, which then completes (or fails) the query as usual. `copyOut()` is the usual way to run one.
 */
export class CopyOutReader<T> {
  private conn?: CopyOutConnection;
  private pgOnData?: (b: Buffer) => void;
  private attached = false;
  /** CopyDone seen: the sink's end() is due. */
  private complete = false;
  private finished = false;
  private error?: Error;
  private waiting?: { resolve: (batch: T | null) => void; reject: (err: Error) => void };
  /** Bytes of a message cut by the network, and how many bytes that message has in all. */
  private parts: Buffer[] = [];
  private partsLen = 0;
  private need = 0;
  /** A chunk the sink stopped in (a batch was ready), and where its next message starts. */
  private rest?: Buffer;
  private restAt = 0;
  private readonly onReadable = () => this.wake();

  constructor(
    private readonly text: string,
    private readonly sink: CopyOutSink<T>,
  ) {}

  /** Called by pg when the query's turn comes; an Error returned fails the query. */
  submit(connection: CopyOutConnection): Error | undefined {
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

  /**
   * The next batch, or null once the copy is complete. Batches ready before a failure are handed
   * out first; then it rejects with the failure (the server's error as pg reports it, or the sink's).
   */
  next(): Promise<T | null> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.wake(); // settles it now when a batch, an error or the end is already there
    });
  }

  /** Stops reading: the COPY keeps running on the connection, which the caller must close. */
  abandon(): void {
    this.finished = true;
    this.release();
  }

  private wake(): void {
    const w = this.waiting;
    if (!w) return;
    let batch: T | undefined;
    try {
      batch = this.error ? this.sink.take() : this.read();
    } catch (err) {
      this.error ??= err as Error;
      this.abandon();
      batch = this.sink.take(); // what came before the failure
    }
    if (batch === undefined && this.error) {
      this.waiting = undefined;
      return w.reject(this.error);
    }
    if (batch !== undefined || this.finished) {
      this.waiting = undefined;
      w.resolve(batch ?? null);
    }
  }

  /** Reads the socket until the sink has a batch (or nothing more is there for now). */
  private read(): T | undefined {
    const sink = this.sink;
    for (;;) {
      const batch = sink.take();
      if (batch !== undefined) return batch;
      if (!this.attached) {
        if (!this.complete) return undefined;
        this.complete = false;
        this.finished = true;
        sink.end(); // may complete a last batch
        continue;
      }
      const rest = this.rest;
      if (rest) {
        this.rest = undefined;
        this.frames(rest, this.restAt);
        continue;
      }
      const chunk = this.conn!.stream.read() as Buffer | null;
      if (chunk === null) return undefined;
      this.feed(chunk);
    }
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
      // A whole message, or only its header (then parts again).
      if (this.frames(message, 0)) {
        if (from < chunk.length) {
          this.rest = chunk;
          this.restAt = from;
        }
        return;
      }
      if (!this.attached) {
        // The copy ended in that message: the rest of the chunk is pg's too.
        if (from < chunk.length) this.pgOnData!(chunk.subarray(from));
        return;
      }
    }
    if (from < chunk.length) this.frames(chunk, from);
  }

  /**
   * Hands the messages of `buf` from `p` on to the sink; keeps an incomplete last one in `parts`.
   * True when the sink has a batch ready (the rest of `buf`, if any, is kept in `rest`).
   */
  private frames(buf: Buffer, p: number): boolean {
    const n = buf.length;
    const sink = this.sink;
    while (p + 5 <= n) {
      const code = buf[p];
      // ErrorResponse: pg parses it and fails the query (handleError).
      if (code === ERROR_RESPONSE) {
        this.detach(buf.subarray(p));
        return false;
      }
      const end = p + 1 + messageLength(buf, p + 1);
      if (end > n) break;
      if (code === COPY_DATA) {
        if (sink.data(buf, p + 5, end)) {
          if (end < n) {
            this.rest = buf;
            this.restAt = end;
          }
          return true;
        }
      } else if (code === COPY_DONE) {
        this.complete = true;
        this.detach(buf.subarray(end));
        return false;
      } else if (code !== COPY_OUT_RESPONSE && code !== NOTICE && code !== PARAMETER_STATUS && code !== NOTIFICATION) {
        // Not a COPY response at all: let pg handle it.
        this.finished = true;
        this.detach(buf.subarray(p));
        return false;
      }
      p = end;
    }
    if (p < n) {
      const rest = buf.subarray(p);
      this.parts = [rest];
      this.partsLen = rest.length;
      this.need = rest.length >= 5 ? 1 + messageLength(rest, 1) : 5;
    }
    return false;
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
    this.rest = undefined;
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

/**
 * Runs `sql` (a `COPY … TO STDOUT` statement) on `client` and yields the sink's batches. The socket
 * is read only while the caller asks for the next batch. Stopped early (break, return, an error),
 * the COPY still runs on the connection, which therefore cannot be reused: close it.
 */
export async function* copyOut<T>(client: CopyOutClient, sql: string, sink: CopyOutSink<T>): AsyncGenerator<T> {
  const copy = new CopyOutReader(sql, sink);
  client.query(copy);
  let done = false;
  try {
    for (;;) {
      const batch = await copy.next();
      if (batch === null) break;
      yield batch;
    }
    done = true;
  } finally {
    if (!done) copy.abandon();
  }
}
