// Embedding providers behind one interface, the persistent cache, and cost estimates.
import type { Logger } from '../protocol/connector.ts';
import { configError } from '../protocol/errors.ts';
import type { EmbeddingConfig } from './config.ts';
import type { Embedder } from './types.ts';
import { createHashEmbedder } from './hash.ts';
import { modelInfo } from './models.ts';

export type { Embedder, EmbedResult, EmbeddingCache } from './types.ts';
export { EmbeddingConfigSchema, type EmbeddingConfig } from './config.ts';
export { openEmbeddingCache, embeddingCacheKey } from './cache.ts';
export { KNOWN_MODELS, modelInfo, OPENAI_LIMITS } from './models.ts';
export { HASH_MODEL, HASH_DEFAULT_DIMENSIONS } from './hash.ts';

export interface CreateEmbedderOptions {
  logger: Logger;
}

export function createEmbedder(config: EmbeddingConfig, opts: CreateEmbedderOptions): Embedder {
  switch (config.provider) {
    case 'hash':
      return createHashEmbedder({
        dimensions: config.dimensions, batchSize: config.batch_size, concurrency: config.concurrency,
        pricePerMillionTokens: config.price_per_million_tokens,
      });
    default:
      throw configError(`embedding provider "${config.provider}" is not available yet`, 'embedding.provider', 'use provider: hash');
  }
}

/**
 * Estimated cost in USD of embedding `tokens` tokens: the configured price, else the built-in list
 * price of the model; 0 for the offline hash embedder; undefined when the price is unknown.
 */
export function estimateCostUsd(tokens: number, embedder: Embedder): number | undefined {
  const price = embedder.pricePerMillionTokens ?? (embedder.provider === 'hash' ? 0 : undefined);
  return price === undefined ? undefined : (tokens / 1_000_000) * price;
}

/** Price per 1M tokens for a config: `price_per_million_tokens`, else the model's list price. */
export function priceFor(config: EmbeddingConfig, model: string): number | undefined {
  if (config.price_per_million_tokens !== undefined) return config.price_per_million_tokens;
  // Self-hosted OpenAI-compatible servers are not billed at OpenAI's prices.
  if (config.provider === 'openai-compatible') return undefined;
  return modelInfo(model)?.pricePerMillionTokens;
}
