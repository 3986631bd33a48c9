import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { CommitQueue, pullOrWake } from 'sluice/cdk';

describe('CommitQueue', () => {
  it('runs commits one after another and reports their events in order', async () => {
    const q = new CommitQueue<string>();
    const running: string[] = [];
    const commit = (name: string, ms: number) => async () => {
      running.push(name);
      expect(running.filter((n) => n !== 'done')).toHaveLength(1);
      await sleep(ms);
      running.length = 0;
      return [name];
    };
    q.push(commit('a', 20));
    q.push(commit('b', 1));
    q.push(commit('c', 5));
    const events: string[] = [];
    for await (const e of q.settle(1)) events.push(e);
    expect(events).toEqual(['a', 'b']);
    for await (const e of q.settle(0)) events.push(e);
    expect(events).toEqual(['a', 'b', 'c']);
  });

  it('a failed commit is thrown by settle and no later commit runs', async () => {
    const q = new CommitQueue<number>();
    let later = false;
    q.push(async () => {
      throw new Error('disk full');
    });
    q.push(async () => {
      later = true;
      return [2];
    });
    await expect(
      (async () => {
        for await (const _ of q.settle(0));
      })(),
    ).rejects.toThrow('disk full');
    await q.drain();
    expect(later).toBe(false);
  });
});

describe('pullOrWake', () => {
  it('wakes while the input is quiet, and stopping then does not wait for the pending pull', async () => {
    let release: (() => void) | undefined;
    let stopped = false;
    const input = (async function* () {
      try {
        yield 1;
        await new Promise<void>((r) => (release = r)); // quiet until released
        yield 2;
      } finally {
        stopped = true;
      }
    })();
    const wake = sleep(20).then(() => undefined);
    const seen: Array<number | 'woke'> = [];
    for await (const item of pullOrWake(input, () => wake)) {
      seen.push(item ? item.value : 'woke');
      if (!item) break; // e.g. a failed commit: stop while the input is still waiting
    }
    expect(seen).toEqual([1, 'woke']);
    expect(stopped).toBe(false);
    release!();
    await sleep(10);
    expect(stopped).toBe(true); // the input is stopped once its pending pull returns
  }, 5_000);

  it('passes every item through when nothing wakes it', async () => {
    const seen: number[] = [];
    const input = (async function* () {
      yield* [1, 2, 3];
    })();
    for await (const item of pullOrWake(input, () => undefined)) seen.push(item!.value);
    expect(seen).toEqual([1, 2, 3]);
  });
});
