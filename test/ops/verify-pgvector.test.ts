// `sluice verify` on pgvector (PGlite and native PostgreSQL + pgvector): a table damaged by hand —
// a chunk row deleted, a duplicate row, a changed text, an orphan chunk index, a document the
// source no longer has, a document gone, a stale stored fingerprint — is reported (exit 1, --json counts), --repair fixes it
// through the writer, a second verify is clean, and the table equals what a fresh sync writes.
// (A vector of another size cannot be stored in the vector(N) column: that kind is covered on jsonl.)
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { tempDir } from '../helpers/cli.ts';
import { useInProcessCli } from '../helpers/cli-in-process.ts';
import { describeOnPgvectorBackends } from '../helpers/pgvector-backends.ts';
import { useAdminClient } from '../helpers/pg-admin.ts';
import { STANDARD_DAMAGE_COUNTS, STANDARD_DAMAGE_EXAMPLES, driftCounts, verifyPipeline, verifyProject } from '../helpers/verify.ts';

useInProcessCli();

const pipeline = (url: string, schema: string, destinationSyncMode?: 'overwrite') =>
  verifyPipeline(`{ type: pgvector, config: { url: "${url}", schema: ${schema} } }`, { metadataFields: ['path'], destinationSyncMode });

describeOnPgvectorBackends('sluice verify on pgvector', (backend) => {
  const admin = useAdminClient(() => backend.url);

  const rows = async (schema: string) =>
    (
      await admin.query(
        `SELECT id, document_id, chunk_index, content, metadata::text AS metadata, embedding::text AS embedding, fingerprint_content, fingerprint_metadata FROM "${schema}".docs ORDER BY id`,
      )
    ).rows;

  it('reports each kind of drift, repairs it, is clean afterwards, and equals a fresh sync', { timeout: 180_000 }, async () => {
    const dir = tempDir();
    const schema = `verify_${backend.name}_${process.pid}`;
    const run = verifyProject(
      dir,
      { 'p.yaml': pipeline(backend.url, schema), 'fresh.yaml': pipeline(backend.url, `${schema}_fresh`) },
      'abcdefgh'.split(''),
    );

    expect((await run('p.yaml', 'sync')).code).toBe(0);
    const clean = await run('p.yaml', 'verify', '--json');
    expect(clean.code, clean.stdout + clean.stderr).toBe(0);
    expect(JSON.parse(clean.stdout)).toMatchObject({ clean: true, streams: { docs: { documents_checked: 8, chunks_checked: 24 } } });
    const stateBefore = (await admin.query(`SELECT state::text FROM "${schema}"._sluice_state`)).rows;

    // The damage, one kind per document.
    const t = `"${schema}".docs`;
    rmSync(join(dir, 'docs/b.md')); // b: should be deleted
    await admin.query(`DELETE FROM ${t} WHERE document_id = 'a.md' AND chunk_index = 1`); // a: a chunk row gone
    await admin.query(`INSERT INTO ${t} SELECT 'c.md#99', document_id, 99, content, metadata, embedding FROM ${t} WHERE id = 'c.md#0'`); // c: orphan
    await admin.query(
      `INSERT INTO ${t} SELECT 'legacy-d-0', document_id, chunk_index, content, metadata, embedding FROM ${t} WHERE id = 'd.md#0'`,
    ); // d: duplicate
    await admin.query(`UPDATE ${t} SET content = 'tampered text' WHERE id = 'e.md#0'`); // e: stale text
    await admin.query(`DELETE FROM ${t} WHERE document_id = 'f.md'`); // f: missing document
    await admin.query(`UPDATE ${t} SET fingerprint_content = repeat('0', 64) WHERE document_id = 'g.md'`); // g: stale fingerprint

    const found = await run('p.yaml', 'verify', '--json');
    expect(found.code, found.stderr).toBe(1);
    const report = JSON.parse(found.stdout);
    expect(report.streams.docs.counts).toEqual(driftCounts({ ...STANDARD_DAMAGE_COUNTS, stale_fingerprints: 1 }));
    expect(report.streams.docs.examples).toMatchObject({ ...STANDARD_DAMAGE_EXAMPLES, stale_fingerprints: ['g.md'] });
    expect(found.stdout).not.toContain(backend.url);

    const repaired = await run('p.yaml', 'verify', '--repair', '--json');
    expect(repaired.code, repaired.stderr).toBe(1);
    expect(JSON.parse(repaired.stdout).repair.docs).toMatchObject({ documents_rewritten: 6, documents_deleted: 1 });
    const after = await run('p.yaml', 'verify', '--json');
    expect(after.code, after.stdout).toBe(0);

    // The repair moved no saved progress.
    expect((await admin.query(`SELECT state::text FROM "${schema}"._sluice_state`)).rows).toEqual(stateBefore);
    // The table is exactly what a fresh sync of the same source writes.
    expect((await run('fresh.yaml', 'sync')).code).toBe(0);
    expect(await rows(schema)).toEqual(await rows(`${schema}_fresh`));
    await admin.query(`DROP SCHEMA "${schema}" CASCADE; DROP SCHEMA "${schema}_fresh" CASCADE`);
  });

  it('an overwrite stream is repaired in place, and --sample checks a sample', { timeout: 180_000 }, async () => {
    const dir = tempDir();
    const schema = `verify_ow_${backend.name}_${process.pid}`;
    const project = verifyProject(
      dir,
      { 'p.yaml': pipeline(backend.url, schema, 'overwrite') },
      Array.from({ length: 20 }, (_, i) => `d${i}`),
    );
    const run = (command: string, ...args: string[]) => project('p.yaml', command, ...args);
    expect((await run('sync')).code).toBe(0);
    rmSync(join(dir, 'docs/d3.md'));
    await admin.query(`DELETE FROM "${schema}".docs WHERE document_id = 'd5.md'`);
    const sample = await run('verify', '--sample', '3', '--json');
    expect(sample.code).toBe(1);
    const s = JSON.parse(sample.stdout);
    expect(s.sample.documents).toBe(3);
    expect(s.streams.docs.documents_checked).toBe(3);
    expect(s.streams.docs.counts.deleted_documents).toBe(1); // seen by the bounded scan
    const repaired = await run('verify', '--repair', '--json');
    expect(repaired.code).toBe(1);
    expect(JSON.parse(repaired.stdout).totals).toMatchObject({ deleted_documents: 1, missing_documents: 1 });
    expect((await run('verify')).code).toBe(0);
    const { rows: left } = await admin.query(`SELECT DISTINCT document_id FROM "${schema}".docs`);
    expect(left.length).toBe(19);
    await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
  });
});
