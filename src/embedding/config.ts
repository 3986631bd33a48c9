// The `embedding:` block of a connection.
import { z } from 'zod';

export const EmbeddingConfigSchema = z.strictObject({
  provider: z.enum(['hash', 'openai', 'azure-openai', 'openai-compatible']),
  model: z.string().min(1).optional(),
  dimensions: z.number().int().positive().max(65536).optional(),
  api_key: z.string().min(1).optional().meta({ secret: true }),
  base_url: z.string().url().optional(),
  /** azure-openai: resource endpoint, deployment and API version. */
  endpoint: z.string().url().optional(),
  deployment: z.string().optional(),
  api_version: z.string().optional(),
  batch_size: z.number().int().positive().max(2048).optional(),
  concurrency: z.number().int().positive().max(64).optional(),
  max_retries: z.number().int().min(0).max(20).optional(),
  requests_per_minute: z.number().positive().optional(),
  tokens_per_minute: z.number().positive().optional(),
  timeout_ms: z.number().int().positive().optional(),
  /**
   * Longest input the model accepts, in tokens. Known models have it built in; set it for other
   * self-hosted models (e.g. 512 for many BERT-style models). Chunks are split to fit.
   */
  max_input_tokens: z.number().int().positive().max(8191).optional(),
  /** Overrides the built-in price table for cost estimates and the cost limit (USD per 1M tokens). */
  price_per_million_tokens: z.number().nonnegative().optional(),
  /**
   * Most a run of this connection may spend on embeddings (USD): the sync stops before the request
   * that would go over it, keeping what was committed. `sluice sync --max-cost` overrides it.
   */
  max_cost_usd: z.number().nonnegative().optional(),
});
export type EmbeddingConfig = z.infer<typeof EmbeddingConfigSchema>;
