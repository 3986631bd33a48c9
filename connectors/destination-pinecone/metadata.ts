// Pinecone metadata: values must be strings, finite numbers, booleans or lists of strings, and a
// vector's metadata may not exceed 40 KB of JSON. Everything else is converted here, predictably.
import type { DocumentFingerprint } from '../../src/protocol/connector.ts';
import { canonicalJson } from '../../src/protocol/identity.ts';

export type MetadataValue = string | number | boolean | string[];
export type PineconeMetadata = Record<string, MetadataValue>;

/** Pinecone's per-vector metadata limit, in bytes of JSON. */
export const MAX_METADATA_BYTES = 40 * 1024;

/** Chunk 0's fields holding the document's fingerprint (docs/fingerprints.md). */
export const FP_CONTENT = '_sluice_fp_content';
export const FP_METADATA = '_sluice_fp_metadata';
/** Which embedder made the document's vectors (`DocumentFingerprint.embedder`), for `sluice verify`. */
export const FP_EMBEDDER = '_sluice_fp_embedder';
/** Every fingerprint field: written together on chunk 0, last (writer.ts phase F). */
export const FP_FIELDS = [FP_CONTENT, FP_METADATA, FP_EMBEDDER] as const;

/** The fingerprint stored in chunk 0's metadata, if it has one. */
export function storedFingerprint(md: Record<string, unknown>): DocumentFingerprint | undefined {
  const content = md[FP_CONTENT];
  const metadata = md[FP_METADATA];
  // An empty content fingerprint is one cleared before the document's chunks changed (writer.ts flush).
  if (typeof content !== 'string' || !content || typeof metadata !== 'string') return undefined;
  const embedder = md[FP_EMBEDDER];
  return { content, metadata, ...(typeof embedder === 'string' ? { embedder } : {}) };
}

/** Fields sluice owns; a record field with the same name is overridden by them. */
export const RESERVED_FIELDS = [
  'stream',
  'document_id',
  'chunk_index',
  'chunk_count',
  'content',
  'content_truncated',
  'content_skipped',
  FP_CONTENT,
  FP_METADATA,
  FP_EMBEDDER,
] as const;

/**
 * One value as Pinecone accepts it: null/undefined are dropped (Pinecone rejects null), dates
 * become ISO-8601 text, big or non-finite numbers text, objects canonical JSON text, lists lists
 * of strings.
 */
export function toMetadataValue(value: unknown): MetadataValue | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : String(value);
  if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? undefined : value.toISOString();
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  if (Array.isArray(value)) {
    return value.filter((x) => x !== null && x !== undefined).map((x) => (typeof x === 'string' ? x : scalarText(x)));
  }
  return canonicalJson(value);
}

function scalarText(x: unknown): string {
  if (x instanceof Date) return x.toISOString();
  if (typeof x === 'object') return canonicalJson(x);
  return String(x);
}

export function buildMetadata(
  stream: string,
  documentId: string,
  chunkIndex: number,
  content: string,
  fields: Record<string, unknown>,
): PineconeMetadata {
  const md: PineconeMetadata = {};
  for (const [k, v] of Object.entries(fields)) {
    if ((RESERVED_FIELDS as readonly string[]).includes(k)) continue;
    const converted = toMetadataValue(v);
    if (converted !== undefined) md[k] = converted;
  }
  md.stream = stream;
  md.document_id = documentId;
  md.chunk_index = chunkIndex;
  md.content = content;
  return md;
}

export const metadataBytes = (md: PineconeMetadata): number => Buffer.byteLength(JSON.stringify(md), 'utf8');

/**
 * Shortens `content` so the metadata fits in `limit` bytes; marks it `content_truncated: true`.
 * Returns undefined when even empty content does not fit (the other fields are too big).
 */
export function truncateContent(md: PineconeMetadata, limit = MAX_METADATA_BYTES): PineconeMetadata | undefined {
  const content = String(md.content ?? '');
  const base: PineconeMetadata = { ...md, content: '', content_truncated: true };
  const budget = limit - metadataBytes(base);
  if (budget < 0) return undefined;
  const encodedLength = (n: number) => Buffer.byteLength(JSON.stringify(content.slice(0, n)), 'utf8') - 2;
  // Longest prefix whose JSON encoding fits the budget (escapes make bytes ≠ characters).
  let lo = 0;
  let hi = content.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (encodedLength(mid) <= budget) lo = mid;
    else hi = mid - 1;
  }
  // Never cut a surrogate pair in half.
  if (lo > 0 && lo < content.length) {
    const code = content.charCodeAt(lo - 1);
    if (code >= 0xd800 && code <= 0xdbff) lo--;
  }
  return { ...base, content: content.slice(0, lo) };
}

/** The metadata without its content (`content_skipped: true`), or undefined if even that is too big. */
export function withoutContent(md: PineconeMetadata, limit = MAX_METADATA_BYTES): PineconeMetadata | undefined {
  const out: PineconeMetadata = { ...md, content: '', content_skipped: true };
  return metadataBytes(out) <= limit ? out : undefined;
}

/**
 * Float32 values as short decimals that still round-trip to the same float32 (about half the JSON
 * of the doubles they widen to). Fast path: 9 decimal places, kept when it round-trips; otherwise
 * 9 significant digits, which always do.
 */
export function compactValues(embedding: Float32Array): number[] {
  const out = new Array<number>(embedding.length);
  for (let i = 0; i < embedding.length; i++) {
    const v = embedding[i];
    const r = Math.round(v * 1e9) / 1e9;
    out[i] = Math.fround(r) === v ? r : Number(v.toPrecision(9));
  }
  return out;
}
