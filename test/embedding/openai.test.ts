import { afterEach, describe, expect, it, vi } from 'vitest';
import pLimit from 'p-limit';
import { startOpenAIServer, fixtureVector, type OpenAIServer, type OpenAIServerOptions } from '../fixtures/openai-server.ts';
import { createEmbedder, createOpenAIEmbedder, decodeEmbedding, type Embedder } from '../../src/embedding/index.ts';
import { EmbeddingConfigSchema, type EmbeddingConfig } from '../../src/embedding/config.ts';
import { SluiceError } from '../../src/protocol/errors.ts';

const KEY = 'sk-test-SECRET-0123456789abcdef';

function captureLogger() {
  const lines: string[] = [];
  const log = (obj: object | string, msg?: string) => lines.push(JSON.stringify(obj) + ' ' + (msg ?? ''));
  return { lines, logger: { debug: log, info: log, warn: log, error: log } };
}

const servers: OpenAIServer[] = [];
async function server(opts: OpenAIServerOptions = {}) {
  const s = await startOpenAIServer(opts);
  servers.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

const config = (s: OpenAIServer, extra: Partial<EmbeddingConfig> = {}): EmbeddingConfig =>
  EmbeddingConfigSchema.parse({
    provider: 'openai',
    api_key: KEY,
    base_url: s.url,
    model: 'text-embedding-3-small',
    dimensions: 64,
    ...extra,
  });

/** Drives an embedder the way the engine does: batches of batchSize, `concurrency` batches in flight. */
async function embedAll(embedder: Embedder, texts: string[]) {
  const limit = pLimit(embedder.concurrency);
  const batches: string[][] = [];
  for (let i = 0; i < texts.length; i += embedder.batchSize) batches.push(texts.slice(i, i + embedder.batchSize));
  const results = await Promise.all(batches.map((b) => limit(() => embedder.embed(b))));
  return {
    vectors: results.flatMap((r) => r.vectors),
    requests: results.reduce((n, r) => n + r.requests, 0),
    tokens: results.reduce((n, r) => n + r.tokens, 0),
  };
}

const texts = (n: number, prefix = 'doc') => Array.from({ length: n }, (_, i) => `${prefix} ${i}: the quick brown fox ${i % 13} jumps`);

describe('openai provider against the fixture server', () => {
  it('decodes base64 (what it asks for) and float (servers that ignore encoding_format)', async () => {
    for (const ignoreEncodingFormat of [false, true]) {
      const s = await server({ ignoreEncodingFormat });
      const embedder = createEmbedder(config(s), captureLogger());
      const input = ['alpha', 'beta', '한국어 🎉'];
      const result = await embedder.embed(input);
      expect(result.vectors).toHaveLength(3);
      input.forEach((t, i) => {
        expect(result.vectors[i]).toBeInstanceOf(Float32Array);
        expect(result.vectors[i]).toEqual(fixtureVector(t, 64)); // right vector for the right input
      });
      expect(s.stats.encodings).toEqual({ base64: 1 });
      expect(result.requests).toBe(1);
      expect(result.tokens).toBe(s.stats.tokens);
    }
  });

  it('decodeEmbedding handles both encodings and unaligned buffers', () => {
    const v = Float32Array.from([0.5, -1.25, 3]);
    expect(decodeEmbedding(Buffer.from(v.buffer).toString('base64'))).toEqual(v);
    expect(decodeEmbedding([0.5, -1.25, 3])).toEqual(v);
  });

  it('with 20% injected 429/500 responses, embeds every input exactly once and counts each request once', async () => {
    const s = await server({ failRate: 0.2, latencyMs: 5, dimensionsDefault: 64 });
    const { lines, logger } = captureLogger();
    const embedder = createOpenAIEmbedder(config(s, { batch_size: 25, concurrency: 4, max_retries: 10 }), { logger, retryBaseMs: 20 });
    const input = texts(1500);
    const result = await embedAll(embedder, input);
    expect(result.vectors).toHaveLength(1500);
    input.forEach((t, i) => expect(result.vectors[i]).toEqual(fixtureVector(t, 64)));
    expect(s.stats.failures).toBeGreaterThan(5);
    expect(s.stats.inputs).toBe(1500);
    expect([...s.stats.embedded.values()].every((n) => n === 1)).toBe(true);
    expect(s.stats.embedded.size).toBe(1500);
    // The openai client's own retries are off: the server saw exactly the attempts we counted.
    expect(result.requests).toBe(s.stats.requests);
    expect(result.tokens).toBe(s.stats.tokens);
    expect(lines.some((l) => l.includes('retrying'))).toBe(true);
    expect(lines.join('\n')).not.toContain(KEY);
    expect(s.stats.lastAuthorization).toBe(`Bearer ${KEY}`);
  });

  it('fails the batch with a SluiceError naming provider, model and host (never the key) when retries run out', async () => {
    const s = await server({ failRate: 1 });
    const { lines, logger } = captureLogger();
    const embedder = createOpenAIEmbedder(config(s, { max_retries: 2 }), { logger, retryBaseMs: 5 });
    const err = await embedder.embed(['x', 'y']).catch((e) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect(err.kind).toBe('embedding');
    expect(err.transient).toBe(true);
    expect(err.message).toContain('openai');
    expect(err.message).toContain('text-embedding-3-small');
    expect(err.message).toContain(new URL(s.url).host);
    expect(err.message).toContain('after 3 attempts');
    expect(err.hint).toMatch(/run the sync again/);
    expect(s.stats.requests).toBe(3);
    expect(JSON.stringify({ m: err.message, h: err.hint }) + lines.join('')).not.toContain(KEY);
  });

  it('does not retry a rejected key, and says what to check', async () => {
    const s = await server({ apiKey: 'the-right-key' });
    const embedder = createOpenAIEmbedder(config(s), { logger: captureLogger().logger });
    const err = await embedder.embed(['x']).catch((e) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect(err.hint).toContain('embedding.api_key');
    expect(s.stats.requests).toBe(1);
    expect(err.message).not.toContain(KEY);
  });

  it('honours Retry-After from a 429', async () => {
    const s = await server({ failRate: 1, retryAfterSeconds: '1' });
    const embedder = createOpenAIEmbedder(config(s, { max_retries: 1 }), { logger: captureLogger().logger, retryBaseMs: 1 });
    const started = Date.now();
    await embedder.embed(['x']).catch(() => {});
    // The injected failure is a 429 or a 500 (random); seed 42 gives a 429 first.
    const waited = Date.now() - started;
    expect(waited).toBeGreaterThanOrEqual(950);
  });

  it('times out slow requests (timeout_ms), retries them, then fails with a clear error', async () => {
    const s = await server({ latencyMs: 400 });
    const embedder = createOpenAIEmbedder(config(s, { timeout_ms: 100, max_retries: 1 }), {
      logger: captureLogger().logger,
      retryBaseMs: 5,
    });
    const err = await embedder.embed(['slow']).catch((e) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect(err.kind).toBe('embedding');
    expect(err.message).toMatch(/timed out/i);
    expect(err.message).toContain('after 2 attempts');
    expect(err.transient).toBe(true);
  });

  it('stops waiting when the sync is interrupted', async () => {
    const s = await server({ failRate: 1, retryAfterSeconds: '30' });
    const embedder = createOpenAIEmbedder(config(s, { max_retries: 5 }), { logger: captureLogger().logger });
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 200);
    const started = Date.now();
    const err = await embedder.embed(['x'], abort.signal).catch((e) => e);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(err).toBeInstanceOf(SluiceError);
    expect(err.kind).toBe('interrupted');
  });

  it('`stop` keeps unsent requests from being sent, and answers the one already sent', async () => {
    const s = await server({ latencyMs: 300 });
    const embedder = createOpenAIEmbedder(config(s, { batch_size: 2, concurrency: 1 }), { logger: captureLogger().logger });
    const stop = new AbortController();
    // Three requests of two texts each; only the first is sent when the stop comes.
    const call = embedder.embed(texts(6), undefined, stop.signal).then(
      (r) => r,
      (e: unknown) => e,
    );
    await vi.waitFor(() => expect(s.stats.requests).toBe(1));
    stop.abort();
    const err = await call;
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).kind).toBe('interrupted');
    expect((err as SluiceError).message).toMatch(/not sent: the run is stopping/);
    // The request in flight was answered (the provider did the work), the others never went out.
    await new Promise((r) => setTimeout(r, 500));
    expect(s.stats.requests).toBe(1);
    expect(s.stats.inputs).toBe(2);
    // A stop during a retry's back-off ends the wait, with no further attempt.
    const failing = await server({ failRate: 1, retryAfterSeconds: '30' });
    const retrying = createOpenAIEmbedder(config(failing, { max_retries: 5 }), { logger: captureLogger().logger });
    const stopRetries = new AbortController();
    setTimeout(() => stopRetries.abort(), 200);
    const started = Date.now();
    const retryErr = await retrying.embed(['x'], undefined, stopRetries.signal).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(5000);
    expect((retryErr as SluiceError).kind).toBe('interrupted');
    expect(failing.stats.requests).toBe(1);
  });

  it('keeps at most `concurrency` requests in flight', async () => {
    const s = await server({ latencyMs: 40 });
    const embedder = createOpenAIEmbedder(config(s, { batch_size: 10, concurrency: 2 }), { logger: captureLogger().logger });
    const started = Date.now();
    // One embed() call bigger than batch_size is packed into 8 requests.
    const result = await embedder.embed(texts(80));
    expect(result.requests).toBe(8);
    expect(s.stats.maxInFlight).toBe(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(4 * 40);
  });

  it('paces requests to requests_per_minute and tokens_per_minute', async () => {
    const s = await server();
    // 120/min: a 20-request burst, then two a second.
    const rpm = createOpenAIEmbedder(config(s, { batch_size: 1, concurrency: 8, requests_per_minute: 120 }), {
      logger: captureLogger().logger,
    });
    let started = Date.now();
    await rpm.embed(texts(22));
    const rpmElapsed = Date.now() - started;
    expect(rpmElapsed).toBeGreaterThanOrEqual(950);
    // tokens_per_minute: a burst of ten seconds' worth, then the per-minute rate. Sized so that
    // the burst covers 1/1.15 of the input and the rest waits ~1.5 s.
    const input = texts(120, 'tokens paced');
    const total = input.reduce((n, t) => n + rpm.countTokens(t), 0);
    const tpm = createOpenAIEmbedder(config(s, { batch_size: 4, concurrency: 8, tokens_per_minute: (6 * total) / 1.15 }), {
      logger: captureLogger().logger,
    });
    started = Date.now();
    await tpm.embed(input);
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(1200);
    expect(elapsed).toBeLessThan(4000); // paced by real tokens, not a crude upper bound
  });

  it('packs big batches within 2,048 inputs and 300,000 tokens per request (the server enforces the limits)', async () => {
    const s = await server();
    const embedder = createOpenAIEmbedder(config(s, { dimensions: 8 }), { logger: captureLogger().logger });
    const many = texts(5000);
    const r1 = await embedder.embed(many);
    expect(r1.vectors).toHaveLength(5000);
    expect(s.stats.maxInputsPerRequest).toBeLessThanOrEqual(2048);
    expect(r1.requests).toBe(3);
    // 40 inputs of ~8,000 tokens each: 320,000 tokens must go in two requests.
    const long = Array.from({ length: 40 }, (_, i) => `${i}` + ' hello'.repeat(8000));
    const r2 = await embedder.embed(long);
    expect(r2.vectors).toHaveLength(40);
    expect(s.stats.rejected).toBe(0);
    expect(s.stats.maxTokensPerRequest).toBeLessThanOrEqual(300_000);
    expect(r2.requests).toBe(2);
    // An input over 8,191 tokens is refused before any request is made.
    const before = s.stats.requests;
    const err = await embedder.embed(['ok', ' hello'.repeat(9000)]).catch((e) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect(err.message).toMatch(/9000 tokens/);
    expect(s.stats.requests).toBe(before);
  }, 30_000);

  it('talks to Azure OpenAI deployments with the api-key header', async () => {
    const s = await server({ dimensionsDefault: 1536 });
    const embedder = createEmbedder(
      EmbeddingConfigSchema.parse({
        provider: 'azure-openai',
        endpoint: s.origin,
        deployment: 'my-embeddings',
        model: 'text-embedding-ada-002',
        api_key: KEY,
      }),
      captureLogger(),
    );
    expect(embedder.dimensions).toBe(1536);
    const r = await embedder.embed(['hello']);
    expect(r.vectors[0]).toEqual(fixtureVector('hello', 1536));
    expect(s.stats.lastAuthorization).toBe(`api-key ${KEY}`);
  });

  it('openai-compatible: needs base_url and model; checks the vector size it gets', async () => {
    const s = await server({ dimensionsDefault: 1536 });
    const { logger } = captureLogger();
    expect(() => createEmbedder({ provider: 'openai-compatible', model: 'my-model' }, { logger })).toThrow(
      expect.objectContaining({ where: 'embedding.base_url' }),
    );
    const unknownSize = (() => {
      try {
        createEmbedder({ provider: 'openai-compatible', base_url: s.url, model: 'my-model' }, { logger });
      } catch (e) {
        return e as SluiceError;
      }
    })();
    expect(unknownSize).toBeInstanceOf(SluiceError);
    expect(unknownSize?.kind).toBe('config');
    expect(unknownSize?.where).toBe('embedding.dimensions');
    // Known open models have a known size; a wrong declared size is caught on the first response.
    expect(
      createEmbedder({ provider: 'openai-compatible', base_url: s.url, model: 'nomic-embed-text:latest' }, { logger }).dimensions,
    ).toBe(768);
    // Input limits: built in for known models (with a margin for their own tokenizers), configurable for others.
    expect(createEmbedder({ provider: 'openai-compatible', base_url: s.url, model: 'mxbai-embed-large' }, { logger }).maxInputTokens).toBe(
      409,
    );
    expect(
      createEmbedder(
        { provider: 'openai-compatible', base_url: s.url, model: 'bge-small', dimensions: 384, max_input_tokens: 512 },
        { logger },
      ).maxInputTokens,
    ).toBe(512);
    // A configured size is asked for (Matryoshka models on vLLM/TEI/Ollama honour it)…
    const asked = createEmbedder({ provider: 'openai-compatible', base_url: s.url, model: 'my-model', dimensions: 256 }, { logger });
    expect((await asked.embed(['x'])).vectors[0]).toHaveLength(256);
    // …and a server that ignores it is caught on the first response.
    const fixed = await server({ dimensionsDefault: 1536, ignoreDimensions: true });
    const wrong = createEmbedder({ provider: 'openai-compatible', base_url: fixed.url, model: 'my-model', dimensions: 768 }, { logger });
    const err = await wrong.embed(['x']).catch((e) => e);
    expect(err.message).toMatch(/1536-dimensional vectors, but 768 were expected/);
    expect(
      createEmbedder({ provider: 'openai-compatible', base_url: s.url, model: 'my-model', dimensions: 1536 }, { logger })
        .pricePerMillionTokens,
    ).toBeUndefined();
  });

  it('knows native sizes and prices of OpenAI models, and refuses impossible dimensions', () => {
    const { logger } = captureLogger();
    const small = createEmbedder({ provider: 'openai', api_key: KEY }, { logger });
    expect([small.model, small.dimensions, small.pricePerMillionTokens, small.maxInputTokens]).toEqual([
      'text-embedding-3-small',
      1536,
      0.02,
      8191,
    ]);
    const large = createEmbedder({ provider: 'openai', api_key: KEY, model: 'text-embedding-3-large', dimensions: 256 }, { logger });
    expect([large.dimensions, large.pricePerMillionTokens]).toEqual([256, 0.13]);
    expect(createEmbedder({ provider: 'openai', api_key: KEY, model: 'text-embedding-ada-002' }, { logger }).pricePerMillionTokens).toBe(
      0.1,
    );
    expect(createEmbedder({ provider: 'openai', api_key: KEY, price_per_million_tokens: 0.5 }, { logger }).pricePerMillionTokens).toBe(0.5);
    expect(() =>
      createEmbedder({ provider: 'openai', api_key: KEY, model: 'text-embedding-ada-002', dimensions: 256 }, { logger }),
    ).toThrow(/always gives 1536/);
  });
});

describe('decodeEmbedding', () => {
  it('decodes base64 of any length (with and without padding) into standalone vectors', () => {
    for (const n of [1, 2, 3, 7, 256]) {
      const v = Float32Array.from({ length: n }, (_, i) => i * 0.37 - 1);
      const decoded = decodeEmbedding(Buffer.from(v.buffer).toString('base64'));
      expect(decoded).toEqual(v);
      expect(decoded.byteOffset).toBe(0);
      expect(decoded.buffer.byteLength).toBe(n * 4);
    }
  });
});

describe('decodeEmbeddings', () => {
  it('decodes a whole response into views of one buffer, or one by one when sizes differ', async () => {
    const { decodeEmbeddings } = await import('../../src/embedding/openai.ts');
    const vs = [0, 1, 2].map((k) => Float32Array.from({ length: 5 }, (_, i) => k * 10 + i + 0.25));
    const b64 = vs.map((v) => Buffer.from(v.buffer).toString('base64'));
    const slab = decodeEmbeddings(b64, 5);
    expect(slab).toEqual(vs);
    expect(slab[1].buffer).toBe(slab[0].buffer);
    expect(slab[2].byteOffset).toBe(40);
    const mixed = decodeEmbeddings([b64[0], [1, 2, 3, 4, 5]], 5);
    expect(mixed).toEqual([vs[0], Float32Array.from([1, 2, 3, 4, 5])]);
    const wrongSize = decodeEmbeddings([Buffer.from(new Float32Array(3).buffer).toString('base64')], 5);
    expect(wrongSize[0].length).toBe(3); // left for the caller's dimension check to report
  });
});
