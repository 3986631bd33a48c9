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

/** One tuple in binary copy format, in a single allocation. */
export function encodeCopyTuple(values: CopyValue[]): Buffer {
  let size = 2;
  const texts: Array<Buffer | undefined> = [];
  for (const v of values) {
    size += 4;
    if (v.kind === 'text' || v.kind === 'jsonb') {
      const b = Buffer.from(v.value, 'utf8');
      texts.push(b);
      size += b.length + (v.kind === 'jsonb' ? 1 : 0);
    } else {
      texts.push(undefined);
      if (v.kind === 'int4') size += 4;
      else if (v.value) size += 4 + 4 * v.value.length;
    }
  }
  const buf = Buffer.allocUnsafe(size);
  buf.writeInt16BE(values.length, 0);
  let o = 2;
  values.forEach((v, i) => {
    switch (v.kind) {
      case 'text': {
        const b = texts[i]!;
        buf.writeInt32BE(b.length, o);
        b.copy(buf, o + 4);
        o += 4 + b.length;
        break;
      }
      case 'jsonb': {
        // jsonb binary = version byte 1 + the JSON text
        const b = texts[i]!;
        buf.writeInt32BE(b.length + 1, o);
        buf[o + 4] = 1;
        b.copy(buf, o + 5);
        o += 5 + b.length;
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
  });
  return buf;
}

/** Streams `tuples` into `COPY <target> FROM STDIN (FORMAT BINARY)` on `client`, in ~256 KiB writes. */
export async function copyBinary(client: pg.Client, copySql: string, tuples: Iterable<CopyValue[]>): Promise<void> {
  const stream = client.query(copyFrom(copySql)) as unknown as Writable;
  function* chunks(): Generator<Buffer> {
    let pending: Buffer[] = [copyHeader()];
    let size = pending[0].length;
    for (const t of tuples) {
      const b = encodeCopyTuple(t);
      pending.push(b);
      size += b.length;
      if (size >= 256 * 1024) {
        yield Buffer.concat(pending);
        pending = [];
        size = 0;
      }
    }
    pending.push(copyTrailer());
    yield Buffer.concat(pending);
  }
  await pipeline(Readable.from(chunks()), stream);
}
