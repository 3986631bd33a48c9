// Sharded full refresh through the public source contract: planPartitions splits a table into
// primary-key ranges; read() with ctx.shard reads one range. Together the ranges read every row
// exactly once — whatever the key type, and for rows inserted after the plan was made.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { SourceState } from '../../../src/protocol/connector.ts';
import type { AirbyteMessage, ConfiguredCatalog } from '../../../src/protocol/messages.ts';
import source from '../index.ts';
import { catalog, config, context, createDatabase, records, sql, stream } from './helpers.ts';

let url: string;
beforeAll(async () => {
  url = await createDatabase(inject('pgUrl'), 'pgsrc_partitions');
  await sql(
    url,
    `CREATE TABLE ints (id bigint PRIMARY KEY, v text);
     INSERT INTO ints SELECT i * i, 'v' || i FROM generate_series(1, 500) i;
     CREATE TABLE texts (code text PRIMARY KEY, v text);
     INSERT INTO texts SELECT md5(i::text), 'v' || i FROM generate_series(1, 300) i;
     CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
     INSERT INTO pairs SELECT i % 4, 'k' || i, 'v' || i FROM generate_series(1, 200) i;
     CREATE TABLE empty (id int PRIMARY KEY, v text);`,
  );
});

const full = (name: string) => stream(name, 'full_refresh', { destination_sync_mode: 'append_dedup' });

async function readShard(cat: ConfiguredCatalog, plan: Record<string, unknown[]>, index: number, count: number, state?: SourceState) {
  const ctx = context('parts');
  ctx.shard = { index, count, partitions: Object.fromEntries(Object.entries(plan).map(([s, p]) => [s, p[index]])) };
  const msgs: AirbyteMessage[] = [];
  for await (const m of source.read(config(url, { batch_size: 25 }), cat, state, ctx)) msgs.push(m);
  return msgs;
}

describe('postgres source: primary-key partitions for sharded runs', () => {
  it('ranges of integer, text and composite keys cover every row exactly once, balanced', async () => {
    const cat = catalog(full('ints'), full('texts'), full('pairs'));
    const plan = await source.planPartitions!(config(url), cat, 3, context('parts'));
    expect(Object.keys(plan).sort()).toEqual(['ints', 'pairs', 'texts']);
    for (const [name, parts] of Object.entries(plan)) {
      expect(parts).toHaveLength(3);
      expect(parts[0]).not.toHaveProperty('from');
      expect(parts[2]).not.toHaveProperty('to');
      expect((parts[1] as { from: string }).from, name).toBe((parts[0] as { to: string }).to);
    }
    const seen: Record<string, string[]> = { ints: [], texts: [], pairs: [] };
    for (let i = 0; i < 3; i++) {
      const got = records(await readShard(cat, plan, i, 3));
      for (const name of Object.keys(seen)) {
        const mine = got.filter((r) => r.stream === name);
        // Quantile ranges: each worker gets about a third (the composite key splits on its first column).
        if (name !== 'pairs')
          expect(mine.length, `${name} shard ${i}`).toBeGreaterThan(({ ints: 500, texts: 300 } as Record<string, number>)[name] / 4);
        seen[name].push(...mine.map((r) => JSON.stringify([r.data.id ?? r.data.code ?? r.data.a, r.data.b ?? null])));
      }
    }
    expect(seen.ints).toHaveLength(500);
    expect(new Set(seen.ints).size).toBe(500);
    expect(new Set(seen.texts).size).toBe(300);
    expect(seen.texts).toHaveLength(300);
    expect(new Set(seen.pairs).size).toBe(200);
    expect(seen.pairs).toHaveLength(200);
  });

  it('rows added after the plan (below, between and above the bounds) land in exactly one range', async () => {
    const cat = catalog(full('ints'));
    const plan = await source.planPartitions!(config(url), cat, 4, context('parts'));
    await sql(url, `INSERT INTO ints VALUES (-5, 'below'), (2, 'between'), (10000000, 'above')`);
    try {
      const ids: unknown[] = [];
      for (let i = 0; i < 4; i++) ids.push(...records(await readShard(cat, plan, i, 4)).map((r) => r.data.id));
      expect(ids).toHaveLength(503);
      expect(new Set(ids.map(String)).size).toBe(503);
    } finally {
      await sql(url, `DELETE FROM ints WHERE v IN ('below', 'between', 'above')`);
    }
  });

  it('a worker resumes inside its range from its own checkpoint', async () => {
    const cat = catalog(full('ints'));
    const plan = await source.planPartitions!(config(url), cat, 2, context('parts'));
    const whole = records(await readShard(cat, plan, 1, 2)).map((r) => r.data.id);
    const msgs = await readShard(cat, plan, 1, 2);
    const firstState = msgs.find((m) => m.type === 'STATE') as { state: { stream: { stream_state: Record<string, unknown> } } };
    const resumed = records(await readShard(cat, plan, 1, 2, { streams: { ints: firstState.state.stream.stream_state } })).map(
      (r) => r.data.id,
    );
    expect(resumed.length).toBe(whole.length - 25);
    expect(resumed).toEqual(whole.slice(25));
  });

  it('an empty table goes to the first worker whole; the others read nothing and complete', async () => {
    const cat = catalog(full('empty'));
    const plan = await source.planPartitions!(config(url), cat, 3, context('parts'));
    expect(plan.empty).toEqual([{ column: 'id' }, { column: 'id', none: true }, { column: 'id', none: true }]);
    await sql(url, `INSERT INTO empty SELECT i, 'x' FROM generate_series(1, 10) i`);
    expect(records(await readShard(cat, plan, 0, 3))).toHaveLength(10);
    const other = await readShard(cat, plan, 2, 3);
    expect(records(other)).toHaveLength(0);
    expect(other.some((m) => m.type === 'TRACE' && m.trace.stream_status?.status === 'COMPLETE')).toBe(true);
  });
});
