// read() hands the engine one message per next(), but reads produce them a network chunk at a time.

/**
 * Messages one by one from a generator that yields them singly or in arrays, without an
 * async-generator step per message: for narrow rows that step costs more than reading the row.
 */
export function flatten<T>(source: AsyncGenerator<T | T[]>): AsyncIterableIterator<T> {
  let batch: T[] = [];
  let i = 0;
  let pulling: Promise<IteratorResult<T>> | undefined;
  const pull = (): Promise<IteratorResult<T>> =>
    source.next().then((r): IteratorResult<T> | Promise<IteratorResult<T>> => {
      if (r.done) return { done: true, value: undefined };
      if (!Array.isArray(r.value)) return { done: false, value: r.value };
      batch = r.value;
      i = 0;
      return i < batch.length ? { done: false, value: batch[i++] } : pull();
    });
  const it: AsyncIterableIterator<T> = {
    next(): Promise<IteratorResult<T>> {
      // Calls overlapping a pull wait for it (the engine never overlaps them, but keep order anyway).
      if (pulling) return pulling.then(() => it.next());
      if (i < batch.length) return Promise.resolve({ done: false, value: batch[i++] });
      const p = pull();
      pulling = p;
      const clear = () => {
        if (pulling === p) pulling = undefined;
      };
      p.then(clear, clear);
      return p;
    },
    async return(value?: unknown): Promise<IteratorResult<T>> {
      batch = [];
      i = 0;
      await source.return(undefined);
      return { done: true, value: value as undefined };
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}
