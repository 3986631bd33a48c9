// Deterministic identity (invariant 2): document ids come from primary keys, chunk ids from
// (stream, document_id, chunk_index). Same input, same ids, on every run and machine.
import { createHash, hash } from 'node:crypto';
import { SluiceError } from './errors.ts';

/** Serialises one primary-key value the same way everywhere (numbers/bigints as decimal text, dates as ISO-8601). */
export function keyPart(value: unknown): string {
  if (value === null || value === undefined) throw new Error('primary key value is null');
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return value.toString('hex');
  return canonicalJson(value);
}

/** JSON with sorted object keys, so equal values always serialise equally. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(typeof value === 'bigint' ? String(value) : value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  return `{${Object.keys(obj)
    .sort()
    .filter((k) => obj[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`)
    .join(',')}}`;
}

/** Reads a (possibly nested) field path such as ["user", "id"] from a record. */
export function getPath(data: Record<string, unknown>, path: readonly string[]): unknown {
  let v: unknown = data;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  return v;
}

/**
 * A record's document id. One key part: that part as text. Composite keys: a JSON array of the
 * parts' texts, which is unambiguous and stable.
 */
export function documentId(data: Record<string, unknown>, primaryKey: readonly (readonly string[])[], where = 'record'): string {
  if (!primaryKey.length) throw new SluiceError(`${where} has no primary key to identify it`, { kind: 'config' });
  // One key column (the usual case): no array of parts per record.
  if (primaryKey.length === 1) return keyPartAt(data, primaryKey[0], where);
  return JSON.stringify(primaryKey.map((path) => keyPartAt(data, path, where)));
}

function keyPartAt(data: Record<string, unknown>, path: readonly string[], where: string): string {
  const v = getPath(data, path);
  if (v === null || v === undefined) {
    throw new SluiceError(`${where} has no value for primary key field "${path.join('.')}"`, {
      kind: 'source',
      hint: 'check primary_key in the pipeline file, or the source data',
    });
  }
  return keyPart(v);
}

/** The chunk id used by destinations that accept text ids (pgvector, jsonl, Pinecone). */
export function chunkId(documentId: string, chunkIndex: number): string {
  return `${documentId}#${chunkIndex}`;
}

const SLUICE_NAMESPACE = 'c0a8e3b4-5d1f-4e6a-9b7c-2f3d4e5a6b7c';
/** UUIDv5 (RFC 4122, SHA-1 name-based) of (stream, document id, chunk index): Qdrant's point id. */
export function chunkUuid(stream: string, documentId: string, chunkIndex: number): string {
  return uuidV5(JSON.stringify([stream, documentId, chunkIndex]), SLUICE_NAMESPACE);
}

export function uuidV5(name: string, namespace: string): string {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const hash = createHash('sha1').update(ns).update(name, 'utf8').digest();
  hash[6] = (hash[6] & 0x0f) | 0x50;
  hash[8] = (hash[8] & 0x3f) | 0x80;
  const h = hash.subarray(0, 16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

export function sha256(text: string): string {
  return hash('sha256', text, 'hex'); // one call, no Hash object: most of the cost for short texts
}
