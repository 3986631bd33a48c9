// `schema_changes` for every source: a discovering source (PostgreSQL: columns from the catalog)
// and a schemaless one (JSON-lines files: columns learnt from records). The schema is kept beside
// the state; each change is logged with its columns and what was done; a refused change stops the
// run before anything of it is written.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';
import { readJsonl } from '../helpers/jsonl.ts';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';

async function sync(dir: string) {
  const r = await runCli(['sync', join(dir, 'p.yaml'), '--json'], { cwd: dir });
  const summary = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
  return { ...r, summary, conn: summary?.connections?.[0] };
}

describe('schema changes, discovering source (PostgreSQL)', () => {
  let url: string;
  beforeAll(async () => {
    url = await createDatabase(inject('pgUrl'), 'schema_changes_src');
  });

  const pipeline = (table: string, policy?: string) => `version: 1
connections:
  - name: pg_${table}
    source: { type: postgres, config: { url: "${url}" } }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
    processing: { text_fields: [title, body], metadata_fields: [tag] }
    streams: [ { name: ${table}, sync_mode: incremental, cursor_field: n, destination_sync_mode: append_dedup } ]
${policy ? `    schema_changes: ${policy}\n` : ''}`;

  it(
    'default: an added nullable column propagates; a dropped column used in text stops before any write',
    { timeout: 240_000 },
    async () => {
      await sql(
        url,
        `CREATE TABLE art (id int PRIMARY KEY, n int, title text, body text, tag text); INSERT INTO art VALUES (1, 1, 'One', 'first', 'x')`,
      );
      const dir = tempDir('schema-pg-');
      writeFiles(dir, { 'p.yaml': pipeline('art') });
      expect((await sync(dir)).code).toBe(0);
      expect(existsSync(join(dir, '.sluice/state/schema/pg_art.json'))).toBe(true);

      await sql(url, `ALTER TABLE art ADD COLUMN extra text; INSERT INTO art VALUES (2, 2, 'Two', 'second', 'y', 'more')`);
      const added = await sync(dir);
      expect(added.code, added.stderr).toBe(0);
      expect(added.conn.schema_changes).toEqual([
        { stream: 'art', column: 'extra', change: 'added', to: 'string', used: [], action: 'propagated' },
      ]);
      expect(added.stderr).toMatch(/stream art: schema change: added column extra \(string, nullable\); propagated/);
      expect(
        readJsonl(join(dir, 'out.jsonl'))
          .map((l) => l.document_id)
          .sort(),
      ).toEqual(['1', '2']);
      // kept: the next run sees no change
      await sql(url, `INSERT INTO art VALUES (3, 3, 'Three', 'third', 'z', 'again')`);
      const quiet = await sync(dir);
      expect(quiet.conn.schema_changes).toBeUndefined();

      const before = readFileSync(join(dir, 'out.jsonl'), 'utf8');
      const stateBefore = readFileSync(join(dir, '.sluice/state/pg_art.json'), 'utf8');
      await sql(url, `ALTER TABLE art DROP COLUMN body; INSERT INTO art VALUES (4, 4, 'Four', 'w')`);
      const dropped = await sync(dir);
      expect(dropped.code).not.toBe(0);
      expect(dropped.conn.error.message).toBe('schema changed: art.body dropped (used in text); nothing was written');
      expect(dropped.conn.error.hint).toMatch(/update processing .* or set schema_changes: propagate/);
      expect(dropped.stderr).toMatch(/schema change: dropped column body \(was string\) used in text; stopping before any write/);
      expect(readFileSync(join(dir, 'out.jsonl'), 'utf8')).toBe(before);
      expect(readFileSync(join(dir, '.sluice/state/pg_art.json'), 'utf8')).toBe(stateBefore);
      // it keeps stopping until accepted
      expect((await sync(dir)).code).not.toBe(0);
      writeFiles(dir, { 'p.yaml': pipeline('art', 'propagate') });
      const accepted = await sync(dir);
      expect(accepted.code, accepted.stderr).toBe(0);
      expect(accepted.conn.schema_changes).toMatchObject([{ column: 'body', change: 'dropped', used: ['text'], action: 'propagated' }]);
      expect(readJsonl(join(dir, 'out.jsonl')).find((l) => l.document_id === '4')?.content).toBe('Four');
    },
  );

  it(
    'fail stops on an added column before writing; ignore strips it from the records; a retyped cursor stops by default',
    { timeout: 240_000 },
    async () => {
      await sql(
        url,
        `CREATE TABLE pol (id int PRIMARY KEY, n int, title text, body text, tag text); INSERT INTO pol VALUES (1, 1, 'One', 'first', 'x')`,
      );
      const dir = tempDir('schema-pg-pol-');
      writeFiles(dir, { 'p.yaml': pipeline('pol', 'fail') });
      expect((await sync(dir)).code).toBe(0);
      await sql(url, `ALTER TABLE pol ADD COLUMN secret text; INSERT INTO pol VALUES (2, 2, 'Two', 'second', 'y', 's3cr3t')`);
      const failed = await sync(dir);
      expect(failed.code).not.toBe(0);
      expect(failed.conn.error.message).toBe('schema changed: pol.secret added; nothing was written');
      expect(failed.conn.error.hint).toMatch(/schema_changes: fail stops on every change/);
      expect(readJsonl(join(dir, 'out.jsonl')).map((l) => l.document_id)).toEqual(['1']);

      writeFiles(dir, { 'p.yaml': pipeline('pol', 'ignore').replace('metadata_fields: [tag]', 'metadata_fields: [tag, secret]') });
      const ignored = await sync(dir);
      expect(ignored.code, ignored.stderr).toBe(0);
      expect(ignored.conn.schema_changes).toMatchObject([{ column: 'secret', change: 'added', action: 'ignored' }]);
      const two = readJsonl(join(dir, 'out.jsonl')).find((l) => l.document_id === '2')!;
      expect(two.metadata).toEqual({ tag: 'y' }); // the ignored column never reached the chunk

      writeFiles(dir, { 'p.yaml': pipeline('pol') });
      await sql(url, `ALTER TABLE pol ALTER COLUMN n TYPE text`);
      const retyped = await sync(dir);
      expect(retyped.code).not.toBe(0);
      expect(retyped.conn.error.message).toMatch(/pol\.n retyped \(used in cursor\)/);
    },
  );
});

