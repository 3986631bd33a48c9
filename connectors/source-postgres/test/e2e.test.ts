// End to end through the real CLI into the jsonl destination: CDC survives SIGKILL at random
// points (the destination ends equal to the table), and a full refresh resumes mid-table.
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startCli, tempDir, writeFiles } from '../../../test/helpers/cli.ts';
import { createDatabase, sql } from './helpers.ts';
import { defaultSlotName } from '../cdc.ts';

let url: string;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

beforeAll(async () => {
  url = await createDatabase(inject('pgUrl'), 'srcpg_e2e');
});

function pipeline(dir: string, name: string, table: string, mode: 'cdc' | 'full_refresh', batch: number, dsm = 'append_dedup') {
  writeFiles(dir, {
    'pipeline.yaml': `version: 1
connections:
  - name: ${name}
    source:
      type: postgres
      config:
        url: ${JSON.stringify(url)}
        batch_size: ${batch}
    destination:
      type: jsonl
      config: { path: out.jsonl, include_embeddings: false, batch_records: 400 }
    processing:
      text_fields: [body]
      chunk_size: 1000
    streams:
      - name: ${table}
        sync_mode: ${mode}
        destination_sync_mode: ${dsm}
`,
  });
  return join(dir, 'pipeline.yaml');
}

function destination(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const file = join(dir, 'out.jsonl');
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const c = JSON.parse(line) as { document_id: string; chunk_index: number; content: string };
    expect(c.chunk_index).toBe(0);
    expect(out.has(c.document_id)).toBe(false); // never duplicated
    out.set(c.document_id, c.content);
  }
  return out;
}

async function table(name: string): Promise<Map<string, string>> {
  const rows = (await sql(url, `SELECT id, body FROM ${name}`)).rows;
  return new Map(rows.map((r) => [String(r.id), r.body as string]));
}

/** Deterministic pseudo-random numbers, so a failure can be replayed. */
function prng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
}

async function waitForStateChange(stateFile: string, since: number, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (existsSync(stateFile) && statSync(stateFile).mtimeMs > since) return true;
    await sleep(20);
  }
  return false;
}

