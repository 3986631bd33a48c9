import { describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { BackgroundSaver, groupItems, mapOrdered } from '../../src/engine/flow.ts';

async function* numbers(n: number, delayMs = 0, pulled?: { count: number }) {
  for (let i = 0; i < n; i++) {
    if (pulled) pulled.count++;
    if (delayMs) await sleep(delayMs);
    yield i;
  }
}

describe('mapOrdered', () => {
  it('keeps input order while running calls concurrently, never more than the limit', async () => {
    let inFlight = 0;
    let peak = 0;
    const out: number[] = [];
    for await (const v of mapOrdered(
      numbers(40),
      async (i) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await sleep(Math.random() * 10);
        inFlight--;
        return i * 2;
      },
      4,
    ))
      out.push(v);
    expect(out).toEqual(Array.from({ length: 40 }, (_, i) => i * 2));
    expect(peak).toBe(4);
  });

  it('applies backpressure: a slow consumer stops the input from being read ahead', async () => {
    const pulled = { count: 0 };
    const it = mapOrdered(numbers(1000, 0, pulled), async (i) => i, 3)[Symbol.asyncIterator]();
    await it.next();
    await sleep(20);
    expect(pulled.count).toBeLessThanOrEqual(5);
    await it.return?.(undefined);
  });

  it('yields a finished head without waiting for an idle input', async () => {
    async function* slowSecond() {
      yield 1;
      await sleep(500);
      yield 2;
    }
    const started = Date.now();
    const it = mapOrdered(slowSecond(), async (i) => i, 2)[Symbol.asyncIterator]();
    expect((await it.next()).value).toBe(1);
    expect(Date.now() - started).toBeLessThan(300);
    await it.return?.(undefined);
  });

  it('propagates a failure and closes the input', async () => {
    let closed = false;
    async function* src() {
      try {
        for (let i = 0; ; i++) yield i;
      } finally {
        closed = true;
      }
    }
    await expect(async () => {
      for await (const _ of mapOrdered(
        src(),
        async (i) => {
          if (i === 5) throw new Error('boom');
          return i;
        },
        2,
      ));
    }).rejects.toThrow('boom');
    expect(closed).toBe(true);
  });
});

describe('groupItems', () => {
  it('groups by size and closes a group on marker items', async () => {
    const groups: number[][] = [];
    for await (const g of groupItems(numbers(10), { isFull: (g) => g.length >= 3, closesGroup: (i) => i === 4, lingerMs: 1000 }))
      groups.push(g);
    expect(groups).toEqual([
      [0, 1, 2],
      [3, 4],
      [5, 6, 7],
      [8, 9],
    ]);
  });

  it('flushes a partial group when the input goes idle', async () => {
    async function* trickle() {
      yield 1;
      await sleep(300);
      yield 2;
    }
    const started = Date.now();
    const it = groupItems(trickle(), { isFull: (g) => g.length >= 100, closesGroup: () => false, lingerMs: 20 })[Symbol.asyncIterator]();
    expect((await it.next()).value).toEqual([1]);
    expect(Date.now() - started).toBeLessThan(250);
    expect((await it.next()).value).toEqual([2]);
  });
});

describe('BackgroundSaver', () => {
  it('saves in order, one batch at a time, merging what queued up during a save', async () => {
    const batches: number[][] = [];
    let active = 0;
    const saver = new BackgroundSaver<number>(async (batch) => {
      active++;
      expect(active).toBe(1);
      await sleep(20);
      batches.push(batch);
      active--;
    });
    saver.push(1);
    saver.push(2); // queued while 1 is saving
    saver.push(3);
    await sleep(5);
    await saver.flush();
    expect(batches.flat()).toEqual([1, 2, 3]);
    expect(batches[0]).toEqual([1]);
    expect(batches).toHaveLength(2);
    saver.push(4);
    await saver.flush();
    expect(batches.at(-1)).toEqual([4]);
  });

  it('reports a failed save on flush and refuses more work', async () => {
    const saver = new BackgroundSaver<number>(async (batch) => {
      if (batch.includes(2)) throw new Error('disk full');
    });
    saver.push(1);
    await saver.flush();
    saver.push(2);
    await expect(saver.flush()).rejects.toThrow('disk full');
    expect(() => saver.push(3)).toThrow('disk full');
  });
});
