// The `destination:` block for `type: qdrant`.
import { z } from 'zod';

const HnswSchema = z.strictObject({
  m: z.number().int().min(0).max(1024).optional().describe('Edges per node in the HNSW graph (Qdrant default 16; 0 disables the graph).'),
  ef_construct: z.number().int().min(4).max(4096).optional().describe('Neighbours considered while building (Qdrant default 100).'),
  full_scan_threshold: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe('Below this many KB of vectors a filtered search scans instead of using the graph.'),
  on_disk: z.boolean().optional().describe('Keep the HNSW graph on disk instead of in RAM.'),
});

const OptimizersSchema = z.strictObject({
  indexing_threshold: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe('Vectors (KB) per segment before an HNSW index is built; 0 defers indexing (fast bulk loads).'),
  default_segment_number: z.number().int().min(0).optional().describe('Target number of segments (0 = number of CPUs).'),
  memmap_threshold: z.number().int().min(0).optional().describe('Segments above this size (KB) are memory-mapped.'),
  deleted_threshold: z.number().min(0).max(1).optional().describe('Share of deleted points that triggers a segment vacuum.'),
});

export const QdrantConfigSchema = z.strictObject({
  url: z
    .string()
    .regex(/^https?:\/\/[^\s]+$/, 'must start with http:// or https://')
    .describe('Qdrant REST endpoint, e.g. http://localhost:6333 or https://xyz.cloud.qdrant.io:6333.'),
  api_key: z.string().min(1).optional().meta({ secret: true }).describe('Qdrant API key (required by Qdrant Cloud).'),
  collection: z
    .string()
    .min(1)
    .max(200)
    .regex(/^[A-Za-z0-9_.-]+$/, 'use letters, digits, _, - and . only')
    .describe(
      'Name readers use: an alias to the physical collection `<collection>_<generation>` sluice creates (overwrite syncs load a new generation and switch the alias).',
    ),
  distance: z.enum(['cosine', 'dot', 'euclid', 'manhattan']).default('cosine').describe('Vector distance of the collection.'),
  hnsw: HnswSchema.optional().describe('HNSW index options, used when sluice creates a collection.'),
  optimizers: OptimizersSchema.optional().describe('Optimizer options, used when sluice creates a collection.'),
  on_disk_payload: z.boolean().optional().describe('Store payloads on disk (Qdrant default true).'),
  shard_number: z.number().int().min(1).optional().describe('Shards of a created collection (distributed Qdrant).'),
  replication_factor: z.number().int().min(1).optional().describe('Replicas of each shard of a created collection.'),
  batch_points: z.number().int().min(1).max(10_000).default(256).describe('Points per upsert request.'),
  batch_bytes: z
    .number()
    .int()
    .min(64 * 1024)
    .max(32 * 1024 * 1024)
    .default(8 * 1024 * 1024)
    .describe('Approximate JSON bytes per upsert request (Qdrant rejects requests above 32 MB by default).'),
  buffer_points: z.number().int().min(1).max(1_000_000).default(4096).describe('Points buffered before a flush starts (bounded memory).'),
  concurrency: z.number().int().min(1).max(64).default(4).describe('Upsert/delete requests in flight at once.'),
  timeout_seconds: z.number().positive().max(3600).default(60).describe('Timeout of one HTTP request.'),
  max_retries: z.number().int().min(0).max(20).default(6).describe('Retries of a request on 429, 5xx, timeouts and dropped connections.'),
});

export type QdrantConfig = z.infer<typeof QdrantConfigSchema>;

export const QDRANT_DISTANCE = { cosine: 'Cosine', dot: 'Dot', euclid: 'Euclid', manhattan: 'Manhattan' } as const;
export type QdrantDistance = (typeof QDRANT_DISTANCE)[keyof typeof QDRANT_DISTANCE];
