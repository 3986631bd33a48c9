// CDC, heavy cases: (1) transactions of 5,000 rows sharing one commit LSN (INSERT … SELECT and
// COPY) with the sync SIGKILLed while it is inside them, then a plain re-run: the destination
// equals the table, no document twice. (2) `sync --follow` for SLUICE_SOAK_SECONDS (default 120;
// 600 for the 10-minute soak) with a trickle of changes and unrelated WAL: the child's RSS stays
// flat and the slot's retained WAL stays bounded (heartbeats advance it); the figures are printed
// for docs/reliability.md.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { copyBinary, type CopyValue } from '../../connectors/destination-pgvector/copy.ts';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';
import { defaultSlotName } from '../../connectors/source-postgres/cdc.ts';
import { runCli, startCli, tempDir } from '../helpers/cli.ts';

let url: string;
beforeAll(async () => {
  url = await createDatabase(inject('pgUrl'), 'soak_cdc');
});

function pipelineFile(dir: string, name: string, table: string, heartbeat = 10) {
  const file = join(dir, 'pipeline.yaml');
  writeFileSync(
    file,
    `version: 1
connections:
  - name: ${name}
    source:
      type: postgres
      config: { url: ${JSON.stringify(url)}, batch_size: 1000, cdc: { heartbeat_seconds: ${heartbeat}, lag_report_seconds: 5 } }
    destination: { type: jsonl, config: { path: out.jsonl, include_embeddings: false, batch_records: 700 } }
    processing: { text_fields: [body], chunk_size: 1000 }
    streams: [ { name: ${table}, sync_mode: cdc, destination_sync_mode: append_dedup } ]
`,
  );
  return file;
}

function destination(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const file = join(dir, 'out.jsonl');
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const c = JSON.parse(line) as { document_id: string; chunk_index: number; content: string };
    expect(out.has(c.document_id)).toBe(false);
    out.set(c.document_id, c.content);
  }
  return out;
}

const tableMap = async (t: string) =>
  new Map((await sql(url, `SELECT id, body FROM ${t}`)).rows.map((r) => [String(r.id), r.body as string]));

describe('CDC soak', () => {
  it('5,000-row transactions sharing one commit LSN (INSERT … SELECT, COPY), SIGKILLed inside them, then re-run: exact', async () => {
    const dir = tempDir('soak-5k-');
    const file = pipelineFile(dir, 'big_tx', 'bigtx');
    await sql(url, `CREATE TABLE bigtx (id int PRIMARY KEY, body text NOT NULL); INSERT INTO bigtx VALUES (0, 'seed')`);
    expect((await runCli(['sync', file], { cwd: dir })).code).toBe(0);
    await sql(url, `INSERT INTO bigtx SELECT g, 'inserted ' || g FROM generate_series(1, 5000) g`);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query('BEGIN');
    const rows = Array.from({ length: 5000 }, (_, i): CopyValue[] => [
      { kind: 'int4', value: 5001 + i },
      { kind: 'text', value: `copied ${5001 + i}` },
    ]);
    await copyBinary(c, 'COPY bigtx (id, body) FROM STDIN (FORMAT BINARY)', rows);
    await c.query("UPDATE bigtx SET body = body || ' (updated in the same transaction)' WHERE id % 1000 = 0");
    await c.query('COMMIT');
    await c.end();
    let kills = 0;
    for (let round = 0; round < 3; round++) {
      const out = join(dir, 'out.jsonl');
      const before = existsSync(out) ? statSync(out).mtimeMs : 0;
      const run = startCli(['sync', file], { cwd: dir });
      for (let i = 0; i < 3000 && !(existsSync(out) && statSync(out).mtimeMs > before); i++) await sleep(10);
      await sleep(Math.floor(Math.random() * 400));
      if (run.child.exitCode === null) {
        run.child.kill('SIGKILL');
        kills++;
      }
      await run.done;
    }
    expect(kills).toBeGreaterThanOrEqual(1);
    const done = await runCli(['sync', file, '--json'], { cwd: dir });
    expect(done.code, done.stderr).toBe(0);
    const dest = destination(dir);
    const src = await tableMap('bigtx');
    expect(dest.size).toBe(10_001);
    expect(dest).toEqual(src);
    process.stdout.write(
      `[soak] 5k-row single-LSN transactions: ${kills} SIGKILLs inside them, destination exact (${dest.size} documents)\n`,
    );
  });

  it('sync --follow with a trickle: RSS flat, retained WAL bounded', async () => {
    const seconds = Number(process.env.SLUICE_SOAK_SECONDS ?? 120);
    const dir = tempDir('soak-follow-');
    const file = pipelineFile(dir, 'trickle', 'trickle', 2);
    await sql(
      url,
      `CREATE TABLE trickle (id int PRIMARY KEY, body text NOT NULL); CREATE TABLE unrelated (id serial PRIMARY KEY, pad text)`,
    );
    await sql(url, `INSERT INTO trickle SELECT g, 'seed ' || g FROM generate_series(1, 2000) g`);
    const run = startCli(['sync', file, '--follow'], { cwd: dir });
    const slot = defaultSlotName('trickle', 'soak_cdc');
    const samples: Array<{ t: number; rssKb: number; walRetained: number }> = [];
    const started = Date.now();
    let id = 2001;
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    try {
      while (Date.now() - started < seconds * 1000) {
        await db.query(`INSERT INTO trickle VALUES ($1, $2)`, [id, `trickle ${id}`]);
        id++;
        // WAL the published tables never see: only heartbeats let the slot release it.
        await db.query(`INSERT INTO unrelated (pad) SELECT repeat('x', 500) FROM generate_series(1, 200)`);
        if (id % 5 === 0) {
          const rss = Number(execFileSync('ps', ['-o', 'rss=', '-p', String(run.child.pid)], { encoding: 'utf8' }).trim() || 0);
          const wal = await db.query<{ r: string | null }>(
            `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS r FROM pg_replication_slots WHERE slot_name = $1`,
            [slot],
          );
          samples.push({ t: Math.round((Date.now() - started) / 1000), rssKb: rss, walRetained: Number(wal.rows[0]?.r ?? 0) });
        }
        await sleep(500);
      }
    } finally {
      await db.end();
    }
    run.child.kill('SIGTERM');
    const res = await run.done;
    // SIGTERM: flush, save the last committed state; a --follow run stopped cleanly exits 0 (README, exit codes).
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/saving the last committed state/);
    const warm = samples.filter((s) => s.t >= Math.min(30, seconds / 3));
    const rss = warm.map((s) => s.rssKb);
    const wal = warm.map((s) => s.walRetained);
    const report = {
      seconds,
      changes: id - 2001,
      rssKbFirst: rss[0],
      rssKbMax: Math.max(...rss),
      rssKbLast: rss.at(-1),
      walRetainedMaxBytes: Math.max(...wal),
      walRetainedLastBytes: wal.at(-1),
    };
    process.stdout.write(`[soak] follow: ${JSON.stringify(report)}\n`);
    // Flat: the second half of the run does not grow past the first half by more than 25 %.
    const half = Math.floor(rss.length / 2);
    expect(Math.max(...rss.slice(half))).toBeLessThan(Math.max(...rss.slice(0, half)) * 1.25);
    // Bounded: the slot never holds more than a few MB although ~100 kB of unrelated WAL is written per second.
    expect(Math.max(...wal)).toBeLessThan(32 * 1024 * 1024);
    const dest = destination(dir);
    expect(dest.size).toBe(id - 1);
  });
});
