// Async-iterator plumbing for the sync pipeline: bounded, ordered, with backpressure.

/**
 * Maps items through `fn` with up to `concurrency` calls in flight, yielding results in input
 * order. A finished head is yielded without waiting for the (possibly idle) input.
 */
export async function* mapOrdered<T, U>(input: AsyncIterable<T>, fn: (item: T) => Promise<U>, concurrency: number): AsyncGenerator<U> {
  const it = input[Symbol.asyncIterator]();
  const queue: Promise<U>[] = [];
  let next: Promise<IteratorResult<T>> | undefined;
  let done = false;
  const start = (item: T) => {
    const p = fn(item);
    p.catch(() => undefined); // observed when it reaches the head
    queue.push(p);
  };
  try {
    for (;;) {
      if (!done && !next && queue.length < concurrency) next = it.next();
      if (!queue.length) {
        if (done || !next) return;
        const r = await next;
        next = undefined;
        if (r.done) done = true;
        else start(r.value);
        continue;
      }
      if (next) {
        const pulled = next;
        const winner = await Promise.race([
          queue[0].then(() => 'head' as const),
          pulled.then(
            () => 'input' as const,
            () => 'input' as const,
          ),
        ]);
        if (winner === 'input') {
          let r: IteratorResult<T>;
          try {
            r = await pulled;
          } catch (err) {
            // The input failed: what was already taken in (a STATE among it) still goes out first,
            // so the writer commits everything read before the failure.
            done = true;
            while (queue.length) yield await queue.shift()!;
            throw err;
          }
          next = undefined;
          if (r.done) done = true;
          else start(r.value);
          continue;
        }
      }
      yield await queue.shift()!;
    }
  } finally {
    if (!done) await it.return?.();
  }
}

/**
 * A running value over the group being filled, so `isFull` need not rescan the group for each item:
 * `start()` when the group's first item joins, then `add(tally, item)` for each item as it joins, in
 * order (the first one too); whatever `add` returns is the tally from then on (it may update the
 * value given and return it). One `start()` per group, nothing allocated per item by the grouping.
 */
export type GroupTally<T, A> = { start: () => A; add: (tally: A, item: T) => A };

export type GroupOptions<T, A = undefined> = {
  /** Whether `group` is full before `next` joins it; `tally` is over exactly the items of `group`. */
  isFull: (group: T[], next: T, tally: A) => boolean;
  closesGroup: (item: T) => boolean;
  lingerMs: number;
} & ([A] extends [undefined] ? { tally?: undefined } : { tally: GroupTally<T, A> });

/**
 * Groups items into arrays. A group closes when `isFull(group, next, tally)` says so, when
 * `closesGroup(item)` (the item is included last), or when the input has been idle for `lingerMs`
 * with a partial group waiting (keeps latency low for slow streams such as CDC).
 */
export function groupItems<T, A = undefined>(input: AsyncIterable<T>, opts: GroupOptions<T, A>): AsyncGenerator<T[]> {
  return grouped(input, opts, (item: T) => [item]);
}

/**
 * groupItems for input that comes in arrays (src/engine/sync.ts documents(), the sweep): the same
 * groups, closed by the same rules, but one step per input array rather than per item; the idle
 * wait (lingerMs) runs between arrays.
 */
export function groupBatches<T, A = undefined>(input: AsyncIterable<T[]>, opts: GroupOptions<T, A>): AsyncGenerator<T[]> {
  return grouped(input, opts, (items: T[]) => items);
}

/** groupItems and groupBatches: `itemsOf` gives the items of one input value (it, or the array it is). */
async function* grouped<V, T, A>(input: AsyncIterable<V>, opts: GroupOptions<T, A>, itemsOf: (value: V) => T[]): AsyncGenerator<T[]> {
  const it = input[Symbol.asyncIterator]();
  // Read once, not per item: the stages' options differ in shape, so reading them per item is a
  // polymorphic property look-up (measured: ~25% more CPU for groupBatches in a process with both).
  const { isFull, closesGroup, lingerMs } = opts;
  const tally = opts.tally as GroupTally<T, A> | undefined;
  let group: T[] = [];
  // The tally of `group` while it has items (without opts.tally: undefined, which A is then).
  let groupTally = undefined as A;
  let pending: Promise<IteratorResult<V>> | undefined;
  let done = false;
  // One idle timer per group, not one timer and promise per item (thousands per second on a fast
  // source): it fires lingerMs after the group started, and when an item came since, re-arms for
  // the rest of lingerMs after that item; so it resolves only after lingerMs without input.
  let lastItemAt = 0;
  let idle: Promise<'idle'> | undefined;
  let timer: NodeJS.Timeout | undefined;
  const armIdle = () => {
    idle = new Promise<'idle'>((resolve) => {
      const check = () => {
        const wait = lastItemAt + lingerMs - performance.now();
        if (wait > 0) timer = setTimeout(check, wait);
        else resolve('idle');
      };
      timer = setTimeout(check, lingerMs);
    });
  };
  const disarmIdle = () => {
    clearTimeout(timer);
    idle = undefined;
  };
  try {
    for (;;) {
      pending ??= it.next();
      let r: IteratorResult<V> | 'idle';
      if (group.length) {
        if (!idle) armIdle();
        r = await Promise.race([pending, idle!]);
      } else r = await pending;
      if (r === 'idle') {
        disarmIdle();
        yield group;
        group = [];
        continue;
      }
      pending = undefined;
      lastItemAt = performance.now();
      if (r.done) {
        done = true;
        if (group.length) yield group;
        return;
      }
      for (const item of itemsOf(r.value)) {
        if (group.length && isFull(group, item, groupTally)) {
          disarmIdle();
          yield group;
          group = [];
        }
        if (tally) {
          // A closed group's tally stays behind with it: each group starts its own.
          if (!group.length) groupTally = tally.start();
          groupTally = tally.add(groupTally, item);
        }
        group.push(item);
        if (closesGroup(item)) {
          disarmIdle();
          yield group;
          group = [];
        }
      }
    }
  } finally {
    clearTimeout(timer);
    if (!done) await it.return?.();
  }
}

/** The items of arrays one by one (where a later stage takes single messages). */
export async function* eachOf<T>(batches: AsyncIterable<T[]>): AsyncGenerator<T> {
  for await (const batch of batches) yield* batch;
}

/** Single items as arrays of one (for callers of a stage that takes arrays). */
export async function* asBatches<T>(items: AsyncIterable<T>): AsyncGenerator<T[]> {
  for await (const item of items) yield [item];
}

/** Runs `save` on queued items one batch at a time, in order, off the caller's path. */
export class BackgroundSaver<T> {
  private queue: T[] = [];
  private running: Promise<void> | undefined;
  private failure: { error: unknown } | undefined;

  constructor(private readonly save: (batch: T[]) => Promise<void>) {}

  push(item: T): void {
    if (this.failure) throw this.failure.error;
    this.queue.push(item);
    this.running ??= this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) await this.save(this.queue.splice(0));
    } catch (error) {
      this.failure = { error };
    } finally {
      this.running = undefined;
    }
  }

  /** Waits until everything queued is saved; throws the first failure. */
  async flush(): Promise<void> {
    while (this.running) await this.running;
    if (this.failure) throw this.failure.error;
  }
}
