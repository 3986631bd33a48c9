// Picks the state store and the embedding cache a pipeline's `state:` and `cache:` blocks ask for.
import { join } from 'node:path';
import type { LoadedPipeline } from '../config/load.ts';
import { openEmbeddingCache } from '../embedding/cache.ts';
import type { EmbeddingCache } from '../embedding/types.ts';
import { PostgresStateStore } from './postgres.ts';
import { FileStateStore, type StateStore } from './store.ts';

export function openStateStore(pipeline: Pick<LoadedPipeline, 'config' | 'stateDir'>): StateStore {
  const state = pipeline.config.state;
  if (state.type === 'postgres') return new PostgresStateStore({ url: state.url, schema: state.schema }, pipeline.stateDir);
  return new FileStateStore(pipeline.stateDir);
}

/**
 * The embedding cache: in the state database when state is in PostgreSQL (a new pod starts with a
 * warm cache), unless `cache: { type: local }` keeps it in the LMDB file under the state directory.
 */
export async function openCacheFor(pipeline: Pick<LoadedPipeline, 'config' | 'stateDir'>, store: StateStore): Promise<EmbeddingCache> {
  const wanted = pipeline.config.cache?.type ?? (store instanceof PostgresStateStore ? 'postgres' : 'local');
  if (wanted === 'postgres' && store instanceof PostgresStateStore) return store.openEmbeddingCache();
  return openEmbeddingCache(join(pipeline.stateDir, 'embeddings'));
}
