// The sharded state layout (src/engine/shard.ts) on the file store: each worker reads and writes
// only its own slot, layouts are never mixed, and `state reset --stream` reaches every slot.
import { describe, expect, it } from 'vitest';
import type { ConfiguredStream } from '../../src/protocol/messages.ts';
import { ownerOf, ShardStateView } from '../../src/engine/shard.ts';
import { FileStateStore } from '../../src/state/index.ts';
import { tempDir } from '../helpers/cli.ts';

describe('sharded state', () => {
  it('workers keep their own slots; other layouts are refused; a stream reset clears it in every slot', async () => {
    const store = new FileStateStore(tempDir());
    const w0 = new ShardStateView(store, { index: 0, count: 2 });
    const w1 = new ShardStateView(store, { index: 1, count: 2 });
    await Promise.all([
      w0.update('c', () => ({ streams: { big: { pk_after: [10] }, a: { cursor: 1 } } })),
      w1.update('c', () => ({ streams: { big: { pk_after: [99] } } })),
    ]);
    expect(await w0.load('c')).toEqual({ streams: { big: { pk_after: [10] }, a: { cursor: 1 } } });
    expect(await w1.load('c')).toEqual({ streams: { big: { pk_after: [99] } } });
    // A later update of worker 0 does not touch worker 1's slot.
    await w0.update('c', (s) => ({ streams: { ...s!.streams, big: { completed_at: 'now' } } }));
    expect(await w1.load('c')).toEqual({ streams: { big: { pk_after: [99] } } });

    const w3 = new ShardStateView(store, { index: 0, count: 3 });
    await expect(w3.load('c')).rejects.toThrow('written by 2 shards; this run is shard 0/3');
    await expect(w3.update('c', (s) => s ?? { streams: {} })).rejects.toThrow('written by 2 shards');

    await store.reset('c', ['big']);
    expect(await w0.load('c')).toEqual({ streams: { a: { cursor: 1 } } });
    expect(await w1.load('c')).toEqual({ streams: {} });

    // A single worker's state refuses shards, and the other way round.
    await store.update('single', () => ({ streams: { a: { cursor: 5 } } }));
    await expect(w0.load('single')).rejects.toThrow('written by a single worker (no --shard); this run is shard 0/2');
  });

  it('assigns streams to workers by name, the same everywhere, CDC streams together', () => {
    const s = (name: string, cdc = false) =>
      ({
        stream: { name },
        sync_mode: 'incremental',
        destination_sync_mode: 'append_dedup',
        ...(cdc ? { cdc: true } : {}),
      }) as ConfiguredStream;
    const names = Array.from({ length: 40 }, (_, i) => `table_${i}`);
    const owners = names.map((n) => ownerOf(s(n), 4));
    expect(new Set(owners)).toEqual(new Set([0, 1, 2, 3]));
    expect(names.map((n) => ownerOf(s(n), 4))).toEqual(owners);
    expect(new Set(names.map((n) => ownerOf(s(n, true), 4))).size).toBe(1);
  });
});
