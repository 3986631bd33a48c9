// Retry with jittered exponential backoff, honouring server hints (Retry-After, x-ratelimit-reset-*).
// Shared by embedding providers, HTTP destinations and the connector kit.
import { setTimeout as sleep } from 'node:timers/promises';

export interface RetryOptions {
  maxRetries: number;
  /** First backoff step, doubled each attempt (full jitter). */
  baseMs?: number;
  maxMs?: number;
  signal?: AbortSignal;
  /** Whether the error is worth another attempt (default: `isRetryableError`). */
  isRetryable?: (err: unknown) => boolean;
  /** Called before each wait, e.g. to log. */
  onRetry?: (err: unknown, attempt: number, waitMs: number) => void;
}

export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const base = opts.baseMs ?? 250;
  const max = opts.maxMs ?? 30_000;
  const retryable = opts.isRetryable ?? isRetryableError;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= opts.maxRetries || !retryable(err) || opts.signal?.aborted) throw err;
      const hinted = retryAfterMs(err);
      const backoff = Math.random() * Math.min(max, base * 2 ** attempt);
      const wait = hinted !== undefined ? Math.min(max, hinted + Math.random() * base) : backoff;
      opts.onRetry?.(err, attempt + 1, wait);
      await sleep(wait, undefined, opts.signal ? { signal: opts.signal } : undefined);
    }
  }
}

/** HTTP status of an error from fetch-based clients (openai, qdrant, pinecone) or a plain object. */
export function httpStatus(err: unknown): number | undefined {
  const e = err as { status?: unknown; statusCode?: unknown; response?: { status?: unknown } } | undefined;
  const s = e?.status ?? e?.statusCode ?? e?.response?.status;
  return typeof s === 'number' ? s : undefined;
}

const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** 408, 409 (conflict under load), 425, 429, 5xx, timeouts and dropped connections. */
export function isRetryableError(err: unknown): boolean {
  const status = httpStatus(err);
  if (status !== undefined) return status === 408 || status === 425 || status === 429 || status >= 500;
  const e = err as { code?: unknown; name?: unknown; cause?: unknown } | undefined;
  if (typeof e?.code === 'string' && TRANSIENT_CODES.has(e.code)) return true;
  // openai v6 (and other fetch clients) leave `name` as "Error"; their class names tell.
  const kinds = [e?.name, (err as object | undefined)?.constructor?.name];
  if (kinds.some((k) => k === 'TimeoutError' || k === 'APIConnectionError' || k === 'APIConnectionTimeoutError')) return true;
  if (e?.cause && e.cause !== err) return isRetryableError(e.cause);
  return false;
}

/** Reads Retry-After (seconds or HTTP date), retry-after-ms, and x-ratelimit-reset-* ("1s", "6m0s", "20ms"). */
export function retryAfterMs(err: unknown): number | undefined {
  const headers =
    (err as { headers?: unknown; response?: { headers?: unknown } } | undefined)?.headers ??
    (err as { response?: { headers?: unknown } } | undefined)?.response?.headers;
  if (!headers) return undefined;
  const get = (name: string): string | undefined => {
    if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
    const v = (headers as Record<string, unknown>)[name];
    return typeof v === 'string' ? v : undefined;
  };
  const ms = get('retry-after-ms');
  if (ms && Number.isFinite(Number(ms))) return Number(ms);
  const ra = get('retry-after');
  if (ra) {
    if (Number.isFinite(Number(ra))) return Number(ra) * 1000;
    const date = Date.parse(ra);
    if (Number.isFinite(date)) return Math.max(0, date - Date.now());
  }
  const resets = [get('x-ratelimit-reset-requests'), get('x-ratelimit-reset-tokens')]
    .map(parseDuration)
    .filter((x): x is number => x !== undefined);
  return resets.length ? Math.max(...resets) : undefined;
}

/** "1s", "6m0s", "20ms", "1h2m3.5s" → milliseconds. */
export function parseDuration(text: string | undefined): number | undefined {
  if (!text) return undefined;
  let total = 0;
  let matched = false;
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) {
    matched = true;
    const n = Number(m[1]);
    total += m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n * 3_600_000;
  }
  return matched ? total : undefined;
}
