// Issue 16 §3: `sluice sync --shard I/N`. Workers running at once (real CLI processes) share one
// PostgreSQL state store and one destination; a large full refresh is split by primary-key
// ranges, other streams go whole to one worker. 1, 3 and 4 workers leave identical destinations;
// a killed worker resumes from its own checkpoint; another worker count on the same state is refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCli, runCli, tempDir, writeFiles, type CliResult } from '../helpers/cli.ts';
import { startQdrantFixture, type QdrantFixture } from '../fixtures/qdrant-server.ts';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';
import { resolveShard } from '../../src/engine/shard.ts';

let fx: QdrantFixture;
let sourceUrl: string;
let stateUrl: string;
const BIG = 600;

beforeAll(async () => {
  // Slow upserts a little, so workers overlap and a kill lands mid-way.
  fx = await startQdrantFixture({ faults: { latencyMs: 10, only: ['PUT /collections/{collection_name}/points'] } });
  sourceUrl = await createDatabase(inject('pgUrl'), 'shard_src');
  stateUrl = await createDatabase(inject('pgUrl'), 'shard_state');
  // Uneven keys (gaps, a dense run) so ranges from quantiles are not simply id / N.
  await sql(
    sourceUrl,
    `CREATE TABLE big (id bigint PRIMARY KEY, body text NOT NULL);
     INSERT INTO big SELECT CASE WHEN i <= 400 THEN i ELSE 1000 + i * 37 END,
            'Row ' || i || ' of the big table describes pump ' || (i % 13) || ' and valve ' || (i % 7) || '. ' || repeat('Water. ', i % 5)
       FROM generate_series(1, ${BIG}) i;`,
  );
  for (const t of ['small_a', 'small_b', 'small_c']) {
    await sql(
      sourceUrl,
      `CREATE TABLE ${t} (id int PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL);
       INSERT INTO ${t} SELECT i, '${t} row ' || i || ' about gauges.', timestamptz '2024-01-01' + i * interval '1 hour' FROM generate_series(1, 15) i;`,
    );
  }
});
afterAll(() => fx?.close());

const pipeline = (collection: string, schema: string) => `version: 1
state: { type: postgres, url: "\${STATE_DB_URL}", schema: ${schema} }
connections:
  - name: kb
    source: { type: postgres, config: { url: "\${SOURCE_DB_URL}", batch_size: 20 } }
    destination: { type: qdrant, config: { url: ${fx.url}, collection: ${collection}, batch_points: 16, buffer_points: 32 } }
    embedding: { provider: hash, dimensions: 8 }
    processing: { chunk_size: 40, chunk_overlap: 0, chunk_unit: characters }
    streams:
      - { name: big, sync_mode: full_refresh, destination_sync_mode: append_dedup }
      - { name: small_a, sync_mode: incremental, cursor_field: updated_at, destination_sync_mode: append_dedup }
      - { name: small_b, sync_mode: incremental, cursor_field: updated_at, destination_sync_mode: append_dedup }
      - { name: small_c, sync_mode: incremental, cursor_field: updated_at, destination_sync_mode: append_dedup }
`;

const env = { STATE_DB_URL: '', SOURCE_DB_URL: '' };
const cli = (dir: string, args: string[], extraEnv: Record<string, string> = {}) =>
  startCli(['sync', join(dir, 'p.yaml'), '--json', ...args], {
    cwd: dir,
    env: { ...env, STATE_DB_URL: stateUrl, SOURCE_DB_URL: sourceUrl, ...extraEnv },
  });

type Summary = { status: string; connections: Array<{ shard?: string; streams: Record<string, { records_read: number }> }> };
const parse = (r: CliResult) => JSON.parse(r.stdout) as Summary;

/** Everything a reader sees: point id, its payload (content, ids) and its vector. */
function destination(collection: string): string[] {
  return fx
    .pointsOf(collection)
    .map((p) => JSON.stringify([p.id, p.payload.stream, p.payload.document_id, p.payload.chunk_index, p.payload.content, p.vector]))
    .sort();
}

/** Worker 0 first (it creates the collection), then the others all at once. */
async function runWorkers(
  dir: string,
  collection: string,
  count: number,
  extra: (i: number) => string[] = (i) => [`--shard`, `${i}/${count}`],
) {
  const first = cli(dir, extra(0));
  while (!fx.aliases.has(collection) && first.child.exitCode === null) await sleep(10);
  const rest = Array.from({ length: count - 1 }, (_, k) => cli(dir, extra(k + 1)).done);
  return Promise.all([first.done, ...rest]);
}

