import { z } from 'zod';

export const METRICS = ['cosine', 'dotproduct', 'euclidean'] as const;
export type Metric = (typeof METRICS)[number];

export const PineconeConfigSchema = z.strictObject({
  api_key: z.string().min(1).meta({ secret: true }).describe('Pinecone API key'),
  index: z
    .string()
    .min(1)
    .describe('Index name (resolved through the control plane) or its host, e.g. my-index-abc123.svc.aped-4627-b74a.pinecone.io'),
  namespace: z
    .string()
    .default('{stream}')
    .describe(
      'Namespace to write into; `{stream}` is replaced by the stream name. Each stream needs its own namespace, since vector ids are `<document_id>#<chunk_index>`.',
    ),
  controller_host: z.string().optional().describe('Control-plane URL (default https://api.pinecone.io); for private deployments and tests'),
  metric: z.enum(METRICS).optional().describe('Expected index metric; when set, an index with another metric is an error before any write'),
  batch_size: z
    .number()
    .int()
    .min(1)
    .max(1000)
    .default(250)
    .describe('Vectors per upsert request (Pinecone allows at most 1,000 and 2 MB)'),
  max_request_bytes: z
    .number()
    .int()
    .min(64 * 1024)
    .max(2 * 1024 * 1024)
    .default(2_000_000)
    .describe('Upper bound on an upsert request body, in bytes (Pinecone rejects more than 2 MB)'),
  concurrency: z.number().int().min(1).max(32).default(4).describe('Requests in flight at once'),
  on_oversized_metadata: z
    .enum(['truncate_content', 'skip', 'fail'])
    .default('truncate_content')
    .describe(
      "A chunk whose metadata exceeds Pinecone's 40 KB: shorten its `content` (marked content_truncated), skip the chunk, or refuse its document (the sync fails, or with errors.tolerance: all the document becomes a dead letter). Truncated/skipped chunks are counted and logged; a document that cannot be fitted is refused.",
    ),
  max_retries: z.number().int().min(0).max(20).default(6).describe('Retries of a request after 429, 5xx, timeouts or dropped connections'),
  retry_initial_delay_ms: z
    .number()
    .int()
    .min(1)
    .max(60_000)
    .default(500)
    .describe('First retry backoff step (doubled on each retry, jittered)'),
  request_timeout_seconds: z.number().positive().max(600).default(60).describe('Timeout of one HTTP request'),
});

export type PineconeConfig = z.infer<typeof PineconeConfigSchema>;
