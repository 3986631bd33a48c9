// Issue 16 §1: state and embedding cache in PostgreSQL. A pod whose local disk is new every run
// (every local file wiped between runs) re-syncs unchanged data reading nothing, embedding
// nothing and writing nothing; `sluice state show|reset` act on the database.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { runCli, STACK_LINE, tempDir, writeFiles } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';
import { fixtureVector, startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';
import { PostgresStateStore } from '../../src/state/index.ts';

let openai: OpenAIServer;
let sourceUrl: string;
let stateUrl: string;
const ROWS = 40;
const KEY = 'sk-pgstate-secret-key-0000';

beforeAll(async () => {
  openai = await startOpenAIServer({ latencyMs: 2 });
  sourceUrl = await createDatabase(inject('pgUrl'), 'pgstate_src');
  stateUrl = await createDatabase(inject('pgUrl'), 'pgstate_state');
  await sql(sourceUrl, `CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL)`);
  await sql(
    sourceUrl,
    `INSERT INTO notes SELECT i, 'Note ' || i || ' explains how valve ' || i || ' regulates the flow of water into basin ' || (i % 5) || '.',
            timestamptz '2024-01-01' + i * interval '1 minute' FROM generate_series(1, ${ROWS}) i`,
  );
});
afterAll(async () => {
  await openai?.close();
});

const pipeline = (out: string, extra = '') => `version: 1
state: { type: postgres, url: "\${STATE_DB_URL}", schema: sluice_test }
${extra}
connections:
  - name: notes
    source: { type: postgres, config: { url: "\${SOURCE_DB_URL}", batch_size: 7 } }
    destination: { type: jsonl, config: { path: ${out} } }
    embedding: { provider: openai, base_url: ${openai.url}, api_key: "\${TEST_OPENAI_KEY}", model: text-embedding-3-small, dimensions: 16, batch_size: 8 }
    processing: { chunk_size: 40, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: notes, sync_mode: incremental, cursor_field: updated_at, destination_sync_mode: append_dedup } ]
`;

type Stats = Record<string, number>;
type Summary = { status: string; connections: Array<{ status: string; states_committed: number; streams: Record<string, Stats> }> };

function env(state = stateUrl) {
  return { STATE_DB_URL: state, SOURCE_DB_URL: sourceUrl, TEST_OPENAI_KEY: KEY };
}

async function sync(pod: string, ...args: string[]): Promise<Stats> {
  const r = await runCli(['sync', join(pod, 'p.yaml'), '--json', ...args], { cwd: pod, env: env() });
  expect(r.code, r.stderr + r.stdout).toBe(0);
  expect(r.stdout + r.stderr).not.toContain(KEY);
  const s = JSON.parse(r.stdout) as Summary;
  return s.connections[0].streams.notes;
}

/** What a new pod has: the pipeline file and nothing else. */
function wipeLocal(pod: string) {
  for (const f of readdirSync(pod)) if (f !== 'p.yaml') rmSync(join(pod, f), { recursive: true, force: true });
  expect(readdirSync(pod)).toEqual(['p.yaml']);
}

describe('state and embedding cache in PostgreSQL', () => {
  it('a brand-new pod re-syncs unchanged data with 0 records read, 0 embedding requests and 0 chunks written', async () => {
    const pod = tempDir();
    const volume = tempDir(); // the destination outlives the pod
    const out = join(volume, 'out.jsonl');
    writeFiles(pod, { 'p.yaml': pipeline(out) });

    const first = await sync(pod);
    expect(first.records_read).toBe(ROWS);
    expect(first.embedding_requests).toBeGreaterThan(0);
    const lines = readJsonl(out);
    expect(lines.length).toBeGreaterThan(ROWS);
    for (const l of lines) expect(Float32Array.from(l.embedding!)).toEqual(fixtureVector(l.content, 16));
    const requests = openai.stats.requests;

    // The state and cache are in the database, not in the pod.
    const state = await sql(stateUrl, `SELECT connection, state FROM sluice_test.connection_state`);
    expect(state.rows.map((r) => r.connection)).toEqual(['notes']);
    expect(state.rows[0].state.streams.notes).toMatchObject({ cursor_field: 'updated_at', pk: [ROWS] });
    const cached = await sql(stateUrl, `SELECT count(*)::int AS n, min(length(vector))::int AS len FROM sluice_test.embedding_cache`);
    expect(cached.rows[0]).toEqual({ n: new Set(lines.map((l) => l.content_hash)).size, len: 16 * 4 });

    // New pod, same data: nothing read, nothing embedded, nothing written.
    wipeLocal(pod);
    const second = await sync(pod);
    expect(second).toMatchObject({ records_read: 0, embedding_requests: 0, chunks_written: 0, records_written: 0 });
    expect(openai.stats.requests).toBe(requests);

    // A changed row is read, embedded and written alone.
    await sql(sourceUrl, `UPDATE notes SET body = body || ' Revised.', updated_at = now() WHERE id = 3`);
    wipeLocal(pod);
    const fourth = await sync(pod);
    expect(fourth.records_read).toBe(1);
    expect(fourth.records_written).toBe(1);
    expect(fourth.embedding_requests).toBe(1);

    // New pod again, and a new (empty) destination file, full refresh: every row re-read, every
    // vector from the database cache (with the old file, unchanged documents would be skipped by
    // their fingerprints before any embedding or cache look-up: docs/fingerprints.md).
    wipeLocal(pod);
    rmSync(out);
    const third = await sync(pod, '--full-refresh');
    expect(third.records_read).toBe(ROWS);
    expect(third.embedding_requests).toBe(0);
    expect(openai.stats.requests).toBe(requests + 1);
    const after = readJsonl(out);
    expect(third.embedding_cache_hits).toBe(after.length);
    for (const l of after) expect(Float32Array.from(l.embedding!)).toEqual(fixtureVector(l.content, 16));

    // `state show` reads the database; `state reset` clears it.
    const shown = await runCli(['state', 'show', join(pod, 'p.yaml'), '--json'], { cwd: pod, env: env() });
    expect(shown.code, shown.stderr).toBe(0);
    expect((JSON.parse(shown.stdout) as Record<string, { streams: Record<string, unknown> }>).notes.streams.notes).toMatchObject({
      mode: 'full_refresh',
    });
    const reset = await runCli(['state', 'reset', join(pod, 'p.yaml')], { cwd: pod, env: env() });
    expect(reset.code, reset.stderr).toBe(0);
    expect((await sql(stateUrl, `SELECT count(*)::int AS n FROM sluice_test.connection_state`)).rows[0].n).toBe(0);
    const afterReset = await runCli(['state', 'show', join(pod, 'p.yaml'), '--json'], { cwd: pod, env: env() });
    expect(JSON.parse(afterReset.stdout)).toEqual({ notes: null });
    // The cache survives a state reset: re-reading everything still embeds nothing.
    const fifth = await sync(pod);
    expect(fifth.records_read).toBe(ROWS);
    expect(fifth.embedding_requests).toBe(0);
    expect(existsSync(join(pod, '.sluice/state/embeddings'))).toBe(false);
  }, 240_000);

  it('cache: { type: local } keeps the LMDB file next to the state directory', async () => {
    const pod = tempDir();
    const out = join(tempDir(), 'out.jsonl');
    await sql(stateUrl, `CREATE SCHEMA IF NOT EXISTS sluice_local`);
    writeFiles(pod, { 'p.yaml': pipeline(out, 'cache: { type: local }').replace('schema: sluice_test', 'schema: sluice_local') });
    const r = await runCli(['sync', join(pod, 'p.yaml'), '--json'], { cwd: pod, env: env() });
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(pod, '.sluice/state/embeddings/embeddings.lmdb'))).toBe(true);
    expect((await sql(stateUrl, `SELECT count(*)::int AS n FROM sluice_local.embedding_cache`)).rows[0].n).toBe(0);
    expect((await sql(stateUrl, `SELECT count(*)::int AS n FROM sluice_local.connection_state`)).rows[0].n).toBe(1);
  }, 120_000);

  it('a state database that cannot be reached is one clear error, with no password and no stack trace', async () => {
    const pod = tempDir();
    writeFiles(pod, { 'p.yaml': pipeline(join(pod, 'out.jsonl')) });
    const bad = new URL(stateUrl);
    bad.password = 'wrong-state-password-123';
    const r = await runCli(['sync', join(pod, 'p.yaml')], { cwd: pod, env: env(bad.toString()) });
    expect(r.code).not.toBe(0);
    const text = r.stdout + r.stderr;
    expect(text).toMatch(
      /state database postgres:\/\/sluice@127\.0\.0\.1:\d+\/pgstate_state: connecting failed: password authentication failed/,
    );
    expect(text).toContain('check the user and password in state.url');
    expect(text).not.toContain('wrong-state-password-123');
    expect(text).not.toMatch(STACK_LINE);

    const down = new URL(stateUrl);
    down.port = '1';
    const r2 = await runCli(['state', 'show', join(pod, 'p.yaml')], { cwd: pod, env: env(down.toString()) });
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/state database postgres:\/\/sluice@127\.0\.0\.1:1\/pgstate_state: connecting failed: .*ECONNREFUSED/);
    expect(r2.stderr).not.toMatch(STACK_LINE);
    expect(r2.stderr).not.toContain(new URL(stateUrl).password);

    writeFiles(pod, { 'q.yaml': pipeline('out.jsonl').replace('"${STATE_DB_URL}"', 'mysql://x@y/z') });
    const r3 = await runCli(['validate', join(pod, 'q.yaml')], { cwd: pod, env: env() });
    expect(r3.stderr + r3.stdout).toMatch(/q\.yaml:2: state\.url: expected a PostgreSQL URL/);
  }, 120_000);

  it('two processes updating one connection state at once lose no update', async () => {
    const script = join(tempDir('pgstate-writer-'), 'writer.mts');
    writeFiles(join(script, '..'), {
      'writer.mts': `
import { PostgresStateStore, deepMerge } from '${join(process.cwd(), 'src/state/index.ts')}';
const [url, me, n] = process.argv.slice(2);
const store = new PostgresStateStore({ url, schema: 'sluice_race' }, '/nonexistent');
for (let i = 1; i <= Number(n); i++) {
  // A read-modify-write of shared data (a counter) and of this worker's own stream (deep merge).
  await store.update('shared', (stored) => {
    const total = Number((stored?.streams?.total as { n?: number } | undefined)?.n ?? 0);
    return deepMerge(stored ?? { streams: {} }, { streams: { total: { n: total + 1 }, [me]: { i } } }) as never;
  });
}
await store.close();
`,
    });
    const { spawn } = await import('node:child_process');
    const run = (me: string) =>
      new Promise<number | null>((res) => {
        const child = spawn(process.execPath, ['--import', 'tsx', script, stateUrl, me, '60'], { stdio: 'inherit' });
        child.on('close', res);
      });
    const codes = await Promise.all([run('a'), run('b'), run('c')]);
    expect(codes).toEqual([0, 0, 0]);
    const client = new pg.Client(stateUrl);
    await client.connect();
    const { rows } = await client.query(`SELECT state FROM sluice_race.connection_state WHERE connection = 'shared'`);
    await client.end();
    expect(rows[0].state.streams).toEqual({ total: { n: 180 }, a: { i: 60 }, b: { i: 60 }, c: { i: 60 } });
  }, 120_000);
  it("the engine's deep merge for workers sharing a connection keeps another worker's progress", async () => {
    const dir = tempDir('pgstate-merge-', true);
    await sql(stateUrl, `CREATE SCHEMA IF NOT EXISTS sluice_merge`);
    writeFiles(dir, {
      'worker.ts': `
        import { z } from 'zod';
        import { PostgresStateStore } from '${join(process.cwd(), 'src/state/index.ts')}';
        import { message } from '${join(process.cwd(), 'src/protocol/messages.ts')}';
        const stream = (name) => ({ name, json_schema: { type: 'object' }, supported_sync_modes: ['incremental'], source_defined_cursor: true, source_defined_primary_key: [['id']] });
        export default {
          kind: 'source',
          spec: { name: 'worker', config: z.strictObject({}) },
          capabilities: { syncModes: ['incremental'], sourceDefinedCursor: true, stateMerge: 'deep' },
          async check() { return { ok: true }; },
          async discover() { return { streams: [stream('t'), stream('u')] }; },
          async *read(_c, _cat, state, ctx) {
            // Another worker advances stream u (and t's partition 0) while this one runs.
            const other = new PostgresStateStore({ url: process.env.STATE_DB_URL, schema: 'sluice_merge' }, ctx.workDir);
            await other.update('c', (s) => ({ ...s, streams: { t: { offsets: { ...s.streams.t.offsets, '0': '12' } }, u: { offsets: { '0': '99' } } } }));
            await other.close();
            yield message.record('t', { id: 1, content: 'one' });
            yield message.streamState('t', { offsets: { '1': '3' } });
          },
        };`,
      'p.yaml': `version: 1
state: { type: postgres, url: "\${STATE_DB_URL}", schema: sluice_merge }
connections:
  - name: c
    source: { type: ./worker.ts }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
`,
    });
    const seed = new PostgresStateStore({ url: stateUrl, schema: 'sluice_merge' }, dir);
    await seed.update('c', () => ({ streams: { t: { offsets: { '0': '10' } }, u: { offsets: { '0': '5' } } } }));
    const r = await runCli(['sync', 'p.yaml'], { cwd: dir, env: { STATE_DB_URL: stateUrl } });
    expect(r.code, r.stderr).toBe(0);
    const { index, ...merged } = (await seed.load('c'))!;
    expect(merged).toEqual({ streams: { t: { offsets: { '0': '12', '1': '3' } }, u: { offsets: { '0': '99' } } } });
    expect(index).toMatchObject({ provider: null, model: null }); // the engine's record of what built the index
    await seed.close();
  }, 120_000);
});
