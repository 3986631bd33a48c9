// `sluice verify` finds vectors of another embedder (issue #15 part 3), on pgvector (PGlite and
// native PostgreSQL + pgvector) and jsonl, through the real CLI:
// - every stored chunk carries the tag of the embedder that made it (`fingerprint_embedder`);
// - documents really written by another model (rows taken from an index built with it) are
//   reported as wrong_model with the right count — not also as stale — and --repair re-embeds
//   exactly those, after which verify is clean and the index equals a fresh sync;
// - an index whose configured model changed without a reindex is refused with what changed and
//   the command to run (exit 2), by verify and verify --repair, and nothing is written;
// - a table or file written before the tag was kept: the column is added in place, unchanged
//   documents are still skipped, and verify does not call them wrong.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STACK_LINE, tempDir, writeFiles } from '../helpers/cli.ts';
import { runInProcess, useInProcessCli } from '../helpers/cli-in-process.ts';
import { readJsonl } from '../helpers/jsonl.ts';
import { describeOnPgvectorBackends } from '../helpers/pgvector-backends.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';

useInProcessCli();

let openai: OpenAIServer;
beforeAll(async () => {
  openai = await startOpenAIServer();
});
afterAll(() => openai?.close());

const HASH = '{ provider: hash, dimensions: 32 }';
const HASH_TAG = 'hash/sluice-hash-v1/32';
const OTHER = () => `{ provider: openai-compatible, base_url: "${openai.url}", api_key: test-key, model: other-model, dimensions: 32 }`;
const OTHER_TAG = 'openai-compatible/other-model/32';

const pipeline = (destination: string, embedding: string, mode = 'append_dedup') => `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs } }
    destination: ${destination}
    embedding: ${embedding}
    processing: { chunk_size: 40, chunk_overlap: 0, chunk_unit: characters, metadata_fields: [path] }
    streams: [ { name: docs, sync_mode: full_refresh, destination_sync_mode: ${mode} } ]
`;

const long = (name: string) =>
  `${name} first part of a longer text.\n\n${name} second part of this longer text.\n\n${name} third part, the end.`;
const NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
/** The documents given another model's rows. */
const DAMAGED = ['c.md', 'e.md', 'g.md'];

/** A project dir: the corpus, and pipelines (one per file, each with its own state dir). */
function project(pipelines: Record<string, string>) {
  const dir = tempDir();
  const files: Record<string, string> = {};
  for (const n of NAMES) files[`docs/${n}.md`] = long(n.toUpperCase());
  for (const [name, text] of Object.entries(pipelines))
    files[name] = text.replace('version: 1\n', `version: 1\nstate: { type: file, path: ./.state-${name} }\n`);
  writeFiles(dir, files);
  const run = (file: string, ...args: string[]) => runInProcess([args[0], join(dir, file), ...args.slice(1)]);
  const rewrite = (file: string, text: string) =>
    writeFileSync(join(dir, file), text.replace('version: 1\n', `version: 1\nstate: { type: file, path: ./.state-${file} }\n`));
  return { dir, run, rewrite };
}

