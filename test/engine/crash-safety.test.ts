// Invariant 1: a sync killed at any instant, then run again, ends with exactly what an
// uninterrupted run produces — nothing missing, nothing duplicated.
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCli, startCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { contentOf, readJsonl } from '../helpers/jsonl.ts';

const FILES = 1200;
function corpus(): Record<string, string> {
  const files: Record<string, string> = {};
  for (let i = 0; i < FILES; i++) {
    files[`docs/d${String(i).padStart(4, '0')}.md`] =
      `# Note ${i}\n\nThe sluice gate number ${i} opens at dawn. ` + 'Water flows. '.repeat(i % 7);
  }
  return files;
}
const pipeline = `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs, checkpoint_every: 20 } }
    destination: { type: jsonl, config: { path: ./out.jsonl, batch_records: 40 } }
    embedding: { provider: hash, dimensions: 16 }
    processing: { chunk_size: 60, chunk_overlap: 10, chunk_unit: characters }
    streams: [ { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup } ]
`;

describe('crash safety (file → jsonl)', () => {
  it('SIGKILL at random points, then a re-run, equals an uninterrupted run', async () => {
    const files = corpus();
    const ref = tempDir();
    writeFiles(ref, { ...files, 'p.yaml': pipeline });
    const r = await runCli(['sync', join(ref, 'p.yaml')], { cwd: ref });
    expect(r.code, r.stderr).toBe(0);
    const expected = contentOf(join(ref, 'out.jsonl'));
    expect(expected.length).toBeGreaterThan(FILES);

    const dir = tempDir();
    writeFiles(dir, { ...files, 'p.yaml': pipeline });
    let killedMidway = 0;
    for (let trial = 0; trial < 5; trial++) {
      const run = startCli(['sync', join(dir, 'p.yaml')], { cwd: dir });
      // Kill at a random instant: during start-up in one trial, otherwise shortly after a commit has
      // happened (relative to progress, so the test does not depend on the machine's speed).
      if (trial === 0) await sleep(200 + Math.random() * 600);
      else {
        const before = existsSync(join(dir, 'out.jsonl')) ? statSync(join(dir, 'out.jsonl')).mtimeMs : 0;
        for (let i = 0; i < 600; i++) {
          if (existsSync(join(dir, 'out.jsonl')) && statSync(join(dir, 'out.jsonl')).mtimeMs !== before) break;
          await sleep(20);
        }
        await sleep(Math.random() * 300);
      }
      run.child.kill('SIGKILL');
      const res = await run.done;
      const partial = readJsonl(join(dir, 'out.jsonl')).length;
      if (res.signal === 'SIGKILL' && partial < expected.length) killedMidway++;
      // Whatever instant it died at, the state file (if any) is whole JSON.
      const stateFile = join(dir, '.sluice/state/docs.json');
      if (existsSync(stateFile)) expect(() => JSON.parse(readFileSync(stateFile, 'utf8'))).not.toThrow();
      // Nothing is ever duplicated, even mid-way.
      const ids = readJsonl(join(dir, 'out.jsonl')).map((l) => l.id);
      expect(new Set(ids).size).toBe(ids.length);
    }
    expect(killedMidway, 'at least one kill must land mid-sync').toBeGreaterThan(0);
    const final = await runCli(['sync', join(dir, 'p.yaml')], { cwd: dir });
    expect(final.code, final.stderr).toBe(0);
    expect(contentOf(join(dir, 'out.jsonl'))).toEqual(expected);
  }, 180_000);

  it('SIGINT stops reading, commits what was read, saves state and exits 130; the next run finishes the job', async () => {
    const files = corpus();
    const dir = tempDir();
    writeFiles(dir, { ...files, 'p.yaml': pipeline });
    const run = startCli(['sync', join(dir, 'p.yaml'), '--json'], { cwd: dir });
    // Interrupt once the first batch has been committed (start-up time varies with machine load).
    for (let i = 0; i < 600 && !existsSync(join(dir, 'out.jsonl')); i++) await sleep(50);
    run.child.kill('SIGINT');
    const res = await run.done;
    expect(res.code).toBe(130);
    const summary = JSON.parse(res.stdout) as {
      status: string;
      connections: Array<{ states_committed: number; streams: Record<string, { records_read: number }> }>;
    };
    expect(summary.status, res.stdout + res.stderr).toBe('interrupted');
    const read = summary.connections[0].streams.docs.records_read;
    expect(read).toBeGreaterThan(0);
    expect(read).toBeLessThan(FILES);
    const state = JSON.parse(readFileSync(join(dir, '.sluice/state/docs.json'), 'utf8')) as {
      state: { streams: { docs: { cursor: { mtime_ms: number; path: string } } } };
    };
    const cursor = state.state.streams.docs.cursor;
    expect(cursor).toBeDefined();
    // Every file at or before the saved cursor (mtime, then path) is in the destination.
    const docs = new Set(readJsonl(join(dir, 'out.jsonl')).map((l) => l.document_id));
    const covered = Object.keys(files)
      .map((f) => f.slice('docs/'.length))
      .filter((f) => {
        const m = Math.floor(statSync(join(dir, 'docs', f)).mtimeMs);
        return m < cursor.mtime_ms || (m === cursor.mtime_ms && f <= cursor.path);
      });
    expect(covered.length).toBeGreaterThan(0);
    for (const f of covered) expect(docs.has(f), f).toBe(true);

    const rest = await runCli(['sync', join(dir, 'p.yaml'), '--json'], { cwd: dir });
    expect(rest.code, rest.stderr).toBe(0);
    expect(new Set(readJsonl(join(dir, 'out.jsonl')).map((l) => l.document_id)).size).toBe(FILES);
  }, 120_000);
});
