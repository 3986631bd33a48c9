// `sluice verify` on the jsonl destination through the real CLI: an index damaged by hand in every
// way a store can drift is reported (exit 1, --json counts), --repair fixes it, a second verify is
// clean, and the file then holds exactly what a fresh sync writes.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO, tempDir, writeFiles } from '../helpers/cli.ts';
import { runInProcess, useInProcessCli } from '../helpers/cli-in-process.ts';
import { readJsonl } from '../helpers/jsonl.ts';
import { STANDARD_DAMAGE_COUNTS, STANDARD_DAMAGE_EXAMPLES, driftCounts, verifyPipeline, verifyProject } from '../helpers/verify.ts';
import type { JsonlChunkLine } from '../../connectors/destination-jsonl/index.ts';

const pipeline = (out: string) => verifyPipeline(`{ type: jsonl, config: { path: ./out/${out} } }`, { metadataFields: ['path'] });

useInProcessCli();

/** `sluice <command> <dir>/<file> ...` (in this process: a process each would take seconds on a busy machine). */
async function cli(dir: string, command: string, file: string, ...args: string[]) {
  return runInProcess([command, join(dir, file), ...args]);
}

const sortedLines = (file: string) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.stringify(JSON.parse(l)))
    .sort();

describe('sluice verify on jsonl', { timeout: 120_000 }, () => {
  it('reports each kind of drift, repairs it, and is clean afterwards; the file equals a fresh sync', async () => {
    const dir = tempDir();
    verifyProject(dir, { 'p.yaml': pipeline('docs.jsonl'), 'fresh.yaml': pipeline('fresh.jsonl') }, 'abcdefgh'.split(''));
    const synced = await cli(dir, 'sync', 'p.yaml', '--json');
    expect(synced.code, synced.stderr).toBe(0);

    const clean = await cli(dir, 'verify', 'p.yaml', '--json');
    expect(clean.code, clean.stdout + clean.stderr).toBe(0);
    expect(JSON.parse(clean.stdout)).toMatchObject({ clean: true, streams: { docs: { documents_checked: 8 } } });

    // The damage, one kind per document.
    const file = join(dir, 'out/docs.jsonl');
    let lines = readJsonl(file);
    expect(lines.filter((l) => l.document_id === 'a.md').length).toBeGreaterThan(2);
    rmSync(join(dir, 'docs/b.md')); // b: should be deleted
    lines = lines.filter((l) => !(l.document_id === 'a.md' && l.chunk_index === 1)); // a: a chunk row gone
    const c0 = lines.find((l) => l.document_id === 'c.md')!;
    lines.push({ ...c0, id: 'c.md#99', chunk_index: 99 }); // c: orphan
    lines.push({ ...lines.find((l) => l.document_id === 'd.md')! }); // d: duplicate row
    const e0 = lines.find((l) => l.document_id === 'e.md')!;
    e0.content = 'tampered text';
    lines = lines.filter((l) => l.document_id !== 'f.md'); // f: missing document
    const g0 = lines.find((l) => l.document_id === 'g.md')!;
    g0.embedding = g0.embedding!.slice(0, 16); // g: wrong dimension
    writeFileSync(file, lines.map((l: JsonlChunkLine) => JSON.stringify(l) + '\n').join(''));
    const damaged = readFileSync(file, 'utf8');

    const found = await cli(dir, 'verify', 'p.yaml', '--json');
    expect(found.code, found.stderr).toBe(1);
    const report = JSON.parse(found.stdout);
    expect(report.clean).toBe(false);
    expect(report.streams.docs.counts).toEqual(driftCounts({ ...STANDARD_DAMAGE_COUNTS, wrong_dimensions: 1 }));
    expect(report.streams.docs.examples).toMatchObject({ ...STANDARD_DAMAGE_EXAMPLES, wrong_dimensions: ['g.md'] });
    // Ids, never contents.
    expect(found.stdout).not.toContain('tampered');
    expect(found.stdout).not.toContain('first part');

    // Human output names the kinds and says how to fix them.
    const human = await cli(dir, 'verify', 'p.yaml');
    expect(human.code).toBe(1);
    expect(human.stdout).toMatch(/deleted_documents\s+1/);
    expect(human.stdout).toContain('--repair');

    // verify without --repair changed nothing (invariant 9).
    const before = readFileSync(file, 'utf8');
    expect(before).toBe(damaged);
    const repaired = await cli(dir, 'verify', 'p.yaml', '--repair', '--json');
    expect(repaired.code, repaired.stderr).toBe(1); // drift was found (and fixed)
    expect(JSON.parse(repaired.stdout).repair.docs).toMatchObject({ documents_rewritten: 6, documents_deleted: 1 });
    expect(readFileSync(file, 'utf8')).not.toBe(before);

    const after = await cli(dir, 'verify', 'p.yaml', '--json');
    expect(after.code, after.stdout).toBe(0);
    expect(JSON.parse(after.stdout).clean).toBe(true);

    // Exactly what a fresh sync of the same source writes.
    const fresh = await cli(dir, 'sync', 'fresh.yaml', '--json');
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(sortedLines(file)).toEqual(sortedLines(join(dir, 'out/fresh.jsonl')));
  });

  it('--sample checks a sample and says so; usage errors exit 2', async () => {
    const dir = tempDir();
    verifyProject(
      dir,
      { 'p.yaml': pipeline('docs.jsonl') },
      Array.from({ length: 30 }, (_, i) => `d${i}`),
    );
    expect((await cli(dir, 'sync', 'p.yaml')).code).toBe(0);
    rmSync(join(dir, 'docs/d7.md')); // stored, no longer in the source: the bounded scan sees it
    const r = await cli(dir, 'verify', 'p.yaml', '--sample', '5', '--json');
    expect(r.code, r.stderr).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.sample).toEqual({ documents: 5, scanned_chunks_per_stream: 1000 });
    expect(report.streams.docs.documents_checked).toBe(5);
    expect(report.streams.docs.counts.deleted_documents).toBe(1);
    const human = await cli(dir, 'verify', 'p.yaml', '--sample', '5');
    expect(human.stdout).toContain('SAMPLE of 5');

    for (const bad of [
      ['--sample', '0'],
      ['--sample', 'x'],
      ['--connection', 'nope'],
    ]) {
      const u = await cli(dir, 'verify', 'p.yaml', ...bad);
      expect(u.code, u.stderr).toBe(2);
      expect(u.stderr).not.toMatch(/\n\s+at /);
    }

    // A destination that cannot list its chunks: a config error, said as such.
    const custom = join(REPO, 'test/cli/fixtures/final-flush-destination.ts');
    writeFiles(dir, {
      'custom.yaml': pipeline('x.jsonl').replace(
        '{ type: jsonl, config: { path: ./out/x.jsonl } }',
        `{ type: "${custom}", config: { path: ./x.txt } }`,
      ),
    });
    const unsupported = await cli(dir, 'verify', 'custom.yaml');
    expect(unsupported.code, unsupported.stderr).toBe(2);
    expect(unsupported.stderr).toContain('cannot list its stored chunks');
  });
});