describe('schema changes, schemaless source (JSON-lines files)', () => {
  const pipeline = (policy?: string) => `version: 1
connections:
  - name: rows
    source: { type: file, config: { path: ./data, stream: items } }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
    processing: { text_fields: [title], metadata_fields: [color] }
    streams: [ { name: items, primary_key: [[sku]], destination_sync_mode: append_dedup } ]
${policy ? `    schema_changes: ${policy}\n` : ''}`;

  it(
    'a new field propagates (logged once), ignore strips it, and a key that changes type stops before that record is written',
    { timeout: 240_000 },
    async () => {
      const dir = tempDir('schema-file-');
      writeFiles(dir, { 'p.yaml': pipeline(), 'data/a.jsonl': '{"sku":"A1","title":"Kettle"}\n{"sku":"A2","title":"Mug","color":null}\n' });
      expect((await sync(dir)).code).toBe(0);
      writeFiles(dir, { 'data/b.jsonl': '{"sku":"B1","title":"Pot","color":"red","size":3}\n{"sku":"B2","title":"Pan","size":4}\n' });
      const added = await sync(dir);
      expect(added.code, added.stderr).toBe(0);
      expect(added.conn.schema_changes).toEqual([
        { stream: 'items', column: 'size', change: 'added', to: 'number', used: [], action: 'propagated' },
      ]);
      expect(added.stderr.match(/added column size/g)).toHaveLength(1);

      writeFiles(dir, { 'p.yaml': pipeline('ignore'), 'data/c.jsonl': '{"sku":"C1","title":"Cup","color":"blue","weight":2}\n' });
      const ignored = await sync(dir);
      expect(ignored.code, ignored.stderr).toBe(0);
      expect(ignored.conn.schema_changes).toMatchObject([{ column: 'weight', action: 'ignored' }]);

      writeFiles(dir, { 'p.yaml': pipeline(), 'data/d.jsonl': '{"sku":5,"title":"Bowl"}\n' });
      const before = readFileSync(join(dir, 'out.jsonl'), 'utf8');
      const retyped = await sync(dir);
      expect(retyped.code).not.toBe(0);
      expect(retyped.conn.error.message).toBe(
        'schema changed: items.sku retyped (used in primary key); nothing from that record on was written',
      );
      expect(readFileSync(join(dir, 'out.jsonl'), 'utf8')).toBe(before);
    },
  );
});
