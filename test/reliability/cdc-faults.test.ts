// Fault matrix, CDC cases on the shared test server (each in a database of its own):
// - TRUNCATE of a published table: the run stops before it, in words, and the state never passes
//   it; the rebuild the error asks for ends exact.
// - ALTER TABLE ADD COLUMN, a type change and DROP COLUMN while `sync --follow` streams, under the
//   `schema_changes` policy; a plain re-run (after accepting the change) ends exact.
// - Two pipelines whose connections share a name, on two databases of one server: their slots and
//   publications do not collide.
// "Exact" is the destination of a clean run from scratch over the same table, no document twice,
// chunk indexes contiguous.
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, inject, it } from 'vitest';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';
import { defaultSlotName } from '../../connectors/source-postgres/cdc.ts';
import { STACK_LINE, runCli, startCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { documents } from '../helpers/exact.ts';

const pipeline = (url: string, name: string, table: string, extra = '') => `version: 1
connections:
  - name: ${name}
    source: { type: postgres, config: { url: "${url}", cdc: { heartbeat_seconds: 1 } } }
    destination: { type: jsonl, config: { path: ./out.jsonl, include_embeddings: false } }
    processing: { text_fields: [title, body], metadata_fields: [tag], chunk_size: 40, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: ${table}, sync_mode: cdc, destination_sync_mode: append_dedup } ]
${extra}`;

async function sync(dir: string, args: string[] = []) {
  const r = await runCli(['sync', 'p.yaml', '--json', ...args], { cwd: dir });
  expect(r.stderr).not.toMatch(STACK_LINE);
  const summary = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
  return { ...r, conn: summary?.connections?.[0] };
}

/** What a clean run from scratch writes for the same table (the reference for "exact"). */
async function cleanRun(url: string, table: string, extra = '', edit = (yaml: string) => yaml) {
  const dir = tempDir('cdc-clean-');
  // A full refresh: no slot of its own on the shared server.
  const yaml = pipeline(url, 'clean', table, extra).replace(
    'sync_mode: cdc, destination_sync_mode: append_dedup',
    'sync_mode: full_refresh, destination_sync_mode: overwrite',
  );
  writeFiles(dir, { 'p.yaml': edit(yaml) });
  const r = await sync(dir);
  expect(r.code, r.stderr).toBe(0);
  return documents(join(dir, 'out.jsonl'));
}

const body = (i: number) => `row ${i} has a body long enough to make two or three chunks of forty characters`;

describe('CDC faults', () => {
  it('TRUNCATE of a published table stops the run before it; the rebuild it asks for ends exact', { timeout: 600_000 }, async () => {
    const url = await createDatabase(inject('pgUrl'), 'faults_truncate');
    await sql(url, `CREATE TABLE tr (id int PRIMARY KEY, title text, body text, tag text)`);
    await sql(
      url,
      `INSERT INTO tr SELECT g, 'T' || g, 'row ' || g || ' has a long body, two chunks at least', 'x' FROM generate_series(1, 5) g`,
    );
    const dir = tempDir('cdc-truncate-');
    writeFiles(dir, { 'p.yaml': pipeline(url, 'trunc', 'tr') });
    expect((await sync(dir)).code).toBe(0);
    expect([...documents(join(dir, 'out.jsonl')).keys()]).toEqual(['1', '2', '3', '4', '5']);

    await sql(url, `INSERT INTO tr VALUES (6, 'T6', 'before the truncate', 'x')`);
    await sql(url, `TRUNCATE tr`);
    await sql(url, `INSERT INTO tr VALUES (100, 'T100', 'after the truncate', 'y'), (101, 'T101', 'after it too', 'y')`);
    const stopped = await sync(dir);
    expect(stopped.code).not.toBe(0);
    expect(stopped.conn.error.message).toMatch(
      /^TRUNCATE of public\.tr \(stream tr\) after [0-9A-F]+\/[0-9A-F]+: the removed rows are not in the WAL, so their chunks cannot be deleted from the index; stopped before it/,
    );
    expect(stopped.conn.error.hint).toBe(
      'rebuild this connection from a new snapshot: delete its documents in the destination, run sluice state reset <pipeline> --connection trunc, then sync again',
    );
    // Nothing after the TRUNCATE was applied (row 6, before it, may or may not have been flushed),
    // and the state did not pass it: a plain re-run stops again.
    expect([...documents(join(dir, 'out.jsonl')).keys()].filter((id) => id !== '6')).toEqual(['1', '2', '3', '4', '5']);
    const again = await sync(dir);
    expect(again.code).not.toBe(0);
    expect(again.conn.error.message).toMatch(/^TRUNCATE of public\.tr/);

    // The rebuild, as the hint says: exact afterwards, and CDC goes on from the new snapshot.
    rmSync(join(dir, 'out.jsonl'));
    const reset = await runCli(['state', 'reset', 'p.yaml', '--connection', 'trunc'], { cwd: dir });
    expect(reset.code, reset.stderr).toBe(0);
    expect((await sync(dir)).code).toBe(0);
    await sql(url, `INSERT INTO tr VALUES (102, 'T102', 'streamed after the rebuild', 'z'); DELETE FROM tr WHERE id = 100`);
    const streamed = await sync(dir);
    expect(streamed.code, streamed.stderr).toBe(0);
    const got = documents(join(dir, 'out.jsonl'));
    expect([...got.keys()]).toEqual(['101', '102']);
    expect(got).toEqual(await cleanRun(url, 'tr'));
  });

  it(
    'ALTER TABLE while sync --follow streams: an added column and a retyped unused column propagate; a dropped text column stops before its record; accepting it ends exact',
    { timeout: 600_000 },
    async () => {
      const url = await createDatabase(inject('pgUrl'), 'faults_alter');
      await sql(url, `CREATE TABLE al (id int PRIMARY KEY, n int, title text, body text, tag text)`);
      await sql(
        url,
        `INSERT INTO al SELECT g, g, 'T' || g, 'row ' || g || ' body that is long enough for chunks', 't' FROM generate_series(1, 4) g`,
      );
      const dir = tempDir('cdc-alter-');
      writeFiles(dir, { 'p.yaml': pipeline(url, 'alter', 'al') });
      const out = join(dir, 'out.jsonl');
      const has = (id: string) => documents(out).has(id);
      const waitFor = async (what: () => boolean, ms = 60_000) => {
        for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (what()) return true;
        return false;
      };

      expect((await sync(dir)).code).toBe(0); // the snapshot, and the schema kept with it
      const run = startCli(['sync', 'p.yaml', '--follow', '--json'], { cwd: dir });
      expect(await waitFor(() => has('4'))).toBe(true);
      await sql(url, `ALTER TABLE al ADD COLUMN extra text; INSERT INTO al VALUES (5, 5, 'T5', 'with extra', 't', 'more')`);
      expect(await waitFor(() => has('5'))).toBe(true);
      await sql(url, `ALTER TABLE al ALTER COLUMN n TYPE bigint; INSERT INTO al VALUES (6, 6, 'T6', 'after n became bigint', 't', null)`);
      expect(await waitFor(() => has('6'))).toBe(true);
      const before = statSync(out).size;
      await sql(url, `ALTER TABLE al DROP COLUMN body; INSERT INTO al VALUES (7, 7, 'T7', 't', 'no body any more')`);
      const stopped = await Promise.race([run.done, sleep(90_000).then(() => undefined)]);
      if (!stopped) run.child.kill('SIGTERM');
      expect(stopped, 'the follow run stops by itself on the refused change').toBeDefined();
      expect(stopped!.code).not.toBe(0);
      expect(stopped!.stderr).not.toMatch(STACK_LINE);
      const conn = JSON.parse(stopped!.stdout).connections[0];
      expect(conn.error.message).toMatch(/al\.body dropped \(used in text\)/);
      expect(conn.error.hint).toMatch(/schema_changes: propagate/);
      expect(has('7')).toBe(false);
      expect(statSync(out).size).toBe(before);
      // Refused until accepted: a plain re-run stops again, writing nothing.
      const again = await sync(dir);
      expect(again.code).not.toBe(0);
      expect(statSync(out).size).toBe(before);

      writeFiles(dir, { 'p.yaml': pipeline(url, 'alter', 'al', '    schema_changes: propagate\n') });
      const accepted = await sync(dir);
      expect(accepted.code, accepted.stderr).toBe(0);
      // From now on the pipeline no longer names the dropped column (a field the table lacks is
      // refused once the drop is kept).
      const withoutBody = (yaml: string) => yaml.replace('text_fields: [title, body]', 'text_fields: [title]');
      writeFiles(dir, { 'p.yaml': withoutBody(pipeline(url, 'alter', 'al')) });
      await sql(url, `UPDATE al SET title = 'T2 again' WHERE id = 2; DELETE FROM al WHERE id = 3`);
      // The new text_fields is a new index identity: a plain sync refuses it (documents written
      // before the DROP would keep their old text, a mixed index); a reindex rebuilds every document.
      const later = await sync(dir);
      expect(later.code, later.stderr).toBe(2);
      expect(later.stderr).toMatch(/processing\.text_fields/);
      const rebuilt = await runCli(['reindex', 'p.yaml'], { cwd: dir });
      expect(rebuilt.code, rebuilt.stderr).toBe(0);
      const got = documents(out);
      const clean = await cleanRun(url, 'al', '', withoutBody);
      expect([...got.keys()]).toEqual([...clean.keys()]);
      for (const id of got.keys()) expect(got.get(id)).toEqual(clean.get(id));
      // And CDC goes on from the reindexed position.
      await sql(url, `UPDATE al SET title = 'T2 once more' WHERE id = 2`);
      const next = await sync(dir);
      expect(next.code, next.stderr).toBe(0);
      expect(documents(out).get('2')![0].content).toContain('T2 once more');
    },
  );

  it('two pipelines with one connection name on two databases: slots and publications do not collide', { timeout: 600_000 }, async () => {
    const urlA = await createDatabase(inject('pgUrl'), 'faults_pub_a');
    const urlB = await createDatabase(inject('pgUrl'), 'faults_pub_b');
    await sql(
      urlA,
      `CREATE TABLE only_a (id int PRIMARY KEY, title text, body text, tag text); INSERT INTO only_a VALUES (1, 'A1', 'a', 'a')`,
    );
    await sql(
      urlB,
      `CREATE TABLE only_b (id int PRIMARY KEY, title text, body text, tag text); INSERT INTO only_b VALUES (1, 'B1', 'b', 'b')`,
    );
    const dirA = tempDir('cdc-pub-a-');
    const dirB = tempDir('cdc-pub-b-');
    writeFiles(dirA, { 'p.yaml': pipeline(urlA, 'shared', 'only_a') });
    writeFiles(dirB, { 'p.yaml': pipeline(urlB, 'shared', 'only_b') });
    expect((await sync(dirA)).code).toBe(0);
    expect((await sync(dirB)).code).toBe(0);
    const pubs = async (url: string) =>
      (await sql(url, `SELECT pubname, schemaname || '.' || tablename AS t FROM pg_publication_tables ORDER BY 1, 2`)).rows;
    // A publication lives in its database: each pipeline's has exactly its own table.
    expect(await pubs(urlA)).toEqual([{ pubname: 'sluice_shared', t: 'public.only_a' }]);
    expect(await pubs(urlB)).toEqual([{ pubname: 'sluice_shared', t: 'public.only_b' }]);
    const slots = (await sql(urlA, `SELECT slot_name, database FROM pg_replication_slots WHERE slot_name LIKE 'sluice_shared%' ORDER BY 2`))
      .rows;
    expect(slots).toEqual([
      { slot_name: defaultSlotName('shared', 'faults_pub_a'), database: 'faults_pub_a' },
      { slot_name: defaultSlotName('shared', 'faults_pub_b'), database: 'faults_pub_b' },
    ]);
    // Both stream on, each seeing only its own changes, concurrently.
    await sql(urlA, `INSERT INTO only_a VALUES (2, 'A2', 'a two', 'a')`);
    await sql(urlB, `INSERT INTO only_b VALUES (2, 'B2', 'b two', 'b'); DELETE FROM only_b WHERE id = 1`);
    const [a, b] = await Promise.all([sync(dirA), sync(dirB)]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(documents(join(dirA, 'out.jsonl'))).toEqual(await cleanRun(urlA, 'only_a'));
    expect(documents(join(dirB, 'out.jsonl'))).toEqual(await cleanRun(urlB, 'only_b'));
    expect([...documents(join(dirB, 'out.jsonl')).keys()]).toEqual(['2']);
  });
});
