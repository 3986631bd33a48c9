// `Destination.documents()` for Pinecone: every document of a namespace with its fingerprint and
// chunk count, read-only. Ids are listed page by page (Pinecone lists at most 100 per request); the
// chunk-0 ids (`<document_id>#0`) among them are fetched in batches of up to 1,000 (fetchGroups) for
// their `chunk_count` and fingerprint. Memory stays at one batch.
import type { StoredDocument } from '../../src/protocol/connector.ts';
import { storedFingerprint } from './metadata.ts';
import { MAX_IDS_PER_FETCH, fetchGroups, type PineconeStore } from './store.ts';

export async function* listDocuments(store: PineconeStore, namespace: string): AsyncIterable<StoredDocument> {
  let heads: string[] = [];
  async function* drain(): AsyncIterable<StoredDocument> {
    const batch = heads;
    heads = [];
    for (const group of fetchGroups(batch)) {
      const found = await store.fetchMetadata(namespace, group);
      for (const id of group) {
        const md = found.get(id);
        if (!md) continue; // listed, then deleted before the fetch
        const documentId = id.slice(0, -2);
        const chunks = typeof md.chunk_count === 'number' ? md.chunk_count : await countByListing(store, namespace, documentId);
        const fingerprint = storedFingerprint(md);
        yield { documentId, chunks, ...(fingerprint ? { fingerprint } : {}) };
      }
    }
  }
  for await (const page of store.listIds(namespace, '')) {
    for (const id of page) if (id.endsWith('#0')) heads.push(id);
    if (heads.length >= MAX_IDS_PER_FETCH) yield* drain();
  }
  yield* drain();
}

/** Chunks of a document written without a chunk_count (not by sluice): one more than its highest listed index. */
async function countByListing(store: PineconeStore, namespace: string, documentId: string): Promise<number> {
  const prefix = `${documentId}#`;
  let count = 0;
  for await (const page of store.listIds(namespace, prefix))
    for (const id of page) {
      const suffix = id.slice(prefix.length);
      if (/^\d+$/.test(suffix)) count = Math.max(count, Number(suffix) + 1);
    }
  return count;
}
