// Embedding providers behind one interface, the persistent cache, and cost estimates.
import type { Logger } from '../protocol/connector.ts';
import { configError } from '../protocol/errors.ts';
import type { EmbeddingConfig } from './config.ts';
import type { Embedder } from './types.ts';
import { createHashEmbedder } from './hash.ts';
import { createOpenAIEmbedder } from './openai.ts';

export type { Embedder, EmbedResult, EmbeddingCache } from './types.ts';
export { EmbeddingConfigSchema, type EmbeddingConfig } from './config.ts';
export { openEmbeddingCache, embeddingCacheKey } from './cache.ts';
export { KNOWN_MODELS, modelInfo, OPENAI_LIMITS } from './models.ts';
export { HASH_MODEL, HASH_DEFAULT_DIMENSIONS } from './hash.ts';
export { createOpenAIEmbedder, decodeEmbedding, decodeEmbeddings, OPENAI_DEFAULTS } from './openai.ts';
export { packRequests, type PackLimits } from './pack.ts';

export interface CreateEmbedderOptions {
  logger: Logger;
}

export function createEmbedder(config: EmbeddingConfig, opts: CreateEmbedderOptions): Embedder {
  switch (config.provider) {
    case 'hash':
      return createHashEmbedder({
        dimensions: config.dimensions,
        batchSize: config.batch_size,
        concurrency: config.concurrency,
        pricePerMillionTokens: config.price_per_million_tokens,
      });
    case 'openai':
    case 'azure-openai':
    case 'openai-compatible':
      return createOpenAIEmbedder(config, { logger: opts.logger });
    default:
      throw configError(
        `unknown embedding provider "${(config as { provider: string }).provider}"`,
        'embedding.provider',
        'use one of: hash, openai, azure-openai, openai-compatible',
      );
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
