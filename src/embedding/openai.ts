// OpenAI, Azure OpenAI and OpenAI-compatible servers (Ollama, vLLM, TEI, LM Studio…) through the
// `openai` package. The client's own retries are off (maxRetries: 0) so every retry goes through
// src/net/retry.ts once: jittered backoff that honours Retry-After / x-ratelimit-reset-*.
import type OpenAI from 'openai';
import pLimit from 'p-limit';
import type { Logger } from '../protocol/connector.ts';
import { SluiceError, configError } from '../protocol/errors.ts';
import { httpStatus, isRetryableError, retry } from '../net/retry.ts';
import { tokenizerFor } from '../text/tokenizer.ts';
import type { EmbeddingConfig } from './config.ts';
import type { Embedder, EmbedResult } from './types.ts';
import { OPENAI_LIMITS, modelInfo } from './models.ts';
import { packRequests, type PackLimits } from './pack.ts';
import { RateLimiter } from './rate-limit.ts';
import { parseEmbeddingResponse } from './response.ts';

export const OPENAI_DEFAULTS = {
  model: 'text-embedding-3-small',
  batchSize: 512,
  concurrency: 8,
  maxRetries: 6,
  timeoutMs: 60_000,
  azureApiVersion: '2024-10-21',
} as const;

export interface OpenAIEmbedderOptions {
  logger: Logger;
  /** Override the provider's per-request limits (tests, servers with smaller limits). */
  limits?: Partial<PackLimits>;
  /** First backoff step in ms (default 500). */
  retryBaseMs?: number;
}

/** Decodes one embedding from either wire encoding into a Float32Array (that owns its buffer). */
export function decodeEmbedding(embedding: unknown): Float32Array {
  if (typeof embedding === 'string') {
    // Decode straight into the vector's own memory: no intermediate Buffer, no copy.
    const byteLength = Math.floor((embedding.length * 3) / 4) - (embedding.endsWith('==') ? 2 : embedding.endsWith('=') ? 1 : 0);
    const out = new Float32Array(Math.floor(byteLength / 4));
    const written = Buffer.from(out.buffer).write(embedding, 'base64');
    return written === out.byteLength ? out : out.subarray(0, Math.floor(written / 4)).slice();
  }
  if (Array.isArray(embedding)) return Float32Array.from(embedding as number[]);
  if (embedding instanceof Float32Array) return embedding;
  throw new Error(`unexpected embedding encoding (${typeof embedding})`);
}

/**
 * Decodes a response's embeddings. When all are base64 of the expected size they are decoded into
 * one slab (one allocation per response instead of one per vector: far less GC at high rates),
 * each vector a view of its own slice; otherwise one by one.
 */
export function decodeEmbeddings(embeddings: unknown[], dimensions: number): Float32Array[] {
  const bytesPerVector = dimensions * 4;
  const base64Length = Math.ceil(bytesPerVector / 3) * 4;
  if (!embeddings.every((e) => typeof e === 'string' && e.length === base64Length)) return embeddings.map(decodeEmbedding);
  const slab = Buffer.allocUnsafeSlow(embeddings.length * bytesPerVector);
  const vectors: Float32Array[] = [];
  for (let i = 0; i < embeddings.length; i++) {
    const offset = i * bytesPerVector;
    const written = slab.write(embeddings[i] as string, offset, bytesPerVector, 'base64');
    if (written !== bytesPerVector) return embeddings.map(decodeEmbedding);
    vectors.push(new Float32Array(slab.buffer, slab.byteOffset + offset, dimensions));
  }
  return vectors;
}

/**
 * Worth another attempt: what net/retry considers transient, plus the openai client's connection
 * errors and timeouts (their `name` is plain "Error", so the shared check misses them).
 */
function isTransient(err: unknown): boolean {
  return (openaiPackage !== undefined && err instanceof openaiPackage.APIConnectionError) || isRetryableError(err);
}

/**
 * The `openai` package (about 150 modules, and Node's fetch behind them) is loaded at the first
 * request: every CLI command that builds an embedder, or only reads its settings, starts faster, and
 * runs with the offline hash embedder never load it. Its errors exist only once it is loaded.
 */
let openaiPackage: typeof import('openai') | undefined;
async function loadOpenAI(): Promise<typeof import('openai')> {
  return (openaiPackage ??= await import('openai'));
}

