// Issue 14, defect 1: `sluice state show|reset` act on wherever the state lives — the state file
// and the destination's copy (pgvector's _sluice_state, which the next sync starts from) — and an
// unknown --stream is an error that names the known streams, with nothing reset.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';

const destUrl = inject('pgliteUrl');

function setup(schema: string) {
  const dir = tempDir('state-cli-');
  const docs: Record<string, string> = {};
  for (let i = 0; i < 12; i++) docs[`corpus/doc-${i}.md`] = `# Doc ${i}\n\nParagraph about topic ${i}.\n`;
  writeFiles(dir, {
    ...docs,
    'pipeline.yaml': `version: 1
connections:
  - name: st
    source:
      type: file
      config: { path: corpus, stream: docs }
    destination:
      type: pgvector
      config: { url: ${JSON.stringify(destUrl)}, schema: ${schema} }
    embedding: { provider: hash, dimensions: 8 }
    streams:
      - { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup }
`,
  });
  return { dir, file: join(dir, 'pipeline.yaml') };
}

const recordsRead = async (file: string) => {
  const r = await runCli(['sync', file, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { connections: Array<{ streams: Record<string, { records_read: number }> }> }).connections[0].streams.docs
    .records_read;
};
const show = async (file: string) => {
  const r = await runCli(['state', 'show', file, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return { state: (JSON.parse(r.stdout) as Record<string, { streams: Record<string, unknown> } | null>).st, stderr: r.stderr };
};

describe('state show / reset with a destination that keeps the state', () => {
  it('show prints the destination copy the next sync starts from, even when the state file is gone', { timeout: 180_000 }, async () => {
    const { dir, file } = setup('state_show');
    expect(await recordsRead(file)).toBe(12);
    rmSync(join(dir, '.sluice', 'state', 'st.json'));
    const { state, stderr } = await show(file);
    expect(state?.streams.docs).toBeTruthy();
    expect(stderr).toMatch(/state kept by destination pgvector \(table state_show\._sluice_state/);
    // …and it is indeed what the sync starts from: nothing changed, nothing read.
    expect(await recordsRead(file)).toBe(0);
  });

  it('reset makes the next sync start from scratch', { timeout: 180_000 }, async () => {
    const { file } = setup('state_reset');
    expect(await recordsRead(file)).toBe(12);
    expect(await recordsRead(file)).toBe(0);
    const r = await runCli(['state', 'reset', file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/reset state of st in destination pgvector .* and state file/);
    expect((await show(file)).state).toBeNull();
    expect(await recordsRead(file)).toBe(12);
  });

  it('reset --stream of an unknown stream is an error naming the known ones; nothing is reset', { timeout: 180_000 }, async () => {
    const { file } = setup('state_nope');
    expect(await recordsRead(file)).toBe(12);
    const r = await runCli(['state', 'reset', file, '--stream', 'nope']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('connection st has no stream "nope"; nothing was reset');
    expect(r.stderr).toMatch(/known streams: docs/);
    expect(r.stdout).not.toMatch(/reset state/);
    expect((await show(file)).state?.streams.docs).toBeTruthy();
    expect(await recordsRead(file)).toBe(0);

    const one = await runCli(['state', 'reset', file, '--stream', 'docs']);
    expect(one.code, one.stderr).toBe(0);
    expect((await show(file)).state?.streams.docs).toBeUndefined();
    expect(await recordsRead(file)).toBe(12);
  });
});
