import { describe, expect, it } from 'vitest';
import { APIConnectionError, APIConnectionTimeoutError, RateLimitError } from 'openai';
import { isRetryableError, parseDuration, retry, retryAfterMs } from '../../src/net/retry.ts';

describe('retry', () => {
  it('classifies HTTP statuses and network failures', () => {
    expect(isRetryableError({ status: 429 })).toBe(true);
    expect(isRetryableError({ status: 503 })).toBe(true);
    expect(isRetryableError({ status: 400 })).toBe(false);
    expect(isRetryableError({ status: 401 })).toBe(false);
    expect(isRetryableError(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isRetryableError(new Error('bad input'))).toBe(false);
  });

  it('recognises the openai client’s connection errors by class', () => {
    expect(isRetryableError(new APIConnectionError({ message: 'down' }))).toBe(true);
    expect(isRetryableError(new APIConnectionTimeoutError())).toBe(true);
    expect(isRetryableError(new RateLimitError(429, undefined, 'slow down', new Headers()))).toBe(true);
  });

  it('reads Retry-After, retry-after-ms and x-ratelimit-reset-* hints', () => {
    expect(retryAfterMs({ headers: new Headers({ 'retry-after': '2' }) })).toBe(2000);
    expect(retryAfterMs({ headers: { 'retry-after-ms': '150' } })).toBe(150);
    expect(retryAfterMs({ headers: new Headers({ 'x-ratelimit-reset-requests': '1s', 'x-ratelimit-reset-tokens': '6m0s' }) })).toBe(
      360_000,
    );
    expect(parseDuration('1h2m3.5s')).toBe(3_723_500);
    expect(parseDuration('20ms')).toBe(20);
  });

  it('retries transient failures, then gives up with the last error', async () => {
    let calls = 0;
    const ok = await retry(
      async () => {
        if (++calls < 3) throw { status: 500 };
        return 'done';
      },
      { maxRetries: 5, baseMs: 1 },
    );
    expect([ok, calls]).toEqual(['done', 3]);
    calls = 0;
    await expect(
      retry(
        async () => {
          calls++;
          throw { status: 400 };
        },
        { maxRetries: 5, baseMs: 1 },
      ),
    ).rejects.toEqual({ status: 400 });
    expect(calls).toBe(1);
    calls = 0;
    await expect(
      retry(
        async () => {
          calls++;
          throw { status: 503 };
        },
        { maxRetries: 2, baseMs: 1 },
      ),
    ).rejects.toEqual({ status: 503 });
    expect(calls).toBe(3);
  });
});
