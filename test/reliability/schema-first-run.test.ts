// A CDC stream whose FIRST run (`sync --follow`, nothing kept yet) is stopped by a refused schema
// change keeps the schema seen at its start: the next run reports the same schema change (not a
// missing field), and accepting the change ends exact.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, inject, it } from 'vitest';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';
import { STACK_LINE, runCli, startCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { documents } from '../helpers/exact.ts';

const pipeline = (url: string, extra = '') => `version: 1
connections:
  - name: first
    source: { type: postgres, config: { url: "${url}", cdc: { heartbeat_seconds: 1 } } }
    destination: { type: jsonl, config: { path: ./out.jsonl, include_embeddings: false } }
    processing: { text_fields: [title, body], chunk_size: 40, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: fr, sync_mode: cdc, destination_sync_mode: append_dedup } ]
${extra}`;

async function sync(dir: string) {
  const r = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir });
  expect(r.stderr).not.toMatch(STACK_LINE);
  return { ...r, conn: r.stdout.trim() ? JSON.parse(r.stdout).connections[0] : undefined };
}

it(
  'first run stopped by a dropped text column: the schema from its start is kept, the next run names the schema change',
  { timeout: 300_000 },
  async () => {
    const url = await createDatabase(inject('pgUrl'), 'schema_first_run');
    await sql(url, `CREATE TABLE fr (id int PRIMARY KEY, title text, body text)`);
    await sql(url, `INSERT INTO fr SELECT g, 'T' || g, 'row ' || g || ' has a body long enough for chunks' FROM generate_series(1, 3) g`);
    const dir = tempDir('schema-first-run-');
    writeFiles(dir, { 'p.yaml': pipeline(url) });
    const out = join(dir, 'out.jsonl');
    const kept = join(dir, '.sluice/state/schema/first.json');
    const has = (id: string) => existsSync(out) && documents(out).has(id);

    // The very first run of the connection streams on; the drop arrives mid-stream.
    const run = startCli(['sync', 'p.yaml', '--follow', '--json'], { cwd: dir });
    for (const end = Date.now() + 90_000; !has('3') && Date.now() < end;) await sleep(100);
    expect(has('3')).toBe(true);
    await sql(url, `ALTER TABLE fr DROP COLUMN body; INSERT INTO fr VALUES (4, 'T4')`);
    const stopped = await Promise.race([run.done, sleep(90_000).then(() => undefined)]);
    if (!stopped) run.child.kill('SIGTERM');
    expect(stopped, 'the follow run stops by itself on the refused change').toBeDefined();
    expect(stopped!.code).not.toBe(0);
    expect(JSON.parse(stopped!.stdout).connections[0].error.message).toMatch(/fr\.body dropped \(used in text\)/);
    expect(has('4')).toBe(false);
    const size = statSync(out).size;

    // What discover saw at the start is kept (body included), not what the refused change made of it.
    expect(Object.keys(JSON.parse(readFileSync(kept, 'utf8')).streams.fr).sort()).toEqual(['body', 'id', 'title']);

    const again = await sync(dir);
    expect(again.code).not.toBe(0);
    expect(again.conn.error.message).toBe('schema changed: fr.body dropped (used in text); nothing was written');
    expect(again.conn.error.hint).toMatch(/schema_changes: propagate/);
    expect(statSync(out).size).toBe(size);

    writeFiles(dir, { 'p.yaml': pipeline(url, '    schema_changes: propagate\n') });
    const accepted = await sync(dir);
    expect(accepted.code, accepted.stderr).toBe(0);
    expect(accepted.conn.schema_changes).toMatchObject([{ stream: 'fr', column: 'body', change: 'dropped', action: 'propagated' }]);
    expect(documents(out).get('4')![0].content).toBe('T4');
    expect([...documents(out).keys()].sort()).toEqual(['1', '2', '3', '4']);
  },
);
