// Changing the embedding model or the chunking of an existing connection (#15 part 2), through the
// real CLI on PGlite and native PostgreSQL + pgvector: a changed setting is refused before any
// write (sync, --dry-run, check: exit 2); `sluice reindex` builds the new index while a concurrent
// reader keeps seeing one complete index of exactly one model, switches at the end, and
// `--keep-previous` + `--rollback` restore the old index and its state; a SIGKILLed reindex leaves
// the old index serving and a re-run completes.
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeOnPgvectorBackends } from '../helpers/pgvector-backends.ts';
import { useAdminClient } from '../helpers/pg-admin.ts';
import { STACK_LINE, runCli, startCli, tempDir } from '../helpers/cli.ts';
import { qualified } from '../../connectors/destination-pgvector/sql.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';

const DOCS = 150;

interface Settings {
  /** hash embedder dimensions (ignored with `openai`). */
  dims?: number;
  chunkSize?: number;
  /** Embed with the OpenAI-compatible fixture instead of the hash embedder. */
  openai?: { url: string; model: string; dims: number };
}

function project(url: string, schema: string) {
  const dir = tempDir('sluice-reindex-');
  const corpus = join(dir, 'corpus');
  mkdirSync(corpus);
  const base = Math.floor(Date.now() / 1000) - 10_000;
  for (let i = 0; i < DOCS; i++) {
    const file = join(corpus, `doc-${String(i).padStart(3, '0')}.md`);
    writeFileSync(file, Array.from({ length: 2 + (i % 4) }, (_, p) => `Document ${i} talks about pumps, paragraph ${p}.`).join('\n\n'));
    utimesSync(file, base + i, base + i);
  }
  const write = (s: Settings) => {
    const embedding = s.openai
      ? `{ provider: openai-compatible, base_url: "${s.openai.url}", api_key: test-key, model: ${s.openai.model}, dimensions: ${s.openai.dims}, price_per_million_tokens: 1000000 }`
      : `{ provider: hash, dimensions: ${s.dims ?? 32} }`;
    writeFileSync(
      join(dir, 'p.yaml'),
      `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: corpus, stream: docs, checkpoint_every: 10 } }
    destination: { type: pgvector, config: { url: "${url}", schema: "${schema}", batch_rows: 40 } }
    embedding: ${embedding}
    processing: { chunk_size: ${s.chunkSize ?? 60}, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup } ]
`,
    );
  };
  const cli = (...args: string[]) => runCli([args[0], join(dir, 'p.yaml'), ...args.slice(1)], { cwd: dir });
  return { dir, write, cli, yaml: join(dir, 'p.yaml') };
}

let openai: OpenAIServer;

beforeAll(async () => {
  openai = await startOpenAIServer({ latencyMs: 2 });
});
afterAll(() => openai.close());