describe('sharded sync (--shard I/N)', () => {
  it('1, 3 and 4 workers at once leave identical destinations; streams and key ranges are split between them', async () => {
    const results: Record<number, string[]> = {};
    for (const n of [1, 3, 4]) {
      const dir = tempDir();
      writeFiles(dir, { 'p.yaml': pipeline(`kb_${n}`, `state_${n}`) });
      const runs =
        n === 1
          ? [await cli(dir, []).done]
          : n === 4
            ? // Kubernetes Indexed Job style: --shards N with the index from JOB_COMPLETION_INDEX.
              await (async () => {
                const first = cli(dir, ['--shards', '4'], { JOB_COMPLETION_INDEX: '0' });
                while (!fx.aliases.has('kb_4') && first.child.exitCode === null) await sleep(10);
                const rest = [1, 2, 3].map((i) => cli(dir, ['--shards', '4'], { JOB_COMPLETION_INDEX: String(i) }).done);
                return Promise.all([first.done, ...rest]);
              })()
            : await runWorkers(dir, `kb_${n}`, n);
      for (const r of runs) expect(r.code, r.stderr + r.stdout).toBe(0);
      const summaries = runs.map(parse);
      // Every row of `big` was read exactly once over all workers; each small table by one worker.
      const readOf = (stream: string) => summaries.map((s) => s.connections[0].streams[stream]?.records_read ?? 0);
      expect(readOf('big').reduce((a, b) => a + b, 0)).toBe(BIG);
      for (const t of ['small_a', 'small_b', 'small_c']) {
        expect(readOf(t).reduce((a, b) => a + b, 0)).toBe(15);
        expect(summaries.filter((s) => s.connections[0].streams[t]).length).toBe(1);
      }
      if (n > 1) {
        // The big table really was shared: every worker read a fair part of it.
        for (const r of readOf('big')) expect(r).toBeGreaterThan(BIG / n / 2);
        expect(summaries.map((s) => s.connections[0].shard).sort()).toEqual(Array.from({ length: n }, (_, i) => `${i}/${n}`));
      }
      results[n] = destination(`kb_${n}`);
    }
    expect(results[1].length).toBeGreaterThan(BIG);
    expect(results[3]).toEqual(results[1]);
    expect(results[4]).toEqual(results[1]);
  }, 360_000);

  it('a killed worker resumes from its checkpoint; workers restarted in any order end with what one worker produces', async () => {
    const reference = tempDir();
    writeFiles(reference, { 'p.yaml': pipeline('kb_ref', 'state_ref') });
    const ref = await cli(reference, []).done;
    expect(ref.code, ref.stderr).toBe(0);
    const expected = destination('kb_ref');

    const dir = tempDir();
    writeFiles(dir, { 'p.yaml': pipeline('kb_kill', 'state_kill') });
    const slotOf = async (i: number) => {
      const r = await sql(
        stateUrl,
        `SELECT state->'sharding'->'workers'->$1 AS s FROM state_kill.connection_state WHERE connection = 'kb'`,
        [String(i)],
      ).catch(() => ({ rows: [] as Array<{ s: unknown }> }));
      return r.rows[0]?.s as { streams?: Record<string, { pk_after?: unknown[] }> } | null | undefined;
    };
    // Worker 2 starts first and is killed once it has checkpointed part of its key range.
    const victim = cli(dir, ['--shard', '2/3']);
    for (let i = 0; i < 1500 && !(await slotOf(2))?.streams?.big?.pk_after && victim.child.exitCode === null; i++) await sleep(10);
    victim.child.kill('SIGKILL');
    expect((await victim.done).signal).toBe('SIGKILL');
    const checkpoint = (await slotOf(2))?.streams?.big?.pk_after;
    expect(checkpoint, 'the kill must land after a checkpoint of worker 2').toBeDefined();

    // Worker 0 is killed at a random instant too; then 1, 0 and 2 run again (in that order, 0 and 2 at once).
    const w0 = cli(dir, ['--shard', '0/3']);
    await sleep(300 + Math.random() * 700);
    w0.child.kill('SIGKILL');
    await w0.done;
    const w1 = await cli(dir, ['--shard', '1/3']).done;
    expect(w1.code, w1.stderr).toBe(0);
    const [r0, r2] = await Promise.all([cli(dir, ['--shard', '0/3']).done, cli(dir, ['--shard', '2/3']).done]);
    expect(r0.code, r0.stderr).toBe(0);
    expect(r2.code, r2.stderr).toBe(0);

    // Worker 2 went on after its checkpoint instead of re-reading its whole range.
    const plan = (
      await sql(stateUrl, `SELECT state->'sharding'->'plan'->'big' AS p FROM state_kill.connection_state WHERE connection = 'kb'`)
    ).rows[0].p as Array<{ from?: string; to?: string }>;
    const range = plan[2];
    const inRange = Number((await sql(sourceUrl, `SELECT count(*) AS n FROM big WHERE id >= $1::bigint`, [range.from])).rows[0].n);
    const after = Number(
      (await sql(sourceUrl, `SELECT count(*) AS n FROM big WHERE id >= $1::bigint AND id > $2::bigint`, [range.from, checkpoint![0]]))
        .rows[0].n,
    );
    expect(range.to).toBeUndefined();
    expect(after).toBeLessThan(inRange);
    expect(parse(r2).connections[0].streams.big.records_read).toBe(after);

    expect(destination('kb_kill')).toEqual(expected);
  }, 360_000);

  it('a run with another worker count (or none) on the same state is refused clearly', async () => {
    const dir = tempDir();
    writeFiles(dir, { 'p.yaml': pipeline('kb_refuse', 'state_refuse') });
    // A dry run of a worker plans its ranges but stores nothing (invariant 9).
    const dry = await cli(dir, ['--shard', '1/2', '--dry-run']).done;
    expect(dry.code, dry.stderr).toBe(0);
    expect(parse(dry).connections[0].streams.big.records_read).toBeGreaterThan(BIG / 4);
    expect((await sql(stateUrl, `SELECT count(*)::int AS n FROM state_refuse.connection_state`)).rows[0].n).toBe(0);
    const runs = await runWorkers(dir, 'kb_refuse', 2);
    for (const r of runs) expect(r.code, r.stderr).toBe(0);

    const four = await cli(dir, ['--shard', '1/4']).done;
    expect(four.code).toBe(1);
    expect(four.stdout).toContain('the saved state of this connection was written by 2 shards; this run is shard 1/4');
    expect(four.stdout).toContain('sluice state reset');
    const none = await cli(dir, []).done;
    expect(none.code).toBe(1);
    expect(none.stdout).toContain('the saved state of this connection was written by 2 shards; this run is not sharded');

    // After a reset the new layout is accepted.
    const reset = await runCli(['state', 'reset', join(dir, 'p.yaml')], {
      cwd: dir,
      env: { STATE_DB_URL: stateUrl, SOURCE_DB_URL: sourceUrl },
    });
    expect(reset.code, reset.stderr).toBe(0);
    const again = await cli(dir, []).done;
    expect(again.code, again.stderr).toBe(0);
    const sharded = await cli(dir, ['--shard', '0/3']).done;
    expect(sharded.code).toBe(1);
    expect(sharded.stdout).toContain(
      'the saved state of this connection was written by a single worker (no --shard); this run is shard 0/3',
    );
  }, 240_000);

  it('--shard and --shards are checked before anything runs', () => {
    expect(resolveShard({})).toBeUndefined();
    expect(resolveShard({ shard: '2/5' })).toEqual({ index: 2, count: 5 });
    expect(resolveShard({ shards: '3' }, { JOB_COMPLETION_INDEX: '1' })).toEqual({ index: 1, count: 3 });
    expect(resolveShard({ shard: '0/2', shards: '2' }, { JOB_COMPLETION_INDEX: '1' })).toEqual({ index: 0, count: 2 });
    expect(() => resolveShard({ shard: '5/5' })).toThrow('shard index 5 is out of range for 5 shards');
    expect(() => resolveShard({ shard: 'one' })).toThrow('--shard must look like I/N');
    expect(() => resolveShard({ shards: '3' }, {})).toThrow('JOB_COMPLETION_INDEX is not set');
    expect(() => resolveShard({ shard: '1/2', shards: '3' })).toThrow('disagrees with --shards 3');
  });
});
