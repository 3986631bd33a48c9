// Client-side pacing for requests_per_minute / tokens_per_minute, so a sync stays under the
// account's limits instead of bouncing off 429s.
import { setTimeout as sleep } from 'node:timers/promises';

class Bucket {
  private level: number;
  private last = Date.now();
  private readonly perMs: number;
  private readonly capacity: number;
  constructor(perMinute: number) {
    this.perMs = perMinute / 60_000;
    // Ten seconds' worth: smooth enough for providers that enforce limits over short windows.
    this.capacity = Math.max(1, perMinute / 6);
    this.level = this.capacity;
  }
  private refill() {
    const now = Date.now();
    this.level = Math.min(this.capacity, this.level + (now - this.last) * this.perMs);
    this.last = now;
  }
  /** Milliseconds until `cost` can be taken (a cost above capacity waits for a full bucket, then goes into debt). */
  waitFor(cost: number): number {
    this.refill();
    const needed = Math.min(cost, this.capacity);
    return this.level >= needed ? 0 : Math.ceil((needed - this.level) / this.perMs);
  }
  take(cost: number) {
    this.level -= cost;
  }
}

export class RateLimiter {
  private readonly requests?: Bucket;
  private readonly tokens?: Bucket;
  private queue: Promise<void> = Promise.resolve();

  constructor(opts: { requestsPerMinute?: number; tokensPerMinute?: number }) {
    if (opts.requestsPerMinute) this.requests = new Bucket(opts.requestsPerMinute);
    if (opts.tokensPerMinute) this.tokens = new Bucket(opts.tokensPerMinute);
  }

  get limitsTokens(): boolean {
    return !!this.tokens;
  }

  get active(): boolean {
    return !!(this.requests || this.tokens);
  }

  /** Waits (first come, first served) until one request of `tokens` tokens fits both limits. */
  acquire(tokens: number, signal?: AbortSignal): Promise<void> {
    if (!this.active) return Promise.resolve();
    const turn = this.queue.then(async () => {
      for (;;) {
        const wait = Math.max(this.requests?.waitFor(1) ?? 0, this.tokens?.waitFor(tokens) ?? 0);
        if (wait === 0) break;
        await sleep(wait, undefined, signal ? { signal } : undefined);
      }
      this.requests?.take(1);
      this.tokens?.take(tokens);
    });
    // A failed (aborted) turn must not block the ones behind it.
    this.queue = turn.catch(() => {});
    return turn;
  }
}
