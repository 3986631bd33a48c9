// Pipelined commits for destination writers: a batch commits in the background while the next one
// is buffered, commits run strictly one after another, and their events (WRITTEN, STATE_COMMITTED)
// come out in order, as soon as each commit ends, even while the input is quiet (a source may wait
// for an acknowledgement before it sends anything more).

/** Commits that run one after another in the background; their events are reported in order. */
export class CommitQueue<E> {
  /** `done` rejects with the commit's failure; `ended` settles with it either way. */
  private readonly queue: Array<{ events?: E[]; done: Promise<void>; ended: Promise<void> }> = [];

  get size(): number {
    return this.queue.length;
  }

  /** Starts `commit` once every commit queued before it has ended (not at all if one failed). */
  push(commit: () => Promise<E[]>): void {
    const previous = this.queue.at(-1)?.done ?? Promise.resolve();
    const done = previous.then(async () => {
      entry.events = await commit();
    });
    const entry: { events?: E[]; done: Promise<void>; ended: Promise<void> } = {
      done,
      ended: done.catch(() => undefined), // the failure is surfaced by settle()
    };
    this.queue.push(entry);
  }

  /** Reports ended commits, and waits until at most `pending` are left; throws a commit's failure. */
  async *settle(pending: number): AsyncGenerator<E> {
    while (this.queue.length > pending || (this.queue.length && this.queue[0].events)) {
      const entry = this.queue.shift()!;
      await entry.done;
      yield* entry.events!;
    }
  }

  /** Settles when the oldest commit still running ends; undefined when none is running. */
  running(): Promise<void> | undefined {
    const head = this.queue[0];
    return head && !head.events ? head.ended : undefined;
  }

  /** Waits for every queued commit, ignoring failures (for cleanup). */
  async drain(): Promise<void> {
    await Promise.all(this.queue.map((e) => e.ended));
  }
}

/**
 * Pulls `input`, yielding `{ value }` per item, and `undefined` whenever `wake()` settles first
 * while an item is awaited. Stopping early stops the input (without waiting on a pending pull).
 */
export async function* pullOrWake<T>(
  input: AsyncIterable<T>,
  wake: () => Promise<void> | undefined,
): AsyncGenerator<{ value: T } | undefined> {
  const it = input[Symbol.asyncIterator]();
  let next: Promise<IteratorResult<T>> | undefined;
  let finished = false;
  const WOKE = Symbol('woke');
  // One wake-up promise per waker (wake() returns the same one while the same commit runs).
  let waker: Promise<void> | undefined;
  let woke: Promise<typeof WOKE> | undefined;
  try {
    for (;;) {
      next ??= it.next();
      const current = wake();
      if (current !== waker) {
        waker = current;
        woke = current?.then(() => WOKE);
      }
      const r = woke ? await Promise.race([next, woke]) : await next;
      if (r === WOKE) {
        yield undefined;
        continue;
      }
      next = undefined;
      const result = r as IteratorResult<T>;
      if (result.done) {
        finished = true;
        return;
      }
      yield { value: result.value };
    }
  } finally {
    if (!finished) {
      const stopped = it.return?.();
      // A pull still pending would make return() wait for the next item: don't wait then.
      if (next) stopped?.catch(() => undefined);
      else await stopped;
    }
  }
}
