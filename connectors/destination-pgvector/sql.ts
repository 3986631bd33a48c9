// Identifier quoting, table naming and the binary encodings shared by the INSERT and COPY paths.
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';

/** Quotes an identifier so capitals, spaces and quotes survive: my "t" → "my ""t""". */
export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function qualified(schema: string, name: string): string {
  return `${ident(schema)}.${ident(name)}`;
}

/** A string literal (only for DDL where parameters are not allowed). */
export function literal(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

const MAX_IDENT_BYTES = 63;

/**
 * `base` + `suffix`, kept within PostgreSQL's 63-byte identifier limit: a long base is cut and a
 * short hash of it appended, so two long names never truncate to the same identifier.
 */
export function derivedName(base: string, suffix = ''): string {
  const full = base + suffix;
  if (Buffer.byteLength(full) <= MAX_IDENT_BYTES) return full;
  const hash = createHash('sha256').update(base).digest('hex').slice(0, 8);
  let cut = base;
  while (Buffer.byteLength(cut) + 1 + hash.length + Buffer.byteLength(suffix) > MAX_IDENT_BYTES) cut = cut.slice(0, -1);
  return `${cut}_${hash}${suffix}`;
}

/** Default table name of a stream: lower case, [a-z0-9_] only. */
export function defaultTableName(stream: string): string {
  const cleaned = stream
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_')
    .replace(/^_+|_+$/g, '');
  return derivedName(cleaned || 'stream');
}

export function tableNameFor(stream: string, table: string | Record<string, string> | undefined): string {
  if (table === undefined) return defaultTableName(stream);
  if (typeof table === 'string') return derivedName(table.replaceAll('{stream}', stream));
  return table[stream] !== undefined ? derivedName(table[stream]) : defaultTableName(stream);
}

// ---- binary encodings (PostgreSQL "send/recv" formats) -----------------------------------------

const LITTLE_ENDIAN = endianness() === 'LE';

/** pgvector's binary format: int16 dimensions, int16 unused, float4 values, big-endian. */
export function encodeVector(v: Float32Array, out?: Buffer, offset = 0): Buffer {
  const buf = out ?? Buffer.allocUnsafe(4 + 4 * v.length);
  buf.writeInt16BE(v.length, offset);
  buf.writeInt16BE(0, offset + 2);
  // Copy the floats in one go and byte-swap them natively (much faster than writeFloatBE per value).
  const bytes = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  bytes.copy(buf, offset + 4);
  if (LITTLE_ENDIAN) buf.subarray(offset + 4, offset + 4 + v.byteLength).swap32();
  return buf;
}

export function decodeVectorText(text: string): Float32Array {
  const inner = text.trim().replace(/^\[|\]$/g, '');
  return Float32Array.from(inner.length ? inner.split(',').map(Number) : []);
}

/**
 * A one-dimensional binary array of `elementOid` values (each already binary-encoded, or null):
 * lets the INSERT path send a whole batch of vectors as one binary parameter.
 */
export function encodeBinaryArray(elementOid: number, items: Array<Buffer | null>): Buffer {
  let size = 20;
  for (const it of items) size += 4 + (it ? it.length : 0);
  const buf = Buffer.allocUnsafe(size);
  buf.writeInt32BE(1, 0); // dimensions
  buf.writeInt32BE(items.some((i) => i === null) ? 1 : 0, 4); // has nulls
  buf.writeUInt32BE(elementOid, 8);
  buf.writeInt32BE(items.length, 12);
  buf.writeInt32BE(1, 16); // lower bound
  let o = 20;
  for (const it of items) {
    if (!it) {
      buf.writeInt32BE(-1, o);
      o += 4;
      continue;
    }
    buf.writeInt32BE(it.length, o);
    it.copy(buf, o + 4);
    o += 4 + it.length;
  }
  return buf;
}
