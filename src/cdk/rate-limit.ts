// A proactive request limiter for API sources: requests start at most `perSecond` a second (evenly
// spaced) and `perMinute` in any 60-second window, first come first served. One limiter is shared
// by every stream of a read (HttpClient makes one per read), so streams together stay under the
// API's limit instead of bouncing off 429s. A Retry-After from the server pauses everyone.
import { setTimeout as sleep } from 'node:timers/promises';
import { SluiceError } from '../protocol/errors.ts';

export interface RateLimitOptions {
  perSecond?: number;
  perMinute?: number;
}

export class RequestRateLimiter {
  private readonly spacingMs: number;
  private readonly perMinute?: number;
  /** Start times within the last minute (only kept with perMinute). */
  private readonly window: number[] = [];
  private nextStart = 0;
  private pausedUntil = 0;
  private queue: Promise<void> = Promise.resolve();

  constructor(opts: RateLimitOptions) {
    for (const [k, v] of Object.entries(opts))
      if (v !== undefined && !(typeof v === 'number' && v > 0 && Number.isFinite(v)))
        throw new SluiceError(`rate limit ${k} must be a positive number, not ${JSON.stringify(v)}`, { kind: 'config' });
    this.spacingMs = opts.perSecond ? 1000 / opts.perSecond : 0;
    this.perMinute = opts.perMinute;
  }

  /** Waits for this request's turn. */
  acquire(signal?: AbortSignal): Promise<void> {
    const turn = this.queue.then(async () => {
      for (;;) {
        const now = Date.now();
        while (this.window.length && this.window[0] <= now - 60_000) this.window.shift();
        let at = Math.max(this.nextStart, this.pausedUntil);
        if (this.perMinute && this.window.length >= this.perMinute) at = Math.max(at, this.window[0] + 60_000);
        if (at <= now) break;
        await sleep(at - now, undefined, signal ? { signal } : undefined);
      }
      const now = Date.now();
      this.nextStart = now + this.spacingMs;
      if (this.perMinute) this.window.push(now);
    });
    // A waiter that was aborted must not block the ones behind it.
    this.queue = turn.catch(() => {});
    return turn;
  }

  /** The server asked to wait (Retry-After): no request starts before then. */
  pause(ms: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, Date.now() + ms);
  }
}
