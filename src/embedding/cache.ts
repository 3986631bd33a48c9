// The embedding cache (invariant 4: never pay twice). LMDB on disk: readers and writers in several
// processes at once are safe (LMDB's own locking), lookups are memory-mapped, so nothing is held
// in the JS heap beyond the vectors being returned.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { RootDatabase } from 'lmdb';
import { open } from '../engine/lmdb-lazy.ts';
import { createHash } from 'node:crypto';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import type { Embedder, EmbeddingCache } from './types.ts';

/** Cache key from (provider, model, dimensions, content hash). */
export function embeddingCacheKey(embedder: Pick<Embedder, 'provider' | 'model' | 'dimensions'>, contentHash: string): string {
  // A short digest of the model identity keeps keys compact and unambiguous whatever
  // characters a model name holds. Computed once per model, not once per chunk.
  const name = JSON.stringify([embedder.provider, embedder.model, embedder.dimensions]);
  let identity = identities.get(name);
  if (identity === undefined) identities.set(name, (identity = createHash('sha256').update(name).digest('hex').slice(0, 16)));
  return `${identity}:${contentHash}`;
}
const identities = new Map<string, string>();

function toBytes(vector: Float32Array): Uint8Array {
  return new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength);
}

function toVector(bytes: Uint8Array): Float32Array {
  // Copy: LMDB may hand out memory it reuses, and Float32Array needs 4-byte alignment.
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Float32Array(copy.buffer, 0, bytes.byteLength / 4);
}

export async function openEmbeddingCache(dir: string): Promise<EmbeddingCache> {
  let db: RootDatabase<Uint8Array, string>;
  try {
    mkdirSync(dir, { recursive: true });
    db = open<Uint8Array, string>({ path: join(dir, 'embeddings.lmdb'), encoding: 'binary', compression: false });
  } catch (err) {
    throw new SluiceError(`cannot open the embedding cache in ${dir}: ${describeUnknown(err)}`, {
      kind: 'config',
      where: dir,
      hint: 'check that the directory is writable and on a local disk (LMDB needs file locking and mmap)',
      cause: err,
    });
  }
  let closed = false;
  return {
    async getMany(keys: string[]): Promise<(Float32Array | undefined)[]> {
      if (!keys.length) return [];
      const values = await db.getMany(keys);
      return values.map((v) => (v && v.byteLength > 0 ? toVector(v) : undefined));
    },
    async putMany(entries: Array<[string, Float32Array]>): Promise<void> {
      if (!entries.length) return;
      // One write transaction: durable (LMDB syncs on commit) before the promise resolves.
      await db.transaction(() => {
        for (const [key, vector] of entries) db.put(key, toBytes(vector));
      });
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await db.close();
    },
  };
}
