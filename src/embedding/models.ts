// What we know about common embedding models: native vector size, input limit, list price.
export interface ModelInfo {
  dimensions: number;
  /** Longest input in tokens. */
  maxInputTokens: number;
  /** USD per 1M input tokens (list price). */
  pricePerMillionTokens?: number;
  /** Accepts the `dimensions` request parameter (Matryoshka models). */
  supportsDimensions: boolean;
}

export const KNOWN_MODELS: Record<string, ModelInfo> = {
  'text-embedding-3-small': { dimensions: 1536, maxInputTokens: 8191, pricePerMillionTokens: 0.02, supportsDimensions: true },
  'text-embedding-3-large': { dimensions: 3072, maxInputTokens: 8191, pricePerMillionTokens: 0.13, supportsDimensions: true },
  'text-embedding-ada-002': { dimensions: 1536, maxInputTokens: 8191, pricePerMillionTokens: 0.1, supportsDimensions: false },
  // Common open models served by Ollama, vLLM, TEI, LM Studio (self-hosted: no list price).
  'nomic-embed-text': { dimensions: 768, maxInputTokens: 8192, supportsDimensions: false },
  'mxbai-embed-large': { dimensions: 1024, maxInputTokens: 512, supportsDimensions: false },
  'all-minilm': { dimensions: 384, maxInputTokens: 256, supportsDimensions: false },
  'bge-m3': { dimensions: 1024, maxInputTokens: 8192, supportsDimensions: false },
  'snowflake-arctic-embed': { dimensions: 1024, maxInputTokens: 512, supportsDimensions: false },
};

/** Looks a model up by name, ignoring an Ollama-style ":tag" and an "org/" prefix. */
export function modelInfo(model: string): ModelInfo | undefined {
  const exact = KNOWN_MODELS[model];
  if (exact) return exact;
  const bare = model.toLowerCase().replace(/^.*\//, '').replace(/:.*$/, '');
  return KNOWN_MODELS[bare];
}

/** OpenAI's per-request limits for /v1/embeddings. */
export const OPENAI_LIMITS = { maxInputsPerRequest: 2048, maxTokensPerRequest: 300_000, maxTokensPerInput: 8191 } as const;