describeOnPgvectorBackends('changing the embedding model or chunking', (backend) => {
  const admin = useAdminClient(() => backend.url);
  const rows = async (schema: string, table = 'docs') =>
    (
      await admin.query<{ id: string; content: string; embedding: string }>(
        `SELECT id, content, embedding::text AS embedding FROM ${qualified(schema, table)} ORDER BY id`,
      )
    ).rows;
  const storedState = async (schema: string) =>
    (await admin.query(`SELECT state FROM ${qualified(schema, '_sluice_state')} WHERE connection = 'docs'`)).rows[0]?.state;
  const tables = async (schema: string) =>
    (await admin.query<{ t: string }>(`SELECT tablename AS t FROM pg_tables WHERE schemaname = $1 ORDER BY 1`, [schema])).rows.map(
      (r) => r.t,
    );
  /** A project in a schema of its own, synced with `settings`; what it wrote and saved then. */
  const synced = async (settings: Settings) => {
    const schema = `reindex_${Math.random().toString(36).slice(2, 8)}`;
    const p = project(backend.url, schema);
    p.write(settings);
    const first = await p.cli('sync');
    expect(first.code, first.stderr).toBe(0);
    return { schema, p, original: await rows(schema), originalState: await storedState(schema) };
  };

  it(
    'refuses a changed model or chunk size before any write (sync, --dry-run, check exit 2) and says how to proceed',
    { timeout: 300_000 },
    async () => {
      const { schema, p, original: before, originalState: stateBefore } = await synced({ dims: 32 });
      expect(stateBefore.index).toMatchObject({ provider: 'hash', dimensions: 32 });

      p.write({ dims: 48 });
      for (const args of [['sync'], ['sync', '--dry-run'], ['check']]) {
        const run = await p.cli(...args);
        expect(run.code, `${args.join(' ')}: ${run.stderr}${run.stdout}`).toBe(2);
        const out = run.stdout + run.stderr;
        expect(out).toContain('(32 dimensions) → hash sluice-hash-v1 (48 dimensions)');
        expect(out).toContain(`sluice reindex ${p.yaml} --connection docs`);
        expect(out).not.toMatch(STACK_LINE);
      }
      p.write({ dims: 32, chunkSize: 40 });
      const chunking = await p.cli('sync');
      expect(chunking.code).toBe(2);
      expect(chunking.stderr).toContain('processing.chunk_size: 60 → 40');
      expect(await rows(schema)).toEqual(before);
      expect(await storedState(schema)).toEqual(stateBefore);
      // Reverting the setting is the other way out.
      p.write({ dims: 32 });
      expect((await p.cli('sync')).code).toBe(0);
    },
  );

  it(
    'reindexes while a concurrent reader always sees one complete index of one model; --keep-previous + --rollback restore it',
    { timeout: 300_000 },
    async () => {
      const { schema, p, original, originalState } = await synced({ dims: 32 });
      const docCount = async () =>
        Number((await admin.query(`SELECT count(DISTINCT id) AS n FROM ${qualified(schema, 'docs')}`)).rows[0].n);
      const chunks32 = await docCount();

      p.write({ dims: 48 });
      // The reader: one statement sees one snapshot; every one must show a whole generation.
      const reader = new pg.Client({ connectionString: backend.url });
      await reader.connect();
      const samples: Array<{ docs: number; chunks: number; min: number; max: number; loading: boolean }> = [];
      let stop = false;
      const loop = (async () => {
        while (!stop) {
          const { rows: r } = await reader.query(
            `SELECT count(DISTINCT document_id)::int AS docs, count(*)::int AS chunks,
                    min(vector_dims(embedding))::int AS min, max(vector_dims(embedding))::int AS max,
                    to_regclass($1) IS NOT NULL AS loading
               FROM ${qualified(schema, 'docs')}`,
            [qualified(schema, 'docs__sluice_new')],
          );
          samples.push(r[0]);
        }
      })();
      const run = await p.cli('reindex', '--keep-previous', '--json');
      stop = true;
      await loop;
      await reader.end();
      expect(run.code, run.stderr).toBe(0);
      const summary = JSON.parse(run.stdout);
      expect(summary.connections[0].streams.docs).toMatchObject({ records_read: DOCS, records_written: DOCS });

      expect(samples.filter((s) => s.loading).length).toBeGreaterThan(0); // read while the new index was being built
      for (const s of samples) {
        expect(s.docs).toBe(DOCS);
        expect(s.min).toBe(s.max); // never two models in one index
        expect(s.chunks).toBe(chunks32); // same chunking: the same chunks, in either generation
        expect([32, 48]).toContain(s.min);
      }
      expect(samples[0].min).toBe(32);
      expect(samples.at(-1)!.min).toBe(48);
      expect(await tables(schema)).toEqual(['_sluice_state', 'docs', 'docs__sluice_prev']);
      const reindexed = await storedState(schema);
      expect(reindexed.index).toMatchObject({ dimensions: 48, previous: { index: { dimensions: 32 } } });
      expect(reindexed.streams).toEqual(originalState.streams); // the reindex read's own cursors: the same files
      // The new settings now sync normally (nothing changed, nothing read); the old ones are refused.
      const again = await p.cli('sync', '--json');
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout).connections[0].streams.docs.records_read).toBe(0);
      expect((await p.cli('search', 'pumps', '--json')).code).toBe(0);

      const back = await p.cli('reindex', '--rollback');
      expect(back.code, back.stderr).toBe(0);
      expect(back.stdout).toContain('rolled back to hash sluice-hash-v1 (32 dimensions)');
      expect(await rows(schema)).toEqual(original);
      const restored = await storedState(schema);
      expect(restored.streams).toEqual(originalState.streams);
      expect(restored.index).toMatchObject({ dimensions: 32, previous: { index: { dimensions: 48 } } });
      expect((await p.cli('sync')).code).toBe(2); // the file still says 48: refused until it is reverted
      p.write({ dims: 32 });
      const old = await p.cli('sync', '--json');
      expect(old.code, old.stderr).toBe(0);
      expect(JSON.parse(old.stdout).connections[0].streams.docs.records_read).toBe(0);
    },
  );

  it('a SIGKILLed reindex leaves the old index and identity serving; a re-run completes', { timeout: 300_000 }, async () => {
    const { schema, p, original, originalState } = await synced({ dims: 32 });

    p.write({ dims: 48 });
    const { child, done } = startCli(['reindex', p.yaml], { cwd: p.dir });
    // Killed once the new generation holds rows: mid-load.
    let killed = false;
    for (let i = 0; i < 3000 && !killed; i++) {
      const shadow = qualified(schema, 'docs__sluice_new');
      const { rows: r } = await admin.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [shadow]);
      // `r[0]?.`: on PGlite, one session serves every connection, and a poll answered while the
      // killed CLI's connection goes away has come back empty; the next poll asks again.
      const n = r[0]?.t
        ? await admin.query(`SELECT count(*)::int AS n FROM ${shadow}`).then(
            (x) => x.rows[0].n as number,
            () => 0,
          )
        : 0;
      if (n > 0) {
        child.kill('SIGKILL');
        killed = true;
      } else await new Promise((res) => setTimeout(res, 5));
    }
    const run = await done;
    expect(killed).toBe(true);
    expect(run.signal).toBe('SIGKILL');
    expect(await rows(schema)).toEqual(original);
    expect(await storedState(schema)).toEqual(originalState);
    expect((await p.cli('sync')).code).toBe(2); // identity unchanged: the new setting is still refused

    const rerun = await p.cli('reindex');
    expect(rerun.code, rerun.stderr).toBe(0);
    const { rows: dims } = await admin.query(
      `SELECT min(vector_dims(embedding))::int AS min, max(vector_dims(embedding))::int AS max, count(DISTINCT document_id)::int AS docs FROM ${qualified(schema, 'docs')}`,
    );
    expect(dims[0]).toEqual({ min: 48, max: 48, docs: DOCS });
    expect(await tables(schema)).toEqual(['_sluice_state', 'docs']); // no leftover generation
    expect((await storedState(schema)).index).toMatchObject({ dimensions: 48 });
    expect((await storedState(schema)).index.previous).toBeUndefined();
    const rollback = await p.cli('reindex', '--rollback');
    expect(rollback.code).toBe(2);
    expect(rollback.stderr).toContain('nothing to roll back to');
  });

  it('reports progress and cost with a paid model, and --max-cost stops it with the old index serving', { timeout: 300_000 }, async () => {
    const { schema, p, original } = await synced({ openai: { url: openai.url, model: 'model-a', dims: 16 } });
    p.write({ openai: { url: openai.url, model: 'model-b', dims: 16 } });
    const refused = await p.cli('sync');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('openai-compatible model-a (16 dimensions) → openai-compatible model-b (16 dimensions)');

    const stopped = await p.cli('reindex', '--max-cost', '5', '--json');
    expect(stopped.code).toBe(1);
    expect(JSON.parse(stopped.stdout).connections[0].cost).toMatchObject({ limit_usd: 5, stopped: true });
    expect(await rows(schema)).toEqual(original);
    expect((await storedState(schema)).index).toMatchObject({ model: 'model-a' });

    const requestsBefore = openai.stats.requests;
    const run = await p.cli('reindex', '--max-cost', '1000000', '--json');
    expect(run.code, run.stderr).toBe(0);
    const summary = JSON.parse(run.stdout);
    const docs = summary.connections[0].streams.docs;
    expect(docs.records_read).toBe(DOCS);
    expect(docs.embedding_requests).toBeGreaterThan(0);
    expect(openai.stats.requests - requestsBefore).toBe(docs.embedding_requests);
    // $1 a token: the cost is the tokens this run sent.
    expect(summary.connections[0].cost).toMatchObject({ spent_usd: docs.embedding_tokens, stopped: false });
    expect((await storedState(schema)).index).toMatchObject({ model: 'model-b' });
    expect((await p.cli('sync')).code).toBe(0);
  });
});
