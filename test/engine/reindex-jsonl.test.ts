// `sluice reindex` on the jsonl destination (one rename switches every stream; --keep-previous keeps
// <path>.previous for --rollback), the identity recorded in the state store for a destination that
// keeps no state itself, a connection from before identities adopting the current one, and the
// clear refusal of a destination that cannot reindex.
import { existsSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { expect, it } from 'vitest';
import { STACK_LINE, runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';

const FILES = 12;

function project(destination = '{ type: jsonl, config: { path: ./out/docs.jsonl } }') {
  const dir = tempDir('sluice-reindex-jsonl-');
  const files: Record<string, string> = {};
  for (let i = 0; i < FILES; i++)
    files[`docs/f${String(i).padStart(2, '0')}.md`] = `Note ${i} is about valves.\n\nIt has a second part ${i}.`;
  writeFiles(dir, files);
  for (let i = 0; i < FILES; i++) {
    const t = new Date(Date.UTC(2026, 0, 1, 0, 0, i));
    utimesSync(join(dir, `docs/f${String(i).padStart(2, '0')}.md`), t, t);
  }
  const write = (dims: number, chunkSize = 200) =>
    writeFileSync(
      join(dir, 'p.yaml'),
      `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs } }
    destination: ${destination.replace('<custom>', customDestination(dir))}
    embedding: { provider: hash, dimensions: ${dims} }
    processing: { chunk_size: ${chunkSize}, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup } ]
`,
    );
  const cli = (cmd: string, ...args: string[]) => runCli([cmd, join(dir, 'p.yaml'), ...args], { cwd: dir });
  const out = join(dir, 'out/docs.jsonl');
  const state = () => JSON.parse(readFileSync(join(dir, '.sluice/state/docs.json'), 'utf8')).state;
  return { dir, write, cli, out, state };
}

/** The test kit's custom destination (public kit only, no \`reindex\`), relative to the project. */
const customDestination = (dir: string) => {
  const rel = relative(dir, resolve(import.meta.dirname, '../helpers/fingerprint-destination.ts'));
  return rel.startsWith('.') ? rel : `./${rel}`;
};

const dimsOf = (file: string) => [...new Set(readJsonl(file).map((l) => l.embedding?.length))];

it(
  'jsonl: refused change, reindex --keep-previous switches the file, --rollback restores file and state',
  { timeout: 400_000 },
  async () => {
    const p = project();
    p.write(8);
    expect((await p.cli('sync')).code).toBe(0);
    const original = readFileSync(p.out, 'utf8');
    const originalState = p.state();
    expect(originalState.index).toMatchObject({ provider: 'hash', dimensions: 8 });

    p.write(8, 20);
    const refused = await p.cli('sync');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('processing.chunk_size: 200 → 20');
    expect(refused.stderr).not.toMatch(STACK_LINE);
    expect(readFileSync(p.out, 'utf8')).toBe(original);

    p.write(12, 20);
    const run = await p.cli('reindex', '--keep-previous');
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('docs: switched to the new index (the previous one is kept for --rollback)');
    expect(dimsOf(p.out)).toEqual([12]);
    expect(new Set(readJsonl(p.out).map((l) => l.document_id)).size).toBe(FILES);
    expect(readJsonl(p.out).length).toBeGreaterThan(FILES); // chunk_size 20 cuts every note
    expect(readFileSync(`${p.out}.previous`, 'utf8')).toBe(original);
    expect(p.state().index).toMatchObject({
      dimensions: 12,
      previous: { index: { dimensions: 8 }, state: { streams: originalState.streams } },
    });
    const again = await p.cli('sync', '--json');
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).connections[0].streams.docs.records_read).toBe(0);

    const back = await p.cli('reindex', '--rollback', '--json');
    expect(back.code, back.stderr).toBe(0);
    expect(JSON.parse(back.stdout).rollback[0].index.to).toMatchObject({ dimensions: 8 });
    expect(readFileSync(p.out, 'utf8')).toBe(original);
    expect(dimsOf(`${p.out}.previous`)).toEqual([12]);
    const { index, ...rest } = p.state();
    expect(rest).toEqual({ streams: originalState.streams });
    expect(index).toMatchObject({ dimensions: 8, processing: { chunk_size: 200 } });
    p.write(8);
    expect((await p.cli('sync')).code).toBe(0);
  },
);

it('a connection from before identities adopts the current one on its next run', { timeout: 300_000 }, async () => {
  const p = project();
  p.write(8);
  expect((await p.cli('sync')).code).toBe(0);
  // As an older sluice left it: no index record.
  const file = join(p.dir, '.sluice/state/docs.json');
  const saved = JSON.parse(readFileSync(file, 'utf8'));
  delete saved.state.index;
  writeFileSync(file, JSON.stringify(saved));
  expect((await p.cli('sync')).code).toBe(0);
  expect(p.state().index).toMatchObject({ dimensions: 8 });
  p.write(16);
  expect((await p.cli('sync')).code).toBe(2);
});

it('a destination that cannot reindex is refused with a clear message before anything is touched', { timeout: 300_000 }, async () => {
  const p = project('{ type: <custom>, config: { path: ./store.json } }');
  p.write(8);
  const run = await p.cli('reindex');
  expect(run.code).toBe(2);
  expect(run.stderr).toMatch(/destination \S*fingerprint-destination\.ts cannot be reindexed/);
  expect(run.stderr).not.toMatch(STACK_LINE);
  expect(existsSync(join(p.dir, 'store.json'))).toBe(false);
  const rollback = await p.cli('reindex', '--rollback');
  expect(rollback.code).toBe(2);
  expect(rollback.stderr).toMatch(/destination \S*fingerprint-destination\.ts keeps no previous generation/);
});
