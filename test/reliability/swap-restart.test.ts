// The destination PostgreSQL (native pgvector, a cluster of this test's own) restarted with
// `pg_ctl restart -m immediate` while an overwrite is inside its swap transaction. Deterministic: a
// second session holds a SHARE lock on the live chunk table, so sluice's swap blocks on it (seen
// in pg_stat_activity) and the crash lands between its BEGIN and COMMIT. The run fails in words,
// readers find the previous generation whole, and a plain re-run equals a clean run.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { expect, it } from 'vitest';
import { qualified } from '../../connectors/destination-pgvector/sql.ts';
import { STACK_LINE, runCli, startCli, tempDir } from '../helpers/cli.ts';
import { corpusWriter, filePipeline } from '../helpers/e2e.ts';
import { describeOnNativePgvector } from '../helpers/pgvector-backends.ts';
import { restartPostgres, useOwnPostgres } from '../helpers/pg-ctl.ts';

describeOnNativePgvector('destination restarted mid-swap of an overwrite', () => {
  const server = useOwnPostgres('CREATE EXTENSION vector');

  async function query<T = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
    const c = new pg.Client({ connectionString: server.url });
    await c.connect();
    try {
      return (await c.query(text, params)).rows as T[];
    } finally {
      await c.end().catch(() => {});
    }
  }

  const rows = (schema: string) =>
    query(`SELECT id, document_id, chunk_index, content, metadata, embedding::text AS e FROM ${qualified(schema, 'docs')} ORDER BY id`);
  const state = async (schema: string) => (await query(`SELECT state FROM ${qualified(schema, '_sluice_state')}`))[0]?.state;
  const leftovers = (schema: string) =>
    query<{ tablename: string }>(`SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename LIKE '%sluice_new%'`, [schema]);

  it(
    'the swap transaction blocked on a lock, the server restarted -m immediate: old generation whole, re-run exact',
    { timeout: 180_000 },
    async () => {
      const dir = tempDir('swap-restart-');
      const corpus = join(dir, 'corpus');
      const write = corpusWriter(corpus);
      for (let i = 0; i < 60; i++) write(`doc${String(i).padStart(3, '0')}`, 4);
      const crashed = filePipeline(
        join(dir, 'a'),
        corpus,
        { type: 'pgvector', config: { url: server.url, schema: 'crashed' } },
        { mode: 'overwrite' },
      );
      const first = await runCli(['sync', crashed]);
      expect(first.code, first.stderr).toBe(0);
      // The uninterrupted twin: the same two generations, without the crash.
      const clean = filePipeline(
        join(dir, 'b'),
        corpus,
        { type: 'pgvector', config: { url: server.url, schema: 'clean' } },
        { mode: 'overwrite' },
      );
      expect((await runCli(['sync', clean])).code).toBe(0);
      const oldGeneration = await rows('crashed');
      expect(oldGeneration.length).toBeGreaterThan(60);

      // The next generation: changed, removed and added documents.
      for (let i = 0; i < 20; i++) write(`doc${String(i).padStart(3, '0')}`, 6, ' (v2)');
      for (let i = 50; i < 60; i++) rmSync(join(corpus, `doc${String(i).padStart(3, '0')}.md`));
      for (let i = 60; i < 75; i++) write(`doc${String(i).padStart(3, '0')}`, 2);

      const holder = new pg.Client({ connectionString: server.url });
      holder.on('error', () => {}); // the restart ends this session too
      await holder.connect();
      await holder.query('BEGIN');
      // SHARE mode: readers (and the fingerprint look-ups and the copy of kept documents, which only
      // read the live table) go on; the swap's DROP/RENAME, which needs ACCESS EXCLUSIVE, waits.
      await holder.query(`LOCK TABLE ${qualified('crashed', 'docs')} IN SHARE MODE`);

      const run = startCli(['sync', crashed, '--json']);
      let blocked: string | undefined;
      for (let i = 0; i < 1500 && !blocked; i++) {
        const waiting = await query<{ query: string }>(
          `SELECT query FROM pg_stat_activity
          WHERE wait_event_type = 'Lock' AND pid <> $1 AND query ILIKE 'DROP TABLE%' AND query NOT ILIKE '%sluice_new%'`,
          [(holder as unknown as { processID: number }).processID],
        );
        blocked = waiting[0]?.query;
        if (!blocked) await sleep(20);
      }
      expect(blocked, 'sluice never reached its swap transaction').toMatch(/DROP TABLE IF EXISTS "?crashed"?\."?docs"?/);
      // The new generation is loaded and indexed, waiting for the switch.
      expect((await leftovers('crashed')).map((r) => r.tablename)).toEqual(['docs__sluice_new']);

      restartPostgres(server, 'immediate');
      const res = await run.done;
      expect(res.code).toBe(1);
      expect(res.stderr).not.toMatch(STACK_LINE);
      const error = JSON.parse(res.stdout).connections[0].error.message as string;
      expect(error).toMatch(/cannot switch table crashed\.docs to the new generation/);
      expect(error).toMatch(/terminat|connection|shut ?down|closed|recovery/i);
      await holder.end().catch(() => {});

      // Readers: the previous generation, whole (the swap never committed).
      expect(await rows('crashed')).toEqual(oldGeneration);

      const again = await runCli(['sync', crashed, '--json']);
      expect(again.code, again.stderr).toBe(0);
      const cleanRun = await runCli(['sync', clean]);
      expect(cleanRun.code, cleanRun.stderr).toBe(0);
      const want = await rows('clean');
      expect(want).not.toEqual(oldGeneration);
      expect(await rows('crashed')).toEqual(want);
      expect(await state('crashed')).toEqual(await state('clean'));
      expect(await leftovers('crashed')).toEqual([]);
    },
  );
});