function hostOf(url: string | undefined): string {
  if (!url) return 'api.openai.com';
  try {
    return new URL(url).host;
  } catch {
    return 'an invalid URL';
  }
}

export function createOpenAIEmbedder(config: EmbeddingConfig, opts: OpenAIEmbedderOptions): Embedder {
  const provider = config.provider;
  const { logger } = opts;

  let model: string;
  let newClient: (pkg: typeof import('openai')) => OpenAI;
  let apiKey: string;
  let host: string;
  const timeout = config.timeout_ms ?? OPENAI_DEFAULTS.timeoutMs;
  if (provider === 'azure-openai') {
    const deployment = config.deployment ?? config.model;
    if (!deployment)
      throw configError(
        'azure-openai needs a deployment name',
        'embedding.deployment',
        'set embedding.deployment (and embedding.model if the deployment name is not the model name)',
      );
    if (!config.endpoint && !config.base_url)
      throw configError(
        'azure-openai needs the resource endpoint',
        'embedding.endpoint',
        'e.g. endpoint: https://my-resource.openai.azure.com',
      );
    const azureKey = config.api_key ?? process.env.AZURE_OPENAI_API_KEY;
    if (!azureKey)
      throw configError('azure-openai needs an API key', 'embedding.api_key', 'set embedding.api_key: ${AZURE_OPENAI_API_KEY}');
    apiKey = azureKey;
    model = config.model ?? deployment;
    host = hostOf(config.endpoint ?? config.base_url);
    newClient = (pkg) =>
      new pkg.AzureOpenAI({
        apiKey: azureKey,
        deployment,
        apiVersion: config.api_version ?? OPENAI_DEFAULTS.azureApiVersion,
        ...(config.base_url ? { baseURL: config.base_url } : { endpoint: config.endpoint }),
        maxRetries: 0,
        timeout,
      });
  } else {
    if (provider === 'openai-compatible') {
      if (!config.base_url)
        throw configError(
          'openai-compatible needs the server URL',
          'embedding.base_url',
          'e.g. base_url: http://localhost:11434/v1 (Ollama)',
        );
      if (!config.model) throw configError('openai-compatible needs the model name', 'embedding.model', 'e.g. model: nomic-embed-text');
    }
    const openaiKey = config.api_key ?? (provider === 'openai' ? process.env.OPENAI_API_KEY : undefined);
    if (provider === 'openai' && !openaiKey)
      throw configError('openai needs an API key', 'embedding.api_key', 'set embedding.api_key: ${OPENAI_API_KEY}');
    model = config.model ?? OPENAI_DEFAULTS.model;
    host = hostOf(config.base_url);
    // Self-hosted servers usually need no key; the client insists on one, so send a placeholder.
    apiKey = openaiKey ?? 'no-key';
    newClient = (pkg) => new pkg.OpenAI({ apiKey, baseURL: config.base_url, maxRetries: 0, timeout });
  }
  let client: Promise<OpenAI> | undefined;
  const clientOnce = () => (client ??= loadOpenAI().then(newClient));
  const info = modelInfo(model);
  const dimensions = config.dimensions ?? info?.dimensions;
  if (dimensions === undefined) {
    throw configError(
      `the vector size of model "${model}" is not known`,
      'embedding.dimensions',
      `set embedding.dimensions to the model's output size (e.g. 768 for nomic-embed-text)`,
    );
  }
  if (config.dimensions !== undefined && info && !info.supportsDimensions && config.dimensions !== info.dimensions) {
    throw configError(
      `model "${model}" always gives ${info.dimensions}-dimensional vectors; it cannot give ${config.dimensions}`,
      'embedding.dimensions',
      `remove embedding.dimensions or set it to ${info.dimensions}`,
    );
  }
  // An explicit `dimensions` is sent, except to known models that always give one size (they reject
  // the parameter); self-hosted OpenAI-compatible servers with Matryoshka models honour it.
  const sendDimensions = config.dimensions !== undefined && (info ? info.supportsDimensions : true);
  // Tokens are counted with OpenAI's tokenizer. Open models use their own, which usually yields
  // more tokens for the same text, so their built-in limits get a 20% margin.
  const knownLimit = info && (info.pricePerMillionTokens !== undefined ? info.maxInputTokens : Math.floor(info.maxInputTokens * 0.8));
  const maxInputTokens = Math.min(
    config.max_input_tokens ?? knownLimit ?? OPENAI_LIMITS.maxTokensPerInput,
    OPENAI_LIMITS.maxTokensPerInput,
  );
  const limits: PackLimits = {
    maxInputsPerRequest: Math.min(opts.limits?.maxInputsPerRequest ?? OPENAI_LIMITS.maxInputsPerRequest, config.batch_size ?? Infinity),
    maxTokensPerRequest: opts.limits?.maxTokensPerRequest ?? OPENAI_LIMITS.maxTokensPerRequest,
    maxTokensPerInput: Math.min(opts.limits?.maxTokensPerInput ?? maxInputTokens, maxInputTokens),
  };
  const tokenizer = tokenizerFor(model);
  const concurrency = config.concurrency ?? OPENAI_DEFAULTS.concurrency;
  const inFlight = pLimit(concurrency);
  const rateLimiter = new RateLimiter({ requestsPerMinute: config.requests_per_minute, tokensPerMinute: config.tokens_per_minute });
  const maxRetries = config.max_retries ?? OPENAI_DEFAULTS.maxRetries;
  const label = `${provider} model ${model} at ${host}`;
  /** Error text from a provider, with the key cut out in case a server echoes it. */
  const redact = (text: string) => (apiKey && apiKey.length >= 4 ? text.split(apiKey).join('***') : text);

  const failure = (err: unknown, attempts: number): SluiceError => {
    const status = httpStatus(err);
    const detail = redact(err instanceof Error ? err.message : String(err)).slice(0, 300);
    const hint =
      status === 401 || status === 403
        ? 'check embedding.api_key (is the key valid for this endpoint?)'
        : status === 404
          ? 'check embedding.model / embedding.deployment and embedding.base_url'
          : status === 429
            ? 'the provider is rate limiting: lower embedding.concurrency or set embedding.requests_per_minute / tokens_per_minute; the batch was not checkpointed, run the sync again to resume'
            : isTransient(err)
              ? 'the provider is unavailable; the batch was not checkpointed, run the sync again to resume'
              : 'check the embedding block of the pipeline file';
    return new SluiceError(`embedding request to ${label} failed${attempts > 1 ? ` after ${attempts} attempts` : ''}: ${detail}`, {
      kind: 'embedding',
      where: 'embedding',
      hint,
      transient: isTransient(err),
      cause: err, // its HTTP status tells a refused input (dead letter) from an outage
    });
  };

  /** A request the run no longer wants (`stop`): nothing was sent, nothing is paid. */
  const stopped = () =>
    new SluiceError(`embedding request to ${label} not sent: the run is stopping`, { kind: 'interrupted', where: 'embedding' });

  /** One HTTP request (with retries) for a packed group of inputs. */
  const request = async (
    input: string[],
    tokensEstimate: number,
    signal?: AbortSignal,
    stop?: AbortSignal,
  ): Promise<{ vectors: Float32Array[]; tokens: number; requests: number }> => {
    let requests = 0;
    let attempts = 0;
    // Ends the waits before a request (rate limit, back-off) and further attempts, never one in flight.
    const notSending = signal && stop ? AbortSignal.any([signal, stop]) : (signal ?? stop);
    try {
      const openai = await clientOnce();
      const response = await retry(
        async () => {
          await rateLimiter.acquire(tokensEstimate, notSending);
          if (stop) {
            // A failure that stops the run reaches the stop through promise callbacks only; one
            // turn of the event loop lets it land before this request is sent.
            await new Promise((resolve) => setImmediate(resolve));
            if (stop.aborted) throw stopped();
          }
          requests++;
          attempts++;
          const raw = await openai.embeddings
            .create({ model, input, encoding_format: 'base64', ...(sendDimensions ? { dimensions } : {}) }, signal ? { signal } : undefined)
            .asResponse();
          // The body is read here rather than by the client (see response.ts). A connection
          // dropped mid-body is retried like any other transient failure.
          return parseEmbeddingResponse(Buffer.from(await raw.arrayBuffer()));
        },
        {
          maxRetries,
          isRetryable: isTransient,
          baseMs: opts.retryBaseMs ?? 500,
          signal: notSending,
          onRetry: (err, attempt, waitMs) =>
            logger.warn(
              { provider, model, host, status: httpStatus(err), attempt, waitMs: Math.round(waitMs) },
              `embedding request failed (${redact(String((err as Error)?.message ?? err)).slice(0, 120)}), retrying`,
            ),
        },
      );
      const { embeddings, promptTokens } = response;
      if (embeddings.length !== input.length)
        throw new SluiceError(`${label} returned ${embeddings.length} embeddings for ${input.length} inputs`, {
          kind: 'embedding',
          where: 'embedding',
        });
      const vectors = decodeEmbeddings(embeddings, dimensions);
      for (const v of vectors) {
        if (v.length !== dimensions) {
          throw new SluiceError(`${label} returned ${v.length}-dimensional vectors, but ${dimensions} were expected`, {
            kind: 'embedding',
            where: 'embedding.dimensions',
            hint: `set embedding.dimensions: ${v.length} (and make sure the destination index has that size)`,
          });
        }
      }
      const tokens = promptTokens ?? input.reduce((n, t) => n + tokenizer.count(t), 0);
      return { vectors, tokens, requests };
    } catch (err) {
      if (err instanceof SluiceError) throw err;
      if (signal?.aborted) throw new SluiceError('embedding was interrupted', { kind: 'interrupted', cause: err });
      // A wait the stop ended (rate limit, back-off) fails as the stop; a failed attempt, as itself.
      if (stop?.aborted && (err as Error)?.name === 'AbortError') throw stopped();
      throw failure(err, attempts);
    }
  };

  /** Token sizes for packing and pacing: UTF-8 bytes bound tokens from above, so exact counts are only needed for big batches. */
  const sizesFor = (texts: string[]): number[] => {
    // Pacing to tokens_per_minute needs real counts: the bytes bound is ~4× high for English.
    if (rateLimiter.limitsTokens) return texts.map((t) => tokenizer.count(t));
    const bytes = texts.map((t) => Buffer.byteLength(t));
    const total = bytes.reduce((a, b) => a + b, 0);
    const fitsAsIs = total <= limits.maxTokensPerRequest && bytes.every((b) => b <= limits.maxTokensPerInput);
    return fitsAsIs ? bytes : texts.map((t, i) => (bytes[i] <= 16 ? bytes[i] : tokenizer.count(t)));
  };

  return {
    provider,
    model,
    dimensions,
    maxInputTokens: limits.maxTokensPerInput,
    pricePerMillionTokens: config.price_per_million_tokens ?? (provider === 'openai-compatible' ? undefined : info?.pricePerMillionTokens),
    concurrency,
    batchSize: config.batch_size ?? OPENAI_DEFAULTS.batchSize,
    countTokens: (text) => tokenizer.count(text),
    async embed(texts: string[], signal?: AbortSignal, stop?: AbortSignal): Promise<EmbedResult> {
      if (!texts.length) return { vectors: [], requests: 0, tokens: 0 };
      const empty = texts.findIndex((t) => t.length === 0);
      if (empty >= 0)
        throw new SluiceError(`input ${empty} of an embedding batch is empty`, {
          kind: 'internal',
          hint: 'empty text must be skipped before embedding',
        });
      const sizes = sizesFor(texts);
      const packed = packRequests(sizes, limits);
      if ('tooLong' in packed) {
        throw new SluiceError(`a chunk has ${sizes[packed.tooLong]} tokens, more than ${label} accepts (${limits.maxTokensPerInput})`, {
          kind: 'embedding',
          hint: 'lower processing.chunk_size; chunks are split to the model limit, so this is a bug if it persists',
        });
      }
      const results = await Promise.all(
        packed.ranges.map(([start, end]) =>
          inFlight(() =>
            request(
              texts.slice(start, end),
              sizes.slice(start, end).reduce((a, b) => a + b, 0),
              signal,
              stop,
            ),
          ),
        ),
      );
      const vectors: Float32Array[] = [];
      let tokens = 0;
      let requests = 0;
      for (const r of results) {
        for (const v of r.vectors) vectors.push(v);
        tokens += r.tokens;
        requests += r.requests;
      }
      return { vectors, tokens, requests };
    },
  };
}
