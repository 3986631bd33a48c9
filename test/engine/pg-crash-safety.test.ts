// Invariant 1 with the state in PostgreSQL (issue 16): a sync SIGKILLed at random instants, then
// run again, ends with exactly what an uninterrupted run produces — nothing missing, nothing
// duplicated — and the state row is always a whole, committed state.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCli, startCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { contentOf, readJsonl } from '../helpers/jsonl.ts';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';

const FILES = 800;
let stateUrl: string;
beforeAll(async () => {
  stateUrl = await createDatabase(inject('pgUrl'), 'pgstate_crash');
});

function corpus(): Record<string, string> {
  const files: Record<string, string> = {};
  for (let i = 0; i < FILES; i++) {
    files[`docs/d${String(i).padStart(4, '0')}.md`] =
      `# Note ${i}\n\nThe sluice gate number ${i} opens at dawn. ` + 'Water flows. '.repeat(i % 7);
  }
  return files;
}
const pipeline = (schema: string) => `version: 1
state: { type: postgres, url: "\${STATE_DB_URL}", schema: ${schema} }
connections:
  - name: docs
    source: { type: file, config: { path: ./docs, checkpoint_every: 20 } }
    destination: { type: jsonl, config: { path: ./out.jsonl, batch_records: 40 } }
    embedding: { provider: hash, dimensions: 16 }
    processing: { chunk_size: 60, chunk_overlap: 10, chunk_unit: characters }
    streams: [ { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup } ]
`;

describe('crash safety with state in PostgreSQL (file → jsonl)', () => {
  it('SIGKILL at random points, then a re-run, equals an uninterrupted run', async () => {
    const env = { STATE_DB_URL: stateUrl };
    const files = corpus();
    const ref = tempDir();
    writeFiles(ref, { ...files, 'p.yaml': pipeline('crash_ref') });
    const r = await runCli(['sync', join(ref, 'p.yaml')], { cwd: ref, env });
    expect(r.code, r.stderr).toBe(0);
    const expected = contentOf(join(ref, 'out.jsonl'));
    expect(expected.length).toBeGreaterThan(FILES);

    const dir = tempDir();
    writeFiles(dir, { ...files, 'p.yaml': pipeline('crash_run') });
    const out = join(dir, 'out.jsonl');
    let killedMidway = 0;
    let cursors = 0;
    for (let trial = 0; trial < 5; trial++) {
      const run = startCli(['sync', join(dir, 'p.yaml')], { cwd: dir, env });
      // During start-up in one trial, otherwise a random instant after a commit reached the destination.
      if (trial === 0) await sleep(200 + Math.random() * 600);
      else {
        const before = existsSync(out) ? statSync(out).mtimeMs : 0;
        for (let i = 0; i < 600; i++) {
          if (existsSync(out) && statSync(out).mtimeMs !== before) break;
          await sleep(20);
        }
        await sleep(Math.random() * 300);
      }
      run.child.kill('SIGKILL');
      const res = await run.done;
      const lines = readJsonl(out);
      if (res.signal === 'SIGKILL' && lines.length < expected.length) killedMidway++;
      // Nothing is ever duplicated, even mid-way.
      const ids = lines.map((l) => l.id);
      expect(new Set(ids).size).toBe(ids.length);
      // The saved cursor never runs ahead of the destination (checkpoint rule).
      const state = await sql(stateUrl, `SELECT state FROM crash_run.connection_state WHERE connection = 'docs'`).catch(() => ({
        rows: [],
      }));
      const cursor = (state.rows[0] as { state?: { streams?: { docs?: { cursor?: { path: string } } } } } | undefined)?.state?.streams?.docs
        ?.cursor;
      if (cursor) {
        cursors++;
        const docs = new Set(lines.map((l) => l.document_id));
        // Every file at or before the saved cursor (mtime, then path) is in the destination.
        const covered = Object.keys(files)
          .map((f) => f.slice('docs/'.length))
          .filter((f) => {
            const m = Math.floor(statSync(join(dir, 'docs', f)).mtimeMs);
            const c = cursor as unknown as { mtime_ms: number; path: string };
            return m < c.mtime_ms || (m === c.mtime_ms && f <= c.path);
          });
        for (const f of covered) expect(docs.has(f), f).toBe(true);
      }
    }
    expect(killedMidway, 'at least one kill must land mid-sync').toBeGreaterThan(0);
    expect(cursors, 'at least one kill must land after a saved state').toBeGreaterThan(0);
    const final = await runCli(['sync', join(dir, 'p.yaml'), '--json'], { cwd: dir, env });
    expect(final.code, final.stderr).toBe(0);
    expect(contentOf(out)).toEqual(expected);
    // And once more: everything is done, nothing is read again.
    const again = await runCli(['sync', join(dir, 'p.yaml'), '--json'], { cwd: dir, env });
    expect(
      (JSON.parse(again.stdout) as { connections: Array<{ streams: { docs: { records_read: number } } }> }).connections[0].streams.docs
        .records_read,
    ).toBe(0);
  }, 300_000);
});
