// One small interface for every embedding provider.
export interface EmbedResult {
  /**
   * One vector per input, in order. A vector may be a view into a buffer shared with the other
   * vectors of its response (byteOffset ≠ 0): use its elements, or `.slice()` it, never `.buffer` alone.
   */
  vectors: Float32Array[];
  /** HTTP requests made (0 for offline embedders). */
  requests: number;
  /** Tokens billed (or counted). */
  tokens: number;
}

export interface Embedder {
  readonly provider: string;
  readonly model: string;
  readonly dimensions: number;
  /** Longest input the model takes, in its tokens; longer chunks must be split before embed(). */
  readonly maxInputTokens: number;
  /** USD per 1M input tokens (undefined when unknown or free). */
  readonly pricePerMillionTokens?: number;
  countTokens(text: string): number;
  /**
   * Embeds texts in order. Packs requests within the provider's limits; retries transient failures.
   * `signal` abandons everything, requests already sent included. `stop` only keeps requests that
   * were not yet sent from being sent (nor retried): what was sent is still answered, and paid for.
   */
  embed(texts: string[], signal?: AbortSignal, stop?: AbortSignal): Promise<EmbedResult>;
  /** How many embed() calls are worth keeping in flight at once. */
  readonly concurrency: number;
  /** Inputs per embed() call the engine should aim for. */
  readonly batchSize: number;
  /**
   * Vectors are computed in this process at no cost (the `hash` embedder): recomputing is cheaper
   * than a cache lookup, so the engine keeps no cache for them.
   */
  readonly local?: boolean;
  close?(): Promise<void>;
}

/** Persistent cache of vectors keyed by (provider, model, dimensions, content hash): invariant 4. */
export interface EmbeddingCache {
  getMany(keys: string[]): Promise<(Float32Array | undefined)[]>;
  putMany(entries: Array<[string, Float32Array]>): Promise<void>;
  close(): Promise<void>;
}
