import { describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { BackgroundSaver, groupBatches, groupItems, mapOrdered } from '../../src/engine/flow.ts';

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

describe('a group tally (groupItems and groupBatches)', () => {
  const PAUSE = 'pause';
  type Step = number[] | typeof PAUSE;

  /** The steps as arrays (groupBatches) or item by item (groupItems); a pause outlasts lingerMs. */
  async function* feed(steps: Step[]): AsyncGenerator<number[]> {
    for (const step of steps) {
      if (step === PAUSE) await sleep(150);
      else yield step;
    }
  }
  async function* itemsOf(batches: AsyncIterable<number[]>): AsyncGenerator<number> {
    for await (const batch of batches) yield* batch;
  }

  /**
   * Options whose tally records the items added to it: every tally started, and every time isFull
   * was asked with a tally that is not exactly its group's items. A group is full when its sum and
   * `next` would pass 10 (read from the tally); 0 closes a group.
   */
  function recording() {
    const started: number[][] = [];
    const mismatches: Array<{ group: number[]; tally: number[] }> = [];
    const opts = {
      tally: {
        start: () => {
          const items: number[] = [];
          started.push(items);
          return items;
        },
        add: (items: number[], x: number) => {
          items.push(x);
          return items;
        },
      },
      isFull: (group: number[], next: number, items: number[]) => {
        if (items.length !== group.length || items.some((x, i) => x !== group[i]))
          mismatches.push({ group: [...group], tally: [...items] });
        return items.reduce((a, b) => a + b, 0) + next > 10;
      },
      closesGroup: (x: number) => x === 0,
      lingerMs: 20,
    };
    return { started, mismatches, opts };
  }

  async function collect(groups: AsyncIterable<number[]>): Promise<number[][]> {
    const out: number[][] = [];
    for await (const g of groups) out.push([...g]);
    return out;
  }

  it('holds exactly the items of the group being filled, in order, and starts anew for each group however it closed', async () => {
    // Full by sum, closed by 0, closed by an idle pause (twice), and the rest at the end of input.
    const steps: Step[] = [[1, 2, 3], [4], PAUSE, [5, 6], [0], [7, 8, 9, 1, 1], PAUSE, [2, 3]];
    const want = [[1, 2, 3, 4], [5], [6, 0], [7], [8], [9, 1], [1], [2, 3]];
    for (const group of [
      (r: ReturnType<typeof recording>) => groupBatches(feed(steps), r.opts),
      (r: ReturnType<typeof recording>) => groupItems(itemsOf(feed(steps)), r.opts),
    ]) {
      const r = recording();
      expect(await collect(group(r))).toEqual(want);
      expect(r.mismatches).toEqual([]);
      // One tally per group, holding that group's items: none carried over from a closed group.
      expect(r.started).toEqual(want);
    }
  });

  it('gives the same groups through groupItems and groupBatches, equal to recounting each group, over random inputs', async () => {
    let seed = 11;
    const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let round = 0; round < 20; round++) {
      const items = Array.from({ length: 100 + Math.floor(random() * 900) }, () => Math.floor(random() * 10));
      const steps: Step[] = [];
      for (let i = 0; i < items.length;) {
        const size = 1 + Math.floor(random() * 40);
        steps.push(items.slice(i, (i += size)));
      }
      // The rule recounted plainly for each item.
      const want: number[][] = [];
      let g: number[] = [];
      for (const x of items) {
        if (g.length && g.reduce((a, b) => a + b, 0) + x > 10) [want[want.length], g] = [g, []];
        g.push(x);
        if (x === 0) [want[want.length], g] = [g, []];
      }
      if (g.length) want.push(g);

      const byBatches = recording();
      const byItems = recording();
      expect(await collect(groupBatches(feed(steps), byBatches.opts))).toEqual(want);
      expect(await collect(groupItems(itemsOf(feed(steps)), byItems.opts))).toEqual(want);
      expect(byBatches.mismatches).toEqual([]);
      expect(byItems.mismatches).toEqual([]);
      expect(byBatches.started).toEqual(want);
      expect(byItems.started).toEqual(want);
    }
  });

  it('may be a plain value that add returns anew (a running sum)', async () => {
    const sums: number[] = [];
    const opts = {
      tally: { start: () => 0, add: (sum: number, x: number) => sum + x },
      isFull: (_group: number[], next: number, sum: number) => {
        sums.push(sum);
        return sum + next > 10;
      },
      closesGroup: (x: number) => x === 0,
      lingerMs: 1000,
    };
    expect(await collect(groupItems(itemsOf(feed([[4, 5, 2, 0, 3, 3, 9]])), opts))).toEqual([[4, 5], [2, 0], [3, 3], [9]]);
    // Asked before 5, before 2 (closing [4, 5]), before 0; the 3 after the 0 starts a group; then before the next 3 and 9.
    expect(sums).toEqual([4, 9, 2, 3, 6]);
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
