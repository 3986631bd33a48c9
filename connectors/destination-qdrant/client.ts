// The Qdrant REST client, wrapped so every call retries transient failures and fails with a
// SluiceError that says what failed and what to do (never the API key).
import { QdrantClient } from '@qdrant/js-client-rest';
import type { Logger } from '../../src/protocol/connector.ts';
import { SluiceError, describeUnknown } from '../../src/protocol/errors.ts';
import { httpStatus, isRetryableError, retry } from '../../src/net/retry.ts';
import type { QdrantConfig } from './config.ts';

export interface Qdrant {
  client: QdrantClient;
  /** Runs one API call with retries; `what` names it in errors ("upsert into collection docs_3"). */
  call<T>(what: string, fn: (attempt: number) => Promise<T>): Promise<T>;
  /** The url without credentials, for messages. */
  where: string;
}

export function connectQdrant(config: QdrantConfig, logger: Logger): Qdrant {
  const url = new URL(config.url);
  const where = `Qdrant at ${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
  if (config.api_key && url.protocol === 'http:' && !loopback) {
    logger.warn({ url: where }, 'the Qdrant API key is sent over plain http; use an https:// url');
  }
  // The key goes in a header we set ourselves: the client's `apiKey` option would print its own
  // warning to the console for http urls and switch loopback test urls to https.
  const client = new QdrantClient({
    url: config.url,
    headers: config.api_key ? { 'api-key': config.api_key } : {},
    timeout: config.timeout_seconds * 1000,
    checkCompatibility: false,
    maxConnections: Math.max(8, config.concurrency * 2),
  });
  return {
    client,
    where,
    async call<T>(what: string, fn: (attempt: number) => Promise<T>): Promise<T> {
      try {
        return await retry(withRetryAfter(fn), {
          maxRetries: config.max_retries,
          baseMs: 200,
          maxMs: 10_000,
          isRetryable: isRetryableQdrantError,
          onRetry: (err, attempt, waitMs) =>
            logger.debug({ attempt, waitMs: Math.round(waitMs), error: errorText(err) }, `Qdrant ${what}: retrying`),
        });
      } catch (err) {
        throw qdrantError(err, what, where);
      }
    },
  };
}

/**
 * The client turns a 429 carrying Retry-After into QdrantClientResourceExhaustedError, which keeps
 * the delay as `retry_after` (seconds) but drops the headers: put it back where retry() looks.
 */
function withRetryAfter<T>(fn: (attempt: number) => Promise<T>): (attempt: number) => Promise<T> {
  return async (attempt) => {
    try {
      return await fn(attempt);
    } catch (err) {
      const e = err as { name?: string; retry_after?: unknown; headers?: unknown };
      if (e?.name === 'QdrantClientResourceExhaustedError' && typeof e.retry_after === 'number' && e.headers === undefined) {
        e.headers = { 'retry-after': String(e.retry_after) };
      }
      throw err;
    }
  };
}

/** 429 (with or without Retry-After), 5xx, client timeouts, dropped connections. */
export function isRetryableQdrantError(err: unknown): boolean {
  const name = (err as { name?: unknown } | undefined)?.name;
  if (name === 'QdrantClientResourceExhaustedError' || name === 'QdrantClientTimeoutError') return true;
  return isRetryableError(err);
}

/** Qdrant's own explanation (`{"status": {"error": "..."}}`) when there is one. */
export function errorText(err: unknown): string {
  const data = (err as { data?: { status?: { error?: unknown } } } | undefined)?.data;
  const text = data?.status?.error;
  if (typeof text === 'string') return text;
  return describeUnknown(err);
}

export function qdrantError(err: unknown, what: string, where: string): SluiceError {
  if (err instanceof SluiceError) return err;
  const status = httpStatus(err);
  const text = errorText(err);
  const transient = isRetryableQdrantError(err);
  if (status === 401 || status === 403) {
    return new SluiceError(`${where} refused ${what}: ${status === 401 ? 'not authenticated' : 'not allowed'} (${status})`, {
      kind: 'connection',
      where,
      hint: 'check api_key in the destination config (a key with write access is needed)',
      cause: err,
    });
  }
  if (status === undefined && !(err as { name?: string } | undefined)?.name?.startsWith('Qdrant')) {
    return new SluiceError(`cannot reach ${where} (${what}): ${describeCause(err)}`, {
      kind: 'connection',
      where,
      hint: 'check the url in the destination config and that Qdrant is running',
      cause: err,
      transient,
    });
  }
  const after = transient ? ' (gave up after retries)' : '';
  return new SluiceError(`Qdrant ${what} failed${status ? ` with HTTP ${status}` : ''}${after}: ${text}`, {
    kind: 'destination',
    where,
    hint: transient ? 'Qdrant is overloaded or unavailable; retry later or lower `concurrency`' : undefined,
    cause: err,
    transient,
  });
}

function describeCause(err: unknown): string {
  const cause = (err as { cause?: unknown } | undefined)?.cause;
  return cause ? describeUnknown(cause) : describeUnknown(err);
}
