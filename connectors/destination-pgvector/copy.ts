// COPY ... FROM STDIN (FORMAT BINARY): the fast path on a real PostgreSQL. Rows are encoded in
// PostgreSQL's binary copy format and streamed in bounded chunks.
import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type pg from 'pg';
import { encodeVector } from './sql.ts';

const require = createRequire(import.meta.url);
const { from: copyFrom } = require('pg-copy-streams') as { from: (sql: string) => Writable & pg.Submittable };

export type CopyValue =
  | { kind: 'text'; value: string }
  /** text that may be NULL (undefined) */
  | { kind: 'textOrNull'; value: string | undefined }
  | { kind: 'int4'; value: number }
  | { kind: 'jsonb'; value: string }
  | { kind: 'vector'; value: Float32Array | undefined };

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

export function copyHeader(): Buffer {
  const b = Buffer.alloc(SIGNATURE.length + 8);
  SIGNATURE.copy(b, 0);
  // flags (no OIDs) and header extension length, both 0
  return b;
}

export function copyTrailer(): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(-1, 0);
  return b;
}

/**
 * Bytes a tuple takes: exactly, or (`exact` false) at most, counting UTF-8 as 3 bytes per UTF-16
 * unit, which needs no scan of the text.
 */
function tupleBytes(values: CopyValue[], exact: boolean): number {
  let size = 2;
  for (const v of values) {
    size += 4;
    if (v.kind === 'text' || v.kind === 'jsonb') {
      size += (v.kind === 'jsonb' ? 1 : 0) + (exact ? Buffer.byteLength(v.value, 'utf8') : 3 * v.value.length);
    } else if (v.kind === 'textOrNull') {
      if (v.value !== undefined) size += exact ? Buffer.byteLength(v.value, 'utf8') : 3 * v.value.length;
    } else if (v.kind === 'int4') size += 4;
    else if (v.value) size += 4 + 4 * v.value.length;
  }
  return size;
}

/** Writes one tuple at `o` (the caller made room for it) and returns the offset after it. */
function writeTuple(values: CopyValue[], buf: Buffer, o: number): number {
  buf.writeInt16BE(values.length, o);
  o += 2;
  for (const v of values) {
    switch (v.kind) {
      case 'text': {
        const n = buf.write(v.value, o + 4, 'utf8');
        buf.writeInt32BE(n, o);
        o += 4 + n;
        break;
      }
      case 'textOrNull': {
        if (v.value === undefined) {
          buf.writeInt32BE(-1, o);
          o += 4;
          break;
        }
        const n = buf.write(v.value, o + 4, 'utf8');
        buf.writeInt32BE(n, o);
        o += 4 + n;
        break;
      }
      case 'jsonb': {
        // jsonb binary = version byte 1 + the JSON text
        buf[o + 4] = 1;
        const n = buf.write(v.value, o + 5, 'utf8');
        buf.writeInt32BE(n + 1, o);
        o += 5 + n;
        break;
      }
      case 'int4':
        buf.writeInt32BE(4, o);
        buf.writeInt32BE(v.value, o + 4);
        o += 8;
        break;
      case 'vector':
        if (!v.value) {
          buf.writeInt32BE(-1, o);
          o += 4;
        } else {
          buf.writeInt32BE(4 + 4 * v.value.length, o);
          encodeVector(v.value, buf, o + 4);
          o += 8 + 4 * v.value.length;
        }
        break;
    }
  }
  return o;
}

/** One tuple in binary copy format, in a single allocation. */
export function encodeCopyTuple(values: CopyValue[]): Buffer {
  const buf = Buffer.allocUnsafe(tupleBytes(values, true));
  writeTuple(values, buf, 0);
  return buf;
}

const WRITE_BYTES = 256 * 1024;

/**
 * Streams `tuples` into `COPY <target> FROM STDIN (FORMAT BINARY)` on `client`. Tuples are encoded
 * straight into ~256 KiB write buffers (all the same size, so the allocator reuses them) instead
 * of one buffer per tuple joined afterwards.
 */
export async function copyBinary(client: pg.Client, copySql: string, tuples: Iterable<CopyValue[]>): Promise<void> {
  const stream = client.query(copyFrom(copySql)) as unknown as Writable;
  function* chunks(): Generator<Buffer> {
    let buf = Buffer.allocUnsafe(WRITE_BYTES);
    let o = copyHeader().copy(buf, 0);
    const room = (need: number) => o + need <= buf.length;
    for (const t of tuples) {
      if (!room(tupleBytes(t, false))) {
        const need = tupleBytes(t, true);
        if (!room(need)) {
          if (o > 0) yield buf.subarray(0, o);
          buf = Buffer.allocUnsafe(Math.max(WRITE_BYTES, need));
          o = 0;
        }
      }
      o = writeTuple(t, buf, o);
    }
    if (!room(2)) {
      yield buf.subarray(0, o);
      buf = Buffer.allocUnsafe(2);
      o = 0;
    }
    o += copyTrailer().copy(buf, o);
    yield buf.subarray(0, o);
  }
  await pipeline(Readable.from(chunks()), stream);
}
