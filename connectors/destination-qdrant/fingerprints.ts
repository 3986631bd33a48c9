// Document fingerprints in Qdrant (docs/fingerprints.md): every point of a document carries the
// fingerprint of what produced it and the document's chunk count in its payload, so they live and
// die with the data. Look-ups read chunk 0 by its point id (UUIDv5 of stream, document, 0): one
// retrieve request per batch, no payload index needed.
import type { DocumentFingerprint, StoredDocument } from '../../src/protocol/connector.ts';
import { chunkUuid } from '../../src/protocol/identity.ts';
import type { Qdrant } from './client.ts';

export const FP_CONTENT = '_sluice_fp_content';
export const FP_METADATA = '_sluice_fp_metadata';
/** Which embedder made the document's vectors (`DocumentFingerprint.embedder`), so verify can name another model's vectors. */
export const FP_EMBEDDER = '_sluice_fp_embedder';
export const CHUNK_COUNT = '_sluice_chunk_count';
export const FINGERPRINT_PAYLOAD_KEYS = [FP_CONTENT, FP_METADATA, FP_EMBEDDER, CHUNK_COUNT] as const;
/** The fields whose presence on chunk 0 says "this document is complete and current" (written last, cleared first). */
export const FINGERPRINT_FIELDS = [FP_CONTENT, FP_METADATA, FP_EMBEDDER] as const;

export function fingerprintOf(payload: Record<string, unknown> | null | undefined): DocumentFingerprint | undefined {
  const content = payload?.[FP_CONTENT];
  const metadata = payload?.[FP_METADATA];
  const embedder = payload?.[FP_EMBEDDER];
  if (typeof content !== 'string' || typeof metadata !== 'string') return undefined;
  return { content, metadata, ...(typeof embedder === 'string' ? { embedder } : {}) };
}

/** Stored fingerprints of documents of `stream` in `collection`: one retrieve of their chunk-0 points. */
export async function readFingerprints(
  q: Qdrant,
  collection: string,
  stream: string,
  documentIds: string[],
): Promise<Map<string, DocumentFingerprint>> {
  const out = new Map<string, DocumentFingerprint>();
  if (!documentIds.length) return out;
  const byPoint = new Map(documentIds.map((d) => [chunkUuid(stream, d, 0), d]));
  const records = await q.call(`read of ${documentIds.length} document fingerprints in ${collection}`, () =>
    q.client.retrieve(collection, { ids: [...byPoint.keys()], with_payload: [...FINGERPRINT_FIELDS], with_vector: false }),
  );
  for (const r of records) {
    const documentId = byPoint.get(String(r.id).toLowerCase());
    const fp = fingerprintOf(r.payload);
    if (documentId !== undefined && fp) out.set(documentId, fp);
  }
  return out;
}

/** Live documents of a stream: its chunk-0 points. */
export async function countDocuments(q: Qdrant, collection: string, stream: string): Promise<number> {
  const { count } = await q.call(`count of documents of stream ${stream} in ${collection}`, () =>
    q.client.count(collection, {
      filter: {
        must: [
          { key: 'stream', match: { value: stream } },
          { key: 'chunk_index', match: { value: 0 } },
        ],
      },
      exact: true,
    }),
  );
  return count;
}

/**
 * Every document of a stream with its fingerprint and chunk count, page by page (chunk-0 points,
 * payload fields only, no vectors). A document written before fingerprints were kept has no chunk
 * count on its points: its chunks are counted (one request each, only for such documents).
 */
export async function* listDocuments(q: Qdrant, collection: string, stream: string, pageSize: number): AsyncIterable<StoredDocument> {
  let offset: string | number | null | undefined = undefined;
  do {
    const page = await q.call(`list of documents of stream ${stream} in ${collection}`, () =>
      q.client.scroll(collection, {
        filter: {
          must: [
            { key: 'stream', match: { value: stream } },
            { key: 'chunk_index', match: { value: 0 } },
          ],
        },
        limit: pageSize,
        offset: offset ?? undefined,
        with_payload: ['document_id', ...FINGERPRINT_PAYLOAD_KEYS],
        with_vector: false,
      }),
    );
    for (const p of page.points) {
      const payload = (p.payload ?? {}) as Record<string, unknown>;
      const documentId = String(payload.document_id ?? '');
      let chunks = payload[CHUNK_COUNT];
      if (typeof chunks !== 'number') {
        const filter = {
          must: [
            { key: 'stream', match: { value: stream } },
            { key: 'document_id', match: { value: documentId } },
          ],
        };
        chunks = (await q.call(`count of chunks in ${collection}`, () => q.client.count(collection, { filter, exact: true }))).count;
      }
      const fingerprint = fingerprintOf(payload);
      yield { documentId, chunks: chunks as number, ...(fingerprint ? { fingerprint } : {}) };
    }
    offset = page.next_page_offset as string | number | null | undefined;
  } while (offset !== undefined && offset !== null);
}
