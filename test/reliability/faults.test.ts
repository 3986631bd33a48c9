// Fault matrix, the quick cases (the long and heavy ones are in test/soak): a second sync of a
// running connection is refused by a lock; a truncated state file stops the run with a clear error
// (never a silent full re-read); sluice's PostgreSQL backend terminated mid-sync fails the run in
// words and a plain re-run ends exact.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { expect, it, describe } from 'vitest';
import { qualified } from '../../connectors/destination-pgvector/sql.ts';
import { STACK_LINE, runCli, startCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { corpusWriter, filePipeline } from '../helpers/e2e.ts';
import { describeOnNativePgvector } from '../helpers/pgvector-backends.ts';

const slowSource = `
  import { existsSync } from 'node:fs';
  import { join } from 'node:path';
  import { z } from 'zod';
  import { message } from '${join(process.cwd(), 'src/protocol/messages.ts')}';
  export default {
    kind: 'source',
    spec: { name: 'slow', config: z.strictObject({}) },
    capabilities: { syncModes: ['incremental'], sourceDefinedCursor: true },
    async check() { return { ok: true }; },
    async discover() { return { streams: [{ name: 's', json_schema: { type: 'object' }, supported_sync_modes: ['incremental'], source_defined_cursor: true, source_defined_primary_key: [['id']] }] }; },
    async *read(_c, _cat, state, ctx) {
      const n = (state?.streams?.s?.n ?? 0) + 1;
      yield message.record('s', { id: n, content: 'record ' + n });
      while (!existsSync(join(ctx.baseDir, 'go'))) await new Promise((r) => setTimeout(r, 50));
      yield message.streamState('s', { n });
    },
  };`;

describe('fault matrix', () => {
  it(
    'a second sync of a running connection is refused with a clear message; a dead run’s lock is taken over',
    { timeout: 180_000 },
    async () => {
      const dir = tempDir('lock-', true);
      writeFiles(dir, {
        'slow.ts': slowSource,
        'p.yaml': `version: 1
connections:
  - name: c
    source: { type: ./slow.ts }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
`,
      });
      const first = startCli(['sync', 'p.yaml'], { cwd: dir });
      const lock = join(dir, '.sluice/state/locks/c.lock');
      for (let i = 0; i < 600 && !existsSync(lock); i++) await sleep(50);
      expect(existsSync(lock)).toBe(true);
      const second = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir });
      expect(second.code).not.toBe(0);
      const err = JSON.parse(second.stdout).connections[0].error;
      expect(err.message).toBe(
        `connection c is already being synced by process ${first.child.pid} on ${(await import('node:os')).hostname()} (since ${JSON.parse(readFileSync(lock, 'utf8')).started})`,
      );
      expect(err.hint).toMatch(/wait for that sync to finish or stop it/);
      expect(second.stderr).not.toMatch(STACK_LINE);
      writeFileSync(join(dir, 'go'), '');
      expect((await first.done).code).toBe(0);
      expect(existsSync(lock)).toBe(false);

      // A lock left by a process that no longer exists does not block the next run.
      writeFileSync(
        lock,
        JSON.stringify({ pid: 2 ** 22 + 7, host: (await import('node:os')).hostname(), started: '2020-01-01T00:00:00Z' }),
      );
      const next = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir });
      expect(next.code, next.stderr).toBe(0);
      expect(JSON.parse(readFileSync(join(dir, '.sluice/state/c.json'), 'utf8')).state.streams.s).toEqual({ n: 2 });
    },
  );

  it(
    'a truncated state file stops the run in words and writes nothing (never a silent re-read from scratch)',
    { timeout: 180_000 },
    async () => {
      const dir = tempDir('corrupt-state-');
      const write = corpusWriter(join(dir, 'corpus'));
      for (let i = 0; i < 5; i++) write(`d${i}`, 2);
      const yaml = filePipeline(dir, join(dir, 'corpus'), { type: 'jsonl', config: { path: join(dir, 'out.jsonl') } });
      expect((await runCli(['sync', yaml])).code).toBe(0);
      const stateFile = join(dir, '.sluice/state/e2e.json');
      const good = readFileSync(stateFile, 'utf8');
      writeFileSync(stateFile, good.slice(0, Math.floor(good.length / 2)));
      const out = readFileSync(join(dir, 'out.jsonl'), 'utf8');
      write('d9', 2); // new work that must not be picked up as a full re-read
      const r = await runCli(['sync', yaml, '--json']);
      expect(r.code).not.toBe(0);
      const err = JSON.parse(r.stdout).connections[0].error;
      expect(err.message).toContain(`state file ${stateFile} is not valid JSON`); // then the parser's words
      expect(err.hint).toMatch(/sluice state reset <pipeline> --connection e2e/);
      expect(r.stderr).not.toMatch(STACK_LINE);
      expect(readFileSync(join(dir, 'out.jsonl'), 'utf8')).toBe(out);
    },
  );
});

describeOnNativePgvector('fault matrix, native PostgreSQL destination', (backend) => {
  it(
    'pg_terminate_backend of sluice’s session mid-sync: a clear failure, and a plain re-run ends exact',
    { timeout: 300_000 },
    async () => {
      const admin = new pg.Client({ connectionString: backend.url });
      await admin.connect();
      try {
        const tag = Math.random().toString(36).slice(2, 8);
        const dir = tempDir('terminate-');
        const write = corpusWriter(join(dir, 'corpus'));
        for (let i = 0; i < 300; i++) write(`doc${String(i).padStart(3, '0')}`, 4);
        const crashed = filePipeline(join(dir, 'a'), join(dir, 'corpus'), {
          type: 'pgvector',
          config: { url: backend.url, schema: `term_${tag}`, batch_rows: 50 },
        });
        const clean = filePipeline(join(dir, 'b'), join(dir, 'corpus'), {
          type: 'pgvector',
          config: { url: backend.url, schema: `clean_${tag}` },
        });
        const run = startCli(['sync', crashed, '--json']);
        let terminated = 0;
        for (let i = 0; i < 2000 && !terminated; i++) {
          const { rows } = await admin.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [qualified(`term_${tag}`, 'docs')]);
          const n = rows[0].t ? (await admin.query(`SELECT count(*)::int AS n FROM ${qualified(`term_${tag}`, 'docs')}`)).rows[0].n : 0;
          if (n > 0) {
            const r = await admin.query(
              `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sluice' AND datname = current_database() AND pid <> pg_backend_pid()`,
            );
            terminated = r.rowCount ?? 0;
          } else await sleep(10);
        }
        const res = await run.done;
        if (terminated && res.code !== 0) {
          const summary = JSON.parse(res.stdout);
          expect(summary.connections[0].error.message).toMatch(/terminat|connection|server closed|Connection terminated/i);
          expect(res.stderr).not.toMatch(STACK_LINE);
        }
        expect(terminated).toBeGreaterThan(0);
        expect((await runCli(['sync', crashed])).code).toBe(0);
        expect((await runCli(['sync', clean])).code).toBe(0);
        const table = async (schema: string) =>
          (
            await admin.query(
              `SELECT id, document_id, chunk_index, content, embedding::text AS e FROM ${qualified(schema, 'docs')} ORDER BY id`,
            )
          ).rows;
        const got = await table(`term_${tag}`);
        expect(got.length).toBeGreaterThan(300);
        expect(got).toEqual(await table(`clean_${tag}`));
      } finally {
        await admin.end();
      }
    },
  );
});
