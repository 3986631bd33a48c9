// `Destination.scanChunks` for Pinecone (`sluice verify`): lists the ids of the stream's current
// namespace generation page by page (or by `<document_id>#` prefix) and fetches their metadata,
// read-only. The index's dimension is fixed, so sizes are not fetched; texts Pinecone kept only
// truncated (metadata limit) are not compared.
import type { ConnectorContext, ScanOptions, ScannedChunk } from '../../src/protocol/connector.ts';
import type { PineconeConfig } from './config.ts';
import { PineconeStore } from './store.ts';
import { currentNamespace, logicalNamespace } from './writer.ts';
import { storedFingerprint } from './metadata.ts'; // where the writer keeps the fingerprint

export async function* scanChunks(
  config: PineconeConfig,
  ctx: ConnectorContext,
  stream: string,
  options: ScanOptions = {},
): AsyncGenerator<ScannedChunk> {
  const store = await PineconeStore.connect(config, ctx);
  const logical = logicalNamespace(config.namespace, stream);
  const namespace = currentNamespace(logical, (await store.readPointers([logical])).get(logical));
  const wanted = options.documentIds ? new Set(options.documentIds) : undefined;
  const prefixes = options.documentIds ? options.documentIds.map((id) => `${id}#`) : [''];
  let left = options.limit ?? Infinity;
  for (const prefix of prefixes) {
    for await (const ids of store.listIds(namespace, prefix)) {
      const metadata = await store.fetchMetadata(namespace, ids);
      for (const id of ids) {
        const md = metadata.get(id);
        if (!md) continue; // deleted between list and fetch
        const documentId = typeof md.document_id === 'string' ? md.document_id : id.slice(0, id.lastIndexOf('#'));
        // A prefix also lists documents whose id starts with this one's followed by '#'.
        if (wanted && !wanted.has(documentId)) continue;
        if (left-- <= 0) return;
        const chunkIndex = typeof md.chunk_index === 'number' ? md.chunk_index : Number(id.slice(id.lastIndexOf('#') + 1));
        const whole = typeof md.content === 'string' && !md.content_truncated && !md.content_skipped;
        const fingerprint = storedFingerprint(md);
        yield {
          id,
          documentId,
          chunkIndex,
          ...(whole ? { content: md.content as string } : {}),
          ...(fingerprint ? { fingerprint } : {}),
        };
      }
    }
  }
}
