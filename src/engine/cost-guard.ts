// The cost guard (embedding.max_cost_usd / sync --max-cost): a connection's run stops before the
// embedding request that would take its spend over the limit. Requests are priced from their
// token counts before they are sent; what was embedded before the stop is written and committed.
import { estimateCostUsd } from '../embedding/index.ts';
import type { Embedder } from '../embedding/types.ts';
import { SluiceError } from '../protocol/errors.ts';

/** Rounds a dollar amount for people: cents when large, enough digits when tiny. */
export function formatUsd(usd: number): string {
  if (usd === 0) return '$0';
  if (usd >= 1) return `$${usd.toFixed(2)}`;
  // Two significant digits, in plain notation ($0.00000054, not $5.4e-7).
  const digits = usd.toFixed(Math.min(12, Math.max(2, 1 - Math.floor(Math.log10(usd)))));
  return `$${digits.replace(/(\.\d\d\d*?)0+$/, '$1')}`;
}

/** The run hit its cost limit; the engine stops reading, commits what came before, then fails with it. */
export class CostLimitError extends SluiceError {}

/** One place in line: reservations are decided in the order the engine's batches were formed. */
export interface CostTurn {
  /** Waits for the earlier turns, then reserves `tokens` or throws CostLimitError (never sends). */
  reserve(tokens: number): Promise<CostReservation>;
  /** Gives the turn up without reserving (a batch with nothing to embed, or a failure). Idempotent. */
  release(): void;
}

export interface CostReservation {
  /** The request went through: `tokens` were billed. */
  paid(tokens: number): void;
  /** The request failed: nothing is charged for it. */
  cancel(): void;
}

export class CostGuard {
  /** USD billed by finished requests of this run. */
  spentUsd = 0;
  private reservedUsd = 0;
  private tail: Promise<void> = Promise.resolve();
  /** Set once the limit was reached: every later request is refused the same way. */
  stopped: CostLimitError | undefined;

  constructor(
    readonly limitUsd: number,
    private readonly pricePerMillionTokens: number,
    /** Which setting set the limit, for messages: `embedding.max_cost_usd` or `--max-cost`. */
    private readonly source: string,
    private readonly connection: string,
  ) {}

  /**
   * The guard for a connection, or undefined when it has no limit. A limit without a known price
   * cannot be kept, so it is refused before anything is read.
   */
  static for(
    connection: string,
    embedder: Embedder | undefined,
    limit: { usd: number; source: string } | undefined,
  ): CostGuard | undefined {
    if (!limit || !embedder) return undefined;
    const perMillion = estimateCostUsd(1_000_000, embedder);
    if (perMillion === undefined)
      throw new SluiceError(
        `a cost limit is set (${limit.source} ${limit.usd}) but the price of ${embedder.provider} model ${embedder.model} is not known`,
        {
          kind: 'config',
          where: `connection ${connection}, embedding.price_per_million_tokens`,
          hint: 'set embedding.price_per_million_tokens (USD per 1M tokens; 0 for a free self-hosted model) or remove the limit',
        },
      );
    return new CostGuard(limit.usd, perMillion, limit.source, connection);
  }

  costOf(tokens: number): number {
    return (tokens / 1_000_000) * this.pricePerMillionTokens;
  }

  /** Takes the next place in line; call in batch order (synchronously, as batches are started). */
  turn(): CostTurn {
    const previous = this.tail;
    let settle!: () => void;
    this.tail = new Promise<void>((resolve) => (settle = resolve));
    return {
      reserve: async (tokens) => {
        try {
          await previous;
          return this.reserveNow(tokens);
        } finally {
          settle();
        }
      },
      release: () => settle(),
    };
  }

  private reserveNow(tokens: number): CostReservation {
    if (this.stopped) throw this.stopped;
    const cost = this.costOf(tokens);
    // A little slack for floating-point sums: a limit of exactly the cost of the run is kept.
    if (this.spentUsd + this.reservedUsd + cost > this.limitUsd * (1 + 1e-9)) {
      this.stopped = new CostLimitError(
        `stopped before an embedding request of ${tokens} tokens (${formatUsd(cost)}) that would take the run over its cost limit: ` +
          `${formatUsd(this.spentUsd + this.reservedUsd)} spent of ${formatUsd(this.limitUsd)} (${this.source}); everything embedded before it was written and committed`,
        {
          kind: 'embedding',
          where: `connection ${this.connection}, ${this.source}`,
          hint: `raise ${this.source} to continue further in one run, or run the sync again: it resumes from the last checkpoint, and text already embedded comes from the cache at no cost`,
        },
      );
      throw this.stopped;
    }
    this.reservedUsd += cost;
    let open = true;
    const close = () => {
      if (!open) return false;
      open = false;
      this.reservedUsd -= cost;
      return true;
    };
    return {
      paid: (billed) => {
        if (close()) this.spentUsd += this.costOf(billed);
      },
      cancel: () => void close(),
    };
  }
}

/**
 * Seconds that `requests` requests of `tokens` tokens in all take under client-side pacing: the
 * rate limiter (src/embedding/rate-limit.ts) starts with ten seconds' worth and then keeps the
 * steady rate. Undefined without a rate limit (then latency and concurrency decide).
 */
export function pacedSeconds(requests: number, tokens: number, limits: { requests_per_minute?: number; tokens_per_minute?: number }) {
  const seconds = (amount: number, perMinute: number | undefined) =>
    perMinute ? (Math.max(0, amount - Math.max(1, perMinute / 6)) / perMinute) * 60 : undefined;
  const r = seconds(requests, limits.requests_per_minute);
  const t = seconds(tokens, limits.tokens_per_minute);
  if (r === undefined && t === undefined) return undefined;
  return Math.max(r ?? 0, t ?? 0);
}
