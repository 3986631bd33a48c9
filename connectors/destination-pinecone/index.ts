// Pinecone destination: vectors `<document_id>#<chunk_index>` in one namespace per stream, limits
// enforced before sending, atomic overwrite through namespace generations. See docs/pinecone.md.
import type { CheckResult, ConnectorContext, Destination, SearchHit } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { PineconeConfigSchema, type PineconeConfig } from './config.ts';
import { FP_CONTENT, FP_EMBEDDER, FP_METADATA, compactValues } from './metadata.ts';
import { listDocuments } from './documents.ts';
import { POINTER_NAMESPACE, PineconeStore, pointerId } from './store.ts';
import { scanChunks } from './scan.ts';
import { hasPrevious, rollback } from './reindex.ts';
import { PineconeWriter, currentNamespace, generationNamespace, logicalNamespace } from './writer.ts';

export { PineconeConfigSchema, type PineconeConfig } from './config.ts';

const destination: Destination<PineconeConfig> = {
  kind: 'destination',
  spec: {
    name: 'pinecone',
    title: 'Pinecone',
    description: 'Writes chunks and their embeddings to a Pinecone serverless index, one namespace per stream.',
    documentationUrl: 'docs/pinecone.md',
    config: PineconeConfigSchema,
  },
  capabilities: { destinationSyncModes: ['append', 'append_dedup', 'overwrite'], vectors: true },

  async check(config, ctx, options = {}): Promise<CheckResult> {
    try {
      const store = await PineconeStore.connect(config, ctx);
      const { name, dimension, metric } = store.index;
      const warnings: string[] = [];
      if (options.dimensions !== undefined && dimension !== undefined && dimension !== options.dimensions) {
        return {
          ok: false,
          message: `index ${name ?? config.index} has ${dimension} dimensions, but the embedding model${options.embedderName ? ` (${options.embedderName})` : ''} gives ${options.dimensions}`,
        };
      }
      if (config.metric && metric && metric !== config.metric) {
        return { ok: false, message: `index ${name ?? config.index} uses metric ${metric}, but the config expects ${config.metric}` };
      }
      if (!config.namespace.includes('{stream}'))
        warnings.push(`namespace "${config.namespace}" has no {stream}: only one stream can write to it`);
      return {
        ok: true,
        message: `Pinecone index ${name ?? config.index}: dimension ${dimension}${metric ? `, metric ${metric}` : ''}`,
        ...(warnings.length ? { warnings } : {}),
      };
    } catch (err) {
      if (err instanceof SluiceError) return { ok: false, message: err.hint ? `${err.message} (${err.hint})` : err.message };
      throw err;
    }
  },

  async open(config, ctx, options) {
    const store = await PineconeStore.connect(config, ctx);
    return PineconeWriter.open(store, config, ctx, options);
  },

  /** Every document of a stream's current generation with its fingerprint and chunk count (read-only). */
  async *documents(config, ctx, stream) {
    const store = await PineconeStore.connect(config, ctx);
    const logical = logicalNamespace(config.namespace, stream);
    yield* listDocuments(store, currentNamespace(logical, (await store.readPointers([logical])).get(logical)));
  },
  scanChunks,

  // `sluice reindex`: new namespace generations, switched by one pointer upsert (./reindex.ts).
  reindex: { hasPrevious, rollback },

  async search(config, ctx, query) {
    return searchPinecone(await PineconeStore.connect(config, ctx), config, query);
  },

  /**
   * The conformance kit writes into namespaces of its own (the index is the user's: indexes are
   * slow and costly to create); remove() clears them, every generation and its pointer.
   */
  async sandbox(config, ctx, id) {
    const sandboxed = { ...config, namespace: `sluice-conformance-${id}-{stream}` };
    return {
      config: sandboxed,
      async remove(streams) {
        const store = await PineconeStore.connect(sandboxed, ctx);
        const logical = streams.map((s) => logicalNamespace(sandboxed.namespace, s));
        const pointers = await store.readPointers(logical);
        for (const ns of logical) {
          const last = pointers.get(ns)?.generation ?? 0; // the highest generation ever allocated
          for (let g = 0; g <= last; g++) await store.deleteNamespaceContents(generationNamespace(ns, g));
          if (pointers.has(ns)) await store.deleteIds(POINTER_NAMESPACE, [pointerId(ns)]);
        }
      },
    };
  },
};

export default destination;

/**
 * Nearest chunks across streams. Each stream's current generation is looked up through its
 * pointer; a query that finds nothing re-reads the pointer once, since an overwrite may have
 * switched (and cleared the old generation) between the lookup and the query.
 */
export async function searchPinecone(
  store: PineconeStore,
  config: PineconeConfig,
  query: { vector: Float32Array; topK: number; streams: string[] },
): Promise<SearchHit[]> {
  if (!query.streams.length) {
    throw new SluiceError('search needs at least one stream', { kind: 'config', hint: 'name the streams to search' });
  }
  if (query.vector.length !== store.index.dimension) {
    throw new SluiceError(`query vector has ${query.vector.length} dimensions; the Pinecone index has ${store.index.dimension}`, {
      kind: 'config',
      hint: 'search with the same embedder the connection writes with',
    });
  }
  const vector = compactValues(query.vector);
  const logical = query.streams.map((s) => logicalNamespace(config.namespace, s));
  const pointers = await store.readPointers(logical);
  const perStream = await Promise.all(
    logical.map(async (ns) => {
      let namespace = currentNamespace(ns, pointers.get(ns));
      let matches = await store.query(namespace, vector, query.topK);
      if (!matches.length) {
        const fresh = currentNamespace(ns, (await store.readPointers([ns])).get(ns));
        if (fresh !== namespace) {
          namespace = fresh;
          matches = await store.query(namespace, vector, query.topK);
        }
      }
      return matches;
    }),
  );
  const lowerIsBetter = (store.index.metric ?? config.metric) === 'euclidean';
  const hits: SearchHit[] = perStream.flat().map((m) => {
    const {
      stream,
      document_id,
      chunk_index,
      content,
      [FP_CONTENT]: _fp,
      [FP_METADATA]: _fpm,
      [FP_EMBEDDER]: _fpe,
      ...metadata
    } = (m.metadata ?? {}) as Record<string, unknown>;
    return {
      score: m.score ?? 0,
      stream: String(stream ?? ''),
      documentId: String(document_id ?? m.id.replace(/#\d+$/, '')),
      chunkIndex: typeof chunk_index === 'number' ? chunk_index : Number(m.id.slice(m.id.lastIndexOf('#') + 1)),
      content: String(content ?? ''),
      metadata,
    };
  });
  hits.sort((a, b) => (lowerIsBetter ? a.score - b.score : b.score - a.score));
  return hits.slice(0, query.topK);
}
