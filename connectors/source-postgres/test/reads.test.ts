// Full refresh and incremental: keyset pages with a checkpoint after each, resume from a
// mid-table state, tie-safe cursors, lookback.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { catalog, config, createDatabase, drive, records, sql, states, stream } from './helpers.ts';

let url: string;

beforeAll(async () => {
  url = await createDatabase(inject('pgUrl'), 'srcpg_reads');
  await sql(
    url,
    `CREATE TABLE items (id int PRIMARY KEY, body text, updated_at timestamptz NOT NULL);
     INSERT INTO items SELECT g, 'row ' || g, '2024-05-01 12:00:00+00' FROM generate_series(1, 1000) g;
     CREATE TABLE nokey (v int, body text);
     INSERT INTO nokey SELECT g, repeat('x', 50) FROM generate_series(1, 2500) g;
     ANALYZE nokey;
     CREATE TABLE pairs (a int, b text, n int, PRIMARY KEY (a, b));
     INSERT INTO pairs SELECT g % 7, 'k' || g, g FROM generate_series(1, 300) g;`,
  );
});

describe('postgres source full refresh', () => {
  it('checkpoints every page and resumes after the last committed key', async () => {
    const cfg = config(url, { batch_size: 100 });
    const first = await drive(cfg, catalog(stream('items', 'full_refresh')), undefined, 'reads', { stopAfterStates: 3 });
    const seen = records(first.msgs).map((r) => r.data.id as number);
    expect(seen).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(first.state?.streams.items).toEqual({ mode: 'full_refresh', pk_after: [300] });
    const second = await drive(cfg, catalog(stream('items', 'full_refresh')), first.state, 'reads');
    const rest = records(second.msgs).map((r) => r.data.id as number);
    expect(rest[0]).toBe(301);
    expect([...seen, ...rest]).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(second.msgs.at(-1)).toMatchObject({ type: 'TRACE', trace: { stream_status: { status: 'COMPLETE' } } });
    // A completed state starts over on the next run.
    const third = await drive(cfg, catalog(stream('items', 'full_refresh')), second.state, 'reads');
    expect(records(third.msgs)).toHaveLength(1000);
  });

  it('resumes a composite primary key mid-table', async () => {
    const cfg = config(url, { batch_size: 50 });
    const first = await drive(cfg, catalog(stream('pairs', 'full_refresh')), undefined, 'reads', { stopAfterStates: 2 });
    const second = await drive(cfg, catalog(stream('pairs', 'full_refresh')), first.state, 'reads');
    const all = [...records(first.msgs), ...records(second.msgs)].map((r) => `${r.data.a}/${r.data.b}`);
    expect(all).toHaveLength(300);
    expect(new Set(all).size).toBe(300);
  });

  it('pages a table without primary key by block ranges and resumes by block', async () => {
    const cfg = config(url, { batch_size: 500 });
    const first = await drive(cfg, catalog(stream('nokey', 'full_refresh')), undefined, 'reads', { stopAfterStates: 2 });
    const block = (first.state?.streams.nokey as { block_after: number }).block_after;
    expect(block).toBeGreaterThan(0);
    const second = await drive(cfg, catalog(stream('nokey', 'full_refresh')), first.state, 'reads');
    const all = [...records(first.msgs), ...records(second.msgs)].map((r) => r.data.v as number);
    expect(all.sort((a, b) => a - b)).toEqual(Array.from({ length: 2500 }, (_, i) => i + 1));
  });
});

describe('postgres source incremental', () => {
  it('delivers all 1,000 rows sharing one updated_at with batch size 100, across restarts at every checkpoint', async () => {
    const cfg = config(url, { batch_size: 100 });
    const cat = catalog(stream('items', 'incremental', { cursor_field: ['updated_at'] }));
    let state = undefined;
    const got: number[] = [];
    // Crash after every second checkpoint: each run resumes from the committed (cursor, pk).
    for (let run = 0; run < 20; run++) {
      const r = await drive(cfg, cat, state, 'reads', { stopAfterStates: 2 });
      got.push(...records(r.msgs).map((x) => x.data.id as number));
      state = r.state;
      if (!records(r.msgs).length) break;
    }
    expect(new Set(got).size).toBe(1000);
    expect(got).toHaveLength(1000); // nothing replayed: the state is exact
    expect(state?.streams.items).toMatchObject({ cursor_field: 'updated_at', cursor: '2024-05-01T12:00:00Z', pk: [1000] });
  });

  it('reads only newer rows next time, and the lookback window catches late commits', async () => {
    const cat = catalog(stream('items', 'incremental', { cursor_field: ['updated_at'] }));
    const base = await drive(config(url, { batch_size: 500 }), cat, undefined, 'reads');
    expect(records(base.msgs)).toHaveLength(1000);
    await sql(url, `UPDATE items SET updated_at = '2024-05-02 00:00:00+00', body = 'changed' WHERE id = 5`);
    const next = await drive(config(url, { batch_size: 500 }), cat, base.state, 'reads');
    expect(records(next.msgs).map((r) => r.data.id)).toEqual([5]);
    // A row committed late with an older cursor value: missed without lookback, caught with it.
    await sql(url, `INSERT INTO items VALUES (5000, 'late', '2024-05-01 23:59:00+00')`);
    const without = await drive(config(url, { batch_size: 500 }), cat, next.state, 'reads');
    expect(records(without.msgs)).toHaveLength(0);
    const withLookback = await drive(config(url, { batch_size: 500, lookback: '1 hour' }), cat, next.state, 'reads');
    expect(
      records(withLookback.msgs)
        .map((r) => r.data.id)
        .sort(),
    ).toEqual([5, 5000]);
  });

  it('fails clearly on an unknown cursor column', async () => {
    const cat = catalog(stream('items', 'incremental', { cursor_field: ['nope'] }));
    await expect(drive(config(url), cat, undefined, 'reads')).rejects.toThrow(/no column "nope"/);
  });
});

describe('postgres source read errors', () => {
  it('a missing SELECT privilege names the stream and the GRANT to run', async () => {
    await sql(url, `DROP ROLE IF EXISTS reader_no_select; CREATE ROLE reader_no_select LOGIN PASSWORD 'pw-reader'`);
    const u = new URL(url);
    u.username = 'reader_no_select';
    u.password = 'pw-reader';
    const err = await drive(config(u.toString()), catalog(stream('items', 'full_refresh')), undefined, 'reads').catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'config', where: 'stream items' });
    expect((err as Error).message).toMatch(/reading stream "items" failed: permission denied/);
    expect((err as { hint?: string }).hint).toBe('grant SELECT on public.items to the sync user');
  });
});
