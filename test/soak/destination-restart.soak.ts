// The destination PostgreSQL (native pgvector, a cluster of this test's own) restarted with
// `pg_ctl restart -m immediate` while sluice is COPYing into it: the run fails in words (or
// retries), and a plain re-run ends with exactly the table of an uninterrupted run.
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { expect, it } from 'vitest';
import { qualified } from '../../connectors/destination-pgvector/sql.ts';
import { STACK_LINE, runCli, startCli, tempDir } from '../helpers/cli.ts';
import { corpusWriter, filePipeline } from '../helpers/e2e.ts';
import { describeOnNativePgvector } from '../helpers/pgvector-backends.ts';
import { restartPostgres, useOwnPostgres } from '../helpers/pg-ctl.ts';

describeOnNativePgvector('destination restarted mid-COPY', () => {
  const server = useOwnPostgres('CREATE EXTENSION vector');

  it('pg_ctl restart -m immediate twice during a load, then a plain re-run: exact', async () => {
    const dir = tempDir('dest-restart-');
    const write = corpusWriter(join(dir, 'corpus'));
    for (let i = 0; i < 1500; i++) write(`doc${String(i).padStart(4, '0')}`, 5);
    const crashed = filePipeline(join(dir, 'a'), join(dir, 'corpus'), {
      type: 'pgvector',
      config: { url: server.url, schema: 'crashed', batch_rows: 300 },
    });
    const clean = filePipeline(join(dir, 'b'), join(dir, 'corpus'), { type: 'pgvector', config: { url: server.url, schema: 'clean' } });
    const admin = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T | undefined> => {
      const c = new pg.Client({ connectionString: server.url });
      try {
        await c.connect();
        return await fn(c);
      } catch {
        return undefined;
      } finally {
        await c.end().catch(() => {});
      }
    };
    let restarts = 0;
    for (let round = 0; round < 2; round++) {
      const run = startCli(['sync', crashed, '--json']);
      const before =
        (await admin((c) =>
          c.query(`SELECT count(*)::int AS n FROM ${qualified('crashed', 'docs')}`).then((r) => r.rows[0].n as number),
        )) ?? 0;
      for (let i = 0; i < 3000; i++) {
        const n = await admin((c) =>
          c.query(`SELECT count(*)::int AS n FROM ${qualified('crashed', 'docs')}`).then((r) => r.rows[0].n as number),
        );
        if ((n ?? 0) > before) break;
        await sleep(20);
      }
      await sleep(50 + Math.floor(Math.random() * 300));
      restartPostgres(server, 'immediate');
      restarts++;
      const res = await run.done;
      expect(res.stderr).not.toMatch(STACK_LINE);
      if (res.code !== 0)
        expect(JSON.parse(res.stdout).connections[0].error.message).toMatch(
          /terminat|connection|ECONNRESET|ECONNREFUSED|shut ?down|closed|recovery|starting up/i,
        );
    }
    expect(restarts).toBe(2);
    const again = await runCli(['sync', crashed, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect((await runCli(['sync', clean])).code).toBe(0);
    const rows = (schema: string) =>
      admin((c) =>
        c
          .query(
            `SELECT id, document_id, chunk_index, content, metadata, embedding::text AS e FROM ${qualified(schema, 'docs')} ORDER BY id`,
          )
          .then((r) => r.rows),
      );
    const got = await rows('crashed');
    const want = await rows('clean');
    expect(got!.length).toBe(want!.length);
    expect(got).toEqual(want);
    const state = (schema: string) =>
      admin((c) => c.query(`SELECT state FROM ${qualified(schema, '_sluice_state')}`).then((r) => r.rows[0]?.state));
    expect(await state('crashed')).toEqual(await state('clean'));
  });
});
