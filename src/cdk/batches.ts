// An optional, additive source capability: read() may also hand its messages over in arrays.
// A source that reads a network chunk of rows at a time (PostgreSQL's COPY) produces its messages
// in arrays anyway; the engine then takes one array per step instead of one message per step (a
// promise and a few allocations per record through every stage). The messages and their order are
// the same either way: whoever iterates read() normally still gets them one by one.
import type { AirbyteMessage } from '../protocol/messages.ts';

/** The method a read() result has when it offers its messages in arrays (a registered symbol: any copy of the kit agrees). */
export const MESSAGE_BATCHES: unique symbol = Symbol.for('sluice.source.messageBatches') as never;

/** A read() result that can also be iterated an array at a time (only one of the two ways, once). */
export interface BatchedMessages extends AsyncIterable<AirbyteMessage> {
  [MESSAGE_BATCHES](): AsyncIterator<AirbyteMessage[]>;
}

/**
 * Wraps a generator that yields messages singly or in arrays as a read() result: iterated normally
 * it gives the messages one by one (without an async-generator step per message); the engine takes
 * the arrays as they are.
 */
export function batchedMessages(source: AsyncGenerator<AirbyteMessage | AirbyteMessage[]>): BatchedMessages {
  return {
    [Symbol.asyncIterator]: () => flatten(source),
    [MESSAGE_BATCHES]: () => arrays(source),
  };
}

/**
 * The messages of a read() result an array at a time: the source's own arrays when it offers them
 * (batchedMessages), otherwise each message as an array of one. No empty arrays.
 */
export function messageBatches(messages: AsyncIterable<AirbyteMessage>): AsyncIterator<AirbyteMessage[]> {
  const offered = (messages as Partial<BatchedMessages>)[MESSAGE_BATCHES];
  if (typeof offered === 'function') return offered.call(messages);
  return arrays(messages[Symbol.asyncIterator]());
}

async function* arrays<T>(source: AsyncIterator<T | T[]>): AsyncGenerator<T[]> {
  try {
    for (;;) {
      const r = await source.next();
      if (r.done) return;
      if (!Array.isArray(r.value)) yield [r.value];
      else if (r.value.length) yield r.value;
    }
  } finally {
    await source.return?.();
  }
}

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