describeOnPgvectorBackends('sluice verify names vectors of another model (pgvector)', (backend) => {
  let admin: pg.Client;
  beforeAll(async () => {
    admin = new pg.Client({ connectionString: backend.url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
  });
  const dest = (schema: string) => `{ type: pgvector, config: { url: "${backend.url}", schema: ${schema} } }`;
  const rows = async (schema: string) =>
    (
      await admin.query(
        `SELECT id, document_id, chunk_index, content, metadata::text AS metadata, embedding::text AS embedding,
                fingerprint_content, fingerprint_metadata, fingerprint_embedder FROM "${schema}".docs ORDER BY id`,
      )
    ).rows;
  const tags = async (schema: string) =>
    Object.fromEntries(
      (
        await admin.query<{ document_id: string; tags: string[] }>(
          `SELECT document_id, array_agg(DISTINCT coalesce(fingerprint_embedder, '(none)')) AS tags FROM "${schema}".docs GROUP BY 1 ORDER BY 1`,
        )
      ).rows.map((r) => [r.document_id, r.tags.join(',')]),
    );

  it(
    'reports documents of another model as wrong_model (not stale), repairs exactly them, and equals a fresh sync',
    { timeout: 240_000 },
    async () => {
      const schema = `vmodel_${backend.name}_${process.pid}`;
      const p = project({
        'p.yaml': pipeline(dest(schema), HASH),
        'other.yaml': pipeline(dest(`${schema}_other`), OTHER()),
        'fresh.yaml': pipeline(dest(`${schema}_fresh`), HASH),
      });
      expect((await p.run('p.yaml', 'sync')).code).toBe(0);
      expect((await p.run('other.yaml', 'sync')).code).toBe(0);
      // Every row carries the tag of the embedder that made its vector.
      expect(new Set(Object.values(await tags(schema)))).toEqual(new Set([HASH_TAG]));
      expect(new Set(Object.values(await tags(`${schema}_other`)))).toEqual(new Set([OTHER_TAG]));
      const clean = await p.run('p.yaml', 'verify', '--json');
      expect(clean.code, clean.stdout + clean.stderr).toBe(0);

      // The damage: three documents replaced by the rows another model's index holds for them
      // (its vectors, its fingerprints, its tag) — what a sync under another model would have left.
      await admin.query(`DELETE FROM "${schema}".docs WHERE document_id = ANY($1)`, [DAMAGED]);
      await admin.query(`INSERT INTO "${schema}".docs SELECT * FROM "${schema}_other".docs WHERE document_id = ANY($1)`, [DAMAGED]);
      const damaged = await rows(schema);
      expect(damaged.filter((r) => DAMAGED.includes(r.document_id)).every((r) => r.fingerprint_embedder === OTHER_TAG)).toBe(true);

      const found = await p.run('p.yaml', 'verify', '--json');
      expect(found.code, found.stderr).toBe(1);
      const report = JSON.parse(found.stdout);
      expect(report.streams.docs.counts).toEqual({
        missing_documents: 0,
        deleted_documents: 0,
        stale_chunks: 0,
        stale_fingerprints: 0, // their fingerprints differ too (they cover the model): counted once, as wrong_model
        missing_chunks: 0,
        duplicate_chunks: 0,
        orphaned_chunks: 0,
        wrong_dimensions: 0,
        wrong_model: 3,
      });
      expect([...report.streams.docs.examples.wrong_model].sort()).toEqual(DAMAGED);
      const text = await p.run('p.yaml', 'verify');
      expect(text.code).toBe(1);
      expect(text.stdout).toMatch(
        /wrong_model\s+3\s+documents whose vectors were made by another embedder than the configured one; e\.g\. /,
      );
      // Verifying wrote nothing.
      expect(await rows(schema)).toEqual(damaged);

      const repaired = await p.run('p.yaml', 'verify', '--repair', '--json');
      expect(repaired.code, repaired.stderr).toBe(1);
      expect(JSON.parse(repaired.stdout).repair.docs).toMatchObject({ documents_rewritten: 3, documents_deleted: 0, chunks_written: 9 });
      const after = await p.run('p.yaml', 'verify', '--json');
      expect(after.code, after.stdout).toBe(0);
      expect(new Set(Object.values(await tags(schema)))).toEqual(new Set([HASH_TAG]));
      // Only the damaged documents were rewritten: the others' rows are as they were.
      const now = await rows(schema);
      expect(now.filter((r) => !DAMAGED.includes(r.document_id))).toEqual(damaged.filter((r) => !DAMAGED.includes(r.document_id)));
      // The table is exactly what a fresh sync of the same source with the configured model writes.
      expect((await p.run('fresh.yaml', 'sync')).code).toBe(0);
      expect(now).toEqual(await rows(`${schema}_fresh`));
      await admin.query(`DROP SCHEMA "${schema}" CASCADE; DROP SCHEMA "${schema}_other" CASCADE; DROP SCHEMA "${schema}_fresh" CASCADE`);
    },
  );

  it(
    'an index whose configured model changed without a reindex: verify says so and what to run (exit 2), writes nothing',
    { timeout: 240_000 },
    async () => {
      const schema = `vmodel_all_${backend.name}_${process.pid}`;
      const p = project({ 'p.yaml': pipeline(dest(schema), HASH) });
      expect((await p.run('p.yaml', 'sync')).code).toBe(0);
      const before = await rows(schema);
      p.rewrite('p.yaml', pipeline(dest(schema), OTHER()));
      const requestsBefore = openai.stats.requests;
      for (const args of [['verify'], ['verify', '--json'], ['verify', '--repair']]) {
        const run = await p.run('p.yaml', ...args);
        const out = run.stdout + run.stderr;
        expect(run.code, `${args.join(' ')}: ${out}`).toBe(2);
        expect(out).toContain('the index was built with other settings than the configuration now names');
        expect(out).toContain('embedding: hash sluice-hash-v1 (32 dimensions) → openai-compatible other-model (32 dimensions)');
        expect(out).toContain('sluice reindex');
        expect(out).toContain('--connection docs');
        expect(out).not.toMatch(STACK_LINE);
      }
      expect(openai.stats.requests).toBe(requestsBefore); // nothing embedded
      expect(await rows(schema)).toEqual(before); // nothing written
      // Following the hint: after the reindex the whole index is of the new model, and verify is clean.
      const reindexed = await p.run('p.yaml', 'reindex');
      expect(reindexed.code, reindexed.stderr).toBe(0);
      expect(new Set(Object.values(await tags(schema)))).toEqual(new Set([OTHER_TAG]));
      const clean = await p.run('p.yaml', 'verify', '--json');
      expect(clean.code, clean.stdout + clean.stderr).toBe(0);
      await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
    },
  );

  it(
    'a table written before the tag was kept gets the column in place; unchanged documents are still skipped and not called wrong',
    { timeout: 240_000 },
    async () => {
      for (const mode of ['append_dedup', 'overwrite']) {
        const schema = `vmodel_old_${mode}_${backend.name}_${process.pid}`;
        const p = project({ 'p.yaml': pipeline(dest(schema), HASH, mode) });
        expect((await p.run('p.yaml', 'sync')).code).toBe(0);
        // What an older sluice left: fingerprints without the embedder column.
        await admin.query(`ALTER TABLE "${schema}".docs DROP COLUMN fingerprint_embedder`);
        const old = await admin.query(`SELECT * FROM "${schema}".docs ORDER BY id`);
        const oid = (await admin.query(`SELECT '"${schema}".docs'::regclass::oid AS oid`)).rows[0].oid;
        expect((await p.run('p.yaml', 'verify')).code).toBe(0);

        const resync = await p.run('p.yaml', 'sync', '--json');
        expect(resync.code, resync.stderr).toBe(0);
        const summary = JSON.parse(resync.stdout);
        expect(summary.connections[0].streams.docs).toMatchObject({ chunks_written: 0 });
        // The column was added in place (same table), its rows untouched and without a tag.
        expect((await admin.query(`SELECT '"${schema}".docs'::regclass::oid AS oid`)).rows[0].oid).toBe(oid);
        const now = await admin.query(`SELECT * FROM "${schema}".docs ORDER BY id`);
        expect(now.rows.map(({ fingerprint_embedder: tag, ...rest }) => (expect(tag).toBeNull(), rest))).toEqual(old.rows);
        expect((await p.run('p.yaml', 'verify')).code).toBe(0);

        // A changed document is rewritten with its tag.
        writeFileSync(join(p.dir, 'docs/a.md'), long('A changed'));
        expect((await p.run('p.yaml', 'sync')).code).toBe(0);
        expect(await tags(schema)).toMatchObject({ 'a.md': HASH_TAG, 'b.md': '(none)' });
        expect((await p.run('p.yaml', 'verify')).code).toBe(0);
        await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
      }
    },
  );
});

describe('sluice verify names vectors of another model (jsonl)', { timeout: 180_000 }, () => {
  const dest = (file: string) => `{ type: jsonl, config: { path: ./out/${file} } }`;
  const sortedLines = (file: string) =>
    readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.stringify(JSON.parse(l)))
      .sort();

  it('reports documents of another model as wrong_model, repairs exactly them, and equals a fresh sync', async () => {
    const p = project({
      'p.yaml': pipeline(dest('docs.jsonl'), HASH),
      'other.yaml': pipeline(dest('other.jsonl'), OTHER()),
      'fresh.yaml': pipeline(dest('fresh.jsonl'), HASH),
    });
    expect((await p.run('p.yaml', 'sync')).code).toBe(0);
    expect((await p.run('other.yaml', 'sync')).code).toBe(0);
    const file = join(p.dir, 'out/docs.jsonl');
    const mine = readJsonl(file);
    const theirs = readJsonl(join(p.dir, 'out/other.jsonl'));
    expect(new Set(mine.map((l) => l.fingerprint?.embedder))).toEqual(new Set([HASH_TAG]));
    expect(new Set(theirs.map((l) => l.fingerprint?.embedder))).toEqual(new Set([OTHER_TAG]));

    // Three documents' lines replaced by the other model's lines for them.
    const damaged = [...mine.filter((l) => !DAMAGED.includes(l.document_id)), ...theirs.filter((l) => DAMAGED.includes(l.document_id))];
    writeFileSync(file, damaged.map((l) => JSON.stringify(l) + '\n').join(''));
    const found = await p.run('p.yaml', 'verify', '--json');
    expect(found.code, found.stderr).toBe(1);
    const report = JSON.parse(found.stdout);
    expect(report.totals).toMatchObject({ wrong_model: 3, stale_fingerprints: 0, stale_chunks: 0, wrong_dimensions: 0 });
    expect(Object.entries(report.totals).filter(([k, n]) => k !== 'wrong_model' && n !== 0)).toEqual([]);
    expect([...report.streams.docs.examples.wrong_model].sort()).toEqual(DAMAGED);

    const repaired = await p.run('p.yaml', 'verify', '--repair', '--json');
    expect(repaired.code, repaired.stderr).toBe(1);
    expect(JSON.parse(repaired.stdout).repair.docs).toMatchObject({ documents_rewritten: 3, documents_deleted: 0 });
    expect((await p.run('p.yaml', 'verify')).code).toBe(0);
    expect((await p.run('fresh.yaml', 'sync')).code).toBe(0);
    expect(sortedLines(file)).toEqual(sortedLines(join(p.dir, 'out/fresh.jsonl')));
  });

  it('a changed model without a reindex is refused by verify (exit 2); lines without a tag are not called wrong', async () => {
    const p = project({ 'p.yaml': pipeline(dest('docs.jsonl'), HASH) });
    expect((await p.run('p.yaml', 'sync')).code).toBe(0);
    const file = join(p.dir, 'out/docs.jsonl');
    // Lines an older sluice wrote: fingerprints without the embedder tag.
    const untagged = readJsonl(file).map((l) => ({
      ...l,
      fingerprint: { content: l.fingerprint!.content, metadata: l.fingerprint!.metadata },
    }));
    writeFileSync(file, untagged.map((l) => JSON.stringify(l) + '\n').join(''));
    expect((await p.run('p.yaml', 'verify')).code).toBe(0);
    const before = readFileSync(file, 'utf8');

    p.rewrite('p.yaml', pipeline(dest('docs.jsonl'), OTHER()));
    for (const args of [['verify'], ['verify', '--repair']]) {
      const run = await p.run('p.yaml', ...args);
      const out = run.stdout + run.stderr;
      expect(run.code, out).toBe(2);
      expect(out).toContain('embedding: hash sluice-hash-v1 (32 dimensions) → openai-compatible other-model (32 dimensions)');
      expect(out).toContain('sluice reindex');
    }
    expect(readFileSync(file, 'utf8')).toBe(before);
  });
});
