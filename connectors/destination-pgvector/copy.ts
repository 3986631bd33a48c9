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

export type CopyValue = { kind: 'text'; value: string } | { kind: 'int4'; value: number } | { kind: 'jsonb'; value: string } | { kind: 'vector'; value: Float32Array | undefined };

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

/** One tuple in binary copy format. */
export function encodeCopyTuple(values: CopyValue[]): Buffer {
  const parts: Buffer[] = [];
  const count = Buffer.allocUnsafe(2);
  count.writeInt16BE(values.length, 0);
  parts.push(count);
  for (const v of values) {
    let data: Buffer | null;
    switch (v.kind) {
      case 'text':
        data = Buffer.from(v.value, 'utf8');
        break;
      case 'int4':
        data = Buffer.allocUnsafe(4);
        data.writeInt32BE(v.value, 0);
        break;
      case 'jsonb': {
        // jsonb binary = version byte 1 + the JSON text
        const text = Buffer.from(v.value, 'utf8');
        data = Buffer.allocUnsafe(text.length + 1);
        data[0] = 1;
        text.copy(data, 1);
        break;
      }
      case 'vector':
        data = v.value ? encodeVector(v.value) : null;
        break;
    }
    const len = Buffer.allocUnsafe(4);
    len.writeInt32BE(data ? data.length : -1, 0);
    parts.push(len);
    if (data) parts.push(data);
  }
  return Buffer.concat(parts);
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
