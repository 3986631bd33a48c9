// Embedding cache in PostgreSQL (issue 16): how vectors are stored. On a throwaway PostgreSQL 15,
// 10,000 vectors of 1536 dimensions (text-embedding-3-small's size) are written through the real
// cache (bytea of float4) and, for comparison, as float16 into a twin table; reported: bytes per
// vector on disk (table + TOAST + index), float16's error against the original, batched look-up
// time (256 keys, one query) and the LMDB file of the local cache for the same vectors.
// SLUICE_BENCH_CACHE_VECTORS scales the count.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startPostgres } from '../../scripts/postgres-test-server.ts';
import { openEmbeddingCache } from '../../src/embedding/cache.ts';
import { PostgresStateStore } from '../../src/state/postgres.ts';
import { fixtureVector } from '../fixtures/openai-server.ts';

const DIMS = 1536;

/** IEEE 754 binary16, round to nearest even (measurement only: the cache stores float4). */
function toHalf(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant = (mant | 0x800000) >>> (1 - exp);
    return sign | ((mant + 0x1000 + ((mant >>> 13) & 1) - 1) >>> 13);
  }
  if (exp >= 31) return sign | 0x7c00;
  const r = (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  return sign | (rest > 0x1000 || (rest === 0x1000 && r & 1) ? r + 1 : r);
}
function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (mant / 1024);
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + mant / 1024);
}

export default async function bench(): Promise<Record<string, unknown>> {
  const count = Number(process.env.SLUICE_BENCH_CACHE_VECTORS ?? 10_000);
  const server = await startPostgres();
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cache-bench-'));
  const store = new PostgresStateStore({ url: server.url, schema: 'bench' }, dir);
  try {
    const cache = store.openEmbeddingCache();
    const model = createHash('sha256').update('bench').digest('hex').slice(0, 16);
    const entries: Array<[string, Float32Array]> = [];
    for (let i = 0; i < count; i++) {
      const text = `chunk ${i}`;
      entries.push([`${model}:${createHash('sha256').update(text).digest('hex')}`, fixtureVector(text, DIMS)]);
    }
    let t0 = performance.now();
    for (let i = 0; i < entries.length; i += 256) await cache.putMany(entries.slice(i, i + 256));
    const writeMs = performance.now() - t0;

    const lookups: number[] = [];
    for (let i = 0; i + 256 <= entries.length && lookups.length < 20; i += 256) {
      t0 = performance.now();
      const got = await cache.getMany(entries.slice(i, i + 256).map(([k]) => k));
      lookups.push(performance.now() - t0);
      if (got.some((v, j) => !v || v.some((x, d) => x !== entries[i + j][1][d]))) throw new Error('cache returned a different vector');
    }
    lookups.sort((a, b) => a - b);

    const client = new pg.Client(server.url);
    await client.connect();
    await client.query(`CREATE TABLE bench.f16 (LIKE bench.embedding_cache INCLUDING ALL)`);
    let maxAbs = 0;
    let minCos = 1;
    for (let i = 0; i < entries.length; i += 256) {
      const part = entries.slice(i, i + 256);
      const halves = part.map(([, v]) => {
        const b = Buffer.alloc(v.length * 2);
        let dot = 0;
        let nb = 0;
        v.forEach((x, d) => {
          const h = toHalf(x);
          b.writeUInt16LE(h, d * 2);
          const y = fromHalf(h);
          maxAbs = Math.max(maxAbs, Math.abs(y - x));
          dot += x * y;
          nb += y * y;
        });
        minCos = Math.min(minCos, dot / Math.sqrt(nb)); // |x| = 1
        return b;
      });
      await client.query(
        `INSERT INTO bench.f16 (model_key, content_hash, vector) SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])`,
        [part.map(([k]) => k.split(':')[0]), part.map(([k]) => Buffer.from(k.split(':')[1], 'hex')), halves],
      );
    }
    await client.query('VACUUM ANALYZE bench.embedding_cache');
    await client.query('VACUUM ANALYZE bench.f16');
    const size = async (t: string) =>
      Number((await client.query(`SELECT pg_total_relation_size('bench.${t}')::bigint AS n`)).rows[0].n as string);
    const f4 = await size('embedding_cache');
    const f16 = await size('f16');
    await client.end();

    const lmdbDir = join(dir, 'lmdb');
    const local = await openEmbeddingCache(lmdbDir);
    for (let i = 0; i < entries.length; i += 256) await local.putMany(entries.slice(i, i + 256));
    await local.close();
    const lmdbBytes = statSync(join(lmdbDir, 'embeddings.lmdb')).size;

    return {
      vectors: count,
      dimensions: DIMS,
      float4_bytes_per_vector_on_disk: Math.round(f4 / count),
      float16_bytes_per_vector_on_disk: Math.round(f16 / count),
      float4_raw_bytes: DIMS * 4,
      float16_max_abs_error: Number(maxAbs.toExponential(3)),
      float16_min_cosine_to_original: Number(minCos.toFixed(9)),
      float16_bit_identical: false,
      write_vectors_per_s: Math.round(count / (writeMs / 1000)),
      lookup_256_keys_ms_p50: Number(lookups[Math.floor(lookups.length / 2)].toFixed(1)),
      lookup_256_keys_ms_max: Number(lookups.at(-1)!.toFixed(1)),
      lmdb_file_bytes_per_vector: Math.round(lmdbBytes / count),
    };
  } finally {
    await store.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
