// Issue 14, defect 5: a setting changed since the last run takes effect or is refused — never
// silently ignored. distance/index changes rebuild the vector index of an existing table; a changed
// primary_key (which would leave the old documents' chunks behind) is refused with the way to re-key;
// an invalid lookback fails at validate, not on the second run.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCli, tempDir, writeFiles } from '../../test/helpers/cli.ts';
import { createDatabase, sql } from '../source-postgres/test/helpers.ts';

let srcUrl: string;
const destUrl = inject('pgliteUrl');
let dest: pg.Client;

beforeAll(async () => {
  srcUrl = await createDatabase(inject('pgUrl'), 'config_drift');
  await sql(
    srcUrl,
    `CREATE TABLE items (id int PRIMARY KEY, slug text UNIQUE NOT NULL, body text NOT NULL);
     INSERT INTO items SELECT i, 'item-' || i, 'Item ' || i || ' is about shipping, refunds and more.' FROM generate_series(1, 40) i;`,
  );
  dest = new pg.Client({ connectionString: destUrl });
  await dest.connect();
});
afterAll(async () => {
  await dest.end();
});

function pipeline(dir: string, schema: string, o: { dest?: string; stream?: string; source?: string } = {}) {
  writeFiles(dir, {
    'pipeline.yaml': `version: 1
connections:
  - name: drift
    source:
      type: postgres
      config: { url: ${JSON.stringify(srcUrl)}${o.source ?? ''} }
    destination:
      type: pgvector
      config: { url: ${JSON.stringify(destUrl)}, schema: ${schema}${o.dest ?? ''} }
    embedding: { provider: hash, dimensions: 16 }
    processing: { text_fields: [body] }
    streams:
      - { name: items, sync_mode: full_refresh, destination_sync_mode: append_dedup${o.stream ?? ''} }
`,
  });
  return join(dir, 'pipeline.yaml');
}

const vectorIndex = async (schema: string) =>
  (
    await dest.query<{ method: string; opclass: string; options: string[] | null }>(
      `SELECT am.amname AS method, opc.opcname AS opclass, c.reloptions AS options
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
         JOIN pg_opclass opc ON opc.oid = i.indclass[0]
        WHERE i.indrelid = to_regclass($1) AND am.amname IN ('hnsw', 'ivfflat')`,
      [`${schema}.items`],
    )
  ).rows;

const sync = (file: string, ...args: string[]) => runCli(['sync', file, ...args]);

describe('distance and index changes on an existing table', () => {
  it('rebuild (or drop) the vector index so it matches what search uses', { timeout: 180_000 }, async () => {
    const dir = tempDir('drift-index-');
    const schema = 'drift_index';
    expect((await sync(pipeline(dir, schema))).code).toBe(0);
    expect(await vectorIndex(schema)).toEqual([{ method: 'hnsw', opclass: 'vector_cosine_ops', options: ['m=16', 'ef_construction=64'] }]);

    const l2 = await sync(pipeline(dir, schema, { dest: ', distance: l2' }));
    expect(l2.code, l2.stderr).toBe(0);
    expect(await vectorIndex(schema)).toMatchObject([{ method: 'hnsw', opclass: 'vector_l2_ops' }]);

    expect((await sync(pipeline(dir, schema, { dest: ', distance: l2, hnsw: { m: 8 }' }))).code).toBe(0);
    expect((await vectorIndex(schema))[0].options).toEqual(['m=8', 'ef_construction=64']);

    expect((await sync(pipeline(dir, schema, { dest: ', distance: inner_product, index: ivfflat' }))).code).toBe(0);
    expect(await vectorIndex(schema)).toMatchObject([{ method: 'ivfflat', opclass: 'vector_ip_ops' }]);

    expect((await sync(pipeline(dir, schema, { dest: ', index: none' }))).code).toBe(0);
    expect(await vectorIndex(schema)).toEqual([]);
    const search = await runCli(['search', pipeline(dir, schema, { dest: ', index: none' }), 'refunds', '--json']);
    expect(search.code, search.stderr).toBe(0);
    expect((JSON.parse(search.stdout) as { hits: unknown[] }).hits.length).toBe(5);
  });
});

describe('primary_key changes', () => {
  it('are refused before any write (old chunks would stay behind); one overwrite run re-keys the table', { timeout: 180_000 }, async () => {
    const dir = tempDir('drift-pk-');
    const schema = 'drift_pk';
    const count = async () =>
      (
        await dest.query<{ n: number; docs: number }>(
          `SELECT count(*)::int AS n, count(DISTINCT document_id)::int AS docs FROM ${schema}.items`,
        )
      ).rows[0];
    expect((await sync(pipeline(dir, schema))).code).toBe(0);
    expect(await count()).toEqual({ n: 40, docs: 40 });

    const bySlug = pipeline(dir, schema, { stream: ', primary_key: [slug]' });
    const refused = await sync(bySlug);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('primary_key changed from [id] to [slug]');
    expect(refused.stderr).toMatch(/destination_sync_mode: overwrite/);
    expect(await count()).toEqual({ n: 40, docs: 40 });

    // The way the hint gives: one overwrite run, then back to append_dedup with the new key.
    expect((await sync(bySlug, '--full-refresh')).code).toBe(1); // still append_dedup: refused again
    writeFileSync(bySlug, readFileSync(bySlug, 'utf8').replace('destination_sync_mode: append_dedup', 'destination_sync_mode: overwrite'));
    const over = await sync(bySlug, '--full-refresh');
    expect(over.code, over.stderr).toBe(0);
    expect(await count()).toEqual({ n: 40, docs: 40 });
    const ids = (await dest.query<{ d: string }>(`SELECT min(document_id) AS d FROM ${schema}.items`)).rows[0].d;
    expect(ids).toMatch(/^item-/);
    const after = await sync(pipeline(dir, schema, { stream: ', primary_key: [slug]' }));
    expect(after.code, after.stderr).toBe(0);
    expect(await count()).toEqual({ n: 40, docs: 40 });
  });
});

describe('lookback', () => {
  it('an invalid value fails at validate', { timeout: 180_000 }, async () => {
    for (const [value, message] of [
      ['"five minutes please"', '"five minutes please" is not a valid lookback; expected an interval such as "5 minutes"'],
      ['-5', '-5 is not a valid lookback; expected 0 or more'],
    ]) {
      const file = pipeline(tempDir('drift-lb-'), 'drift_lb', { source: `, lookback: ${value}` });
      const r = await runCli(['validate', file]);
      expect(r.code, value).toBe(2);
      expect(r.stderr).toMatch(/pipeline\.yaml:\d+: connections\[0\]\.source\.config\.lookback: /);
      expect(r.stderr).toContain(message);
    }
    const ok = pipeline(tempDir('drift-lb-'), 'drift_lb', { source: ', lookback: "5 minutes"' });
    expect((await runCli(['validate', ok])).code).toBe(0);
  });
});