describe('postgres source through the CLI', () => {
  it('CDC: SIGKILLed mid-stream and restarted, the destination ends equal to the table', async () => {
    const dir = tempDir('sluice-pg-cdc-');
    dirs.push(dir);
    const file = pipeline(dir, 'pgcdc', 'kdocs', 'cdc', 500);
    const stateFile = join(dir, '.sluice/state/pgcdc.json');
    await sql(
      url,
      `CREATE TABLE kdocs (id int PRIMARY KEY, body text NOT NULL); INSERT INTO kdocs SELECT g, 'seed ' || g FROM generate_series(1, 3000) g;`,
    );
    const rand = prng(42);
    let kills = 0;
    let nextId = 3001;
    for (let round = 0; round < 4; round++) {
      if (round > 0) {
        // Many small transactions, so the stream has many commit points to be killed between.
        const c = (await import('pg')).default;
        const client = new c.Client(url);
        await client.connect();
        for (let t = 0; t < 20; t++) {
          await client.query(`INSERT INTO kdocs SELECT g, 'r${round} ins ' || g FROM generate_series($1::int, $1::int + 49) g`, [nextId]);
          nextId += 50;
          await client.query(`UPDATE kdocs SET body = 'r${round} upd ' || id || ' ' || $1 WHERE id % 97 = $2`, [
            t,
            Math.floor(rand() * 97),
          ]);
          await client.query(`DELETE FROM kdocs WHERE id % 211 = $1`, [Math.floor(rand() * 211)]);
        }
        await client.end();
      }
      // Rounds 1 and 2 are always killed; the others only the odd time (the last one never).
      const kill = round === 1 || round === 2 || (round === 0 && rand() < 0.2);
      const before = existsSync(stateFile) ? statSync(stateFile).mtimeMs : 0;
      const run = startCli(['sync', file, '--json'], { cwd: dir });
      if (kill) {
        if (await waitForStateChange(stateFile, before, 30_000)) {
          await sleep(Math.floor(rand() * 150));
          run.child.kill('SIGKILL');
          kills++;
        }
      }
      const res = await run.done;
      if (!kill) {
        expect(res.code, res.stderr).toBe(0);
        expect(JSON.parse(res.stdout).status).toBe('succeeded');
      }
    }
    expect(kills).toBeGreaterThanOrEqual(2);
    const dest = destination(dir);
    const src = await table('kdocs');
    expect(dest.size).toBe(src.size);
    for (const [id, body] of src) expect(dest.get(id)).toBe(body);
    // The slot was acknowledged up to the committed state.
    const state = JSON.parse(readFileSync(stateFile, 'utf8')).state;
    const slot = (
      await sql(
        url,
        `SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = '${defaultSlotName('pgcdc', 'srcpg_e2e')}'`,
      )
    ).rows[0].l;
    expect(slot).toBe(state.shared.lsn);
  }, 180_000);

  // full_refresh + append_dedup into a destination that lists its documents is swept at the end of
  // a complete read (docs/fingerprints.md), so after a crash it reads from the start: what the killed
  // run wrote is recognised by its fingerprints and neither embedded nor written again.
  it('full refresh after SIGKILL re-reads from the start, skips what was written, and ends exact', async () => {
    const dir = tempDir('sluice-pg-fr-');
    dirs.push(dir);
    const file = pipeline(dir, 'pgfr', 'frdocs', 'full_refresh', 500);
    const stateFile = join(dir, '.sluice/state/pgfr.json');
    await sql(
      url,
      `CREATE TABLE frdocs (id int PRIMARY KEY, body text NOT NULL); INSERT INTO frdocs SELECT g, 'row ' || g FROM generate_series(1, 6000) g;`,
    );
    const run = startCli(['sync', file, '--json'], { cwd: dir });
    expect(await waitForStateChange(stateFile, 0, 30_000)).toBe(true);
    run.child.kill('SIGKILL');
    await run.done;
    const saved = JSON.parse(readFileSync(stateFile, 'utf8')).state.streams.frdocs as { pk_after: number[] };
    expect(saved.pk_after[0]).toBeGreaterThan(0);
    expect(saved.pk_after[0]).toBeLessThan(6000);
    const res = await startCli(['sync', file, '--json'], { cwd: dir }).done;
    expect(res.code, res.stderr).toBe(0);
    const summary = JSON.parse(res.stdout);
    const stats = summary.connections[0].streams.frdocs;
    expect(stats.records_read).toBe(6000);
    expect(stats.records_unchanged).toBeGreaterThanOrEqual(saved.pk_after[0]);
    expect(stats.records_written).toBe(6000 - stats.records_unchanged);
    const dest = destination(dir);
    const src = await table('frdocs');
    expect(dest.size).toBe(src.size);
    for (const [id, body] of src) expect(dest.get(id)).toBe(body);
  }, 120_000);

  it('CDC into pgvector (PGlite) with the hash embedder: updates, deletes and a TOAST-unchanged update', async () => {
    const dir = tempDir('sluice-pg-vec-');
    dirs.push(dir);
    await sql(
      url,
      `CREATE TABLE vdocs (id int PRIMARY KEY, n int, body text NOT NULL); INSERT INTO vdocs SELECT g, 0, 'document number ' || g FROM generate_series(1, 40) g;`,
    );
    const big = (await sql(url, `SELECT string_agg(md5(g::text), '') AS s FROM generate_series(1, 400) g`)).rows[0].s as string;
    await sql(url, `UPDATE vdocs SET body = $1 WHERE id = 7`, [big]);
    writeFiles(dir, {
      'pipeline.yaml': `version: 1
connections:
  - name: pgvec
    source: { type: postgres, config: { url: ${JSON.stringify(url)} } }
    destination: { type: pgvector, config: { url: ${JSON.stringify(inject('pgliteUrl'))}, schema: pgsrc_vec, index: none } }
    embedding: { provider: hash, dimensions: 32 }
    processing: { text_fields: [body], chunk_overlap: 0 }
    streams: [{ name: vdocs, sync_mode: cdc, destination_sync_mode: append_dedup }]
`,
    });
    const file = join(dir, 'pipeline.yaml');
    const first = await startCli(['sync', file, '--json'], { cwd: dir }).done;
    expect(first.code, first.stderr).toBe(0);
    await sql(
      url,
      `UPDATE vdocs SET n = 1 WHERE id = 7; UPDATE vdocs SET body = 'rewritten' WHERE id = 3; DELETE FROM vdocs WHERE id = 5; INSERT INTO vdocs VALUES (41, 0, 'new one')`,
    );
    const second = await startCli(['sync', file, '--json'], { cwd: dir }).done;
    expect(second.code, second.stderr).toBe(0);
    const chunks = (
      await sql(inject('pgliteUrl'), `SELECT document_id, chunk_index, content FROM pgsrc_vec.vdocs ORDER BY document_id, chunk_index`)
    ).rows as { document_id: string; content: string }[];
    const docs = new Map<string, string[]>();
    for (const c of chunks) docs.set(c.document_id, [...(docs.get(c.document_id) ?? []), c.content]);
    const src = await table('vdocs');
    expect([...docs.keys()].sort()).toEqual([...src.keys()].sort());
    expect(docs.get('3')).toEqual(['rewritten']);
    expect(docs.has('5')).toBe(false);
    const seven = docs.get('7')!;
    expect(seven.join('').length).toBeGreaterThanOrEqual(big.length);
    for (const piece of seven) expect(big).toContain(piece);
  }, 120_000);

  it('sync --follow streams until SIGTERM, then checkpoints and exits cleanly', async () => {
    const dir = tempDir('sluice-pg-follow-');
    dirs.push(dir);
    const file = pipeline(dir, 'pgfollow', 'fdocs', 'cdc', 500);
    const stateFile = join(dir, '.sluice/state/pgfollow.json');
    await sql(url, `CREATE TABLE fdocs (id int PRIMARY KEY, body text NOT NULL); INSERT INTO fdocs VALUES (1, 'first')`);
    const run = startCli(['sync', file, '--follow', '--json'], { cwd: dir });
    expect(await waitForStateChange(stateFile, 0, 30_000)).toBe(true); // snapshot committed
    await sql(url, `INSERT INTO fdocs VALUES (2, 'second'); UPDATE fdocs SET body = 'first, edited' WHERE id = 1`);
    const deadline = Date.now() + 30_000;
    while (destination(dir).get('2') !== 'second' && Date.now() < deadline) await sleep(100);
    expect(destination(dir).get('1')).toBe('first, edited');
    run.child.kill('SIGTERM');
    const res = await run.done;
    expect(res.signal).toBeNull(); // it exited by itself
    expect(JSON.parse(res.stdout).status).toBe('interrupted');
    const state = JSON.parse(readFileSync(stateFile, 'utf8')).state;
    const slot = (
      await sql(
        url,
        `SELECT confirmed_flush_lsn::text AS l, active FROM pg_replication_slots WHERE slot_name = '${defaultSlotName('pgfollow', 'srcpg_e2e')}'`,
      )
    ).rows[0];
    expect(slot.active).toBe(false);
    expect(slot.l).toBe(state.shared.lsn);
  }, 120_000);
});
