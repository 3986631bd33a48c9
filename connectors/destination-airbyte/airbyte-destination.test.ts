// The `airbyte` destination with a protocol-speaking fixture program
// (test/fixture-destination.mjs): STATE acknowledged only when echoed, deletions as
// `_ab_cdc_deleted_at` records, and a CLI sync (airbyte source → airbyte destination) whose
// destination crashes and then resumes from the last echoed state.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DestinationEvent, DestinationMessage, StateMessage } from '../../src/cdk/index.ts';
import { scratchDir, testContext } from '../../src/testing/index.ts';
import { STACK_LINE, runCli, tempDir, writeFiles } from '../../test/helpers/cli.ts';
import destination from './index.ts';

const FIXTURE = join(import.meta.dirname, 'test', 'fixture-destination.mjs');
const SOURCE_FIXTURE = join(import.meta.dirname, '..', 'source-airbyte', 'test', 'fixture-source.mjs');

async function run(config: Record<string, unknown>, messages: DestinationMessage[]) {
  const ctx = testContext();
  const writer = await destination.open({ command: [process.execPath, FIXTURE], docker_args: [], env: {}, config }, ctx, {
    streams: [{ name: 'notes', destinationSyncMode: 'append_dedup', primaryKey: [['id']] }],
  });
  async function* input() {
    yield* messages;
  }
  const events: DestinationEvent[] = [];
  for await (const e of writer.write(input())) events.push(e);
  await writer.close();
  return events;
}

const doc = (id: string, text: string): DestinationMessage => ({
  type: 'DOCUMENT',
  stream: 'notes',
  documentId: id,
  chunks: [],
  record: { id, text },
});
const state = (n: number): DestinationMessage => {
  const s = { type: 'STREAM', stream: { stream_descriptor: { name: 'notes' }, stream_state: { cursor: n } } } as StateMessage;
  return { type: 'STATE', state: s, connection: { streams: { notes: { cursor: n } } } };
};

describe('airbyte destination (a protocol-speaking program)', () => {
  it('acknowledges a STATE only once the program echoes it; deletions carry _ab_cdc_deleted_at', async () => {
    const path = join(scratchDir('sluice-airbyte-dest-'), 'store.json');
    const events = await run({ path }, [
      doc('a', 'alpha'),
      doc('b', 'bravo'),
      state(2),
      { type: 'DELETE', stream: 'notes', documentId: 'a' },
      doc('c', 'charlie'),
      state(4),
    ]);
    expect(events.filter((e) => e.type === 'STATE_COMMITTED').map((e) => (e as { connection: unknown }).connection)).toEqual([
      { streams: { notes: { cursor: 2 } } },
      { streams: { notes: { cursor: 4 } } },
    ]);
    expect(events.filter((e) => e.type === 'WRITTEN').map((e) => (e as { records: number }).records)).toEqual([2, 2]);
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({ notes: { b: { id: 'b', text: 'bravo' }, c: { id: 'c', text: 'charlie' } } });

    const silent = await run({ path, no_echo: true }, [doc('d', 'delta'), state(5)]);
    expect(silent.filter((e) => e.type === 'STATE_COMMITTED')).toEqual([]);
  });

  it('check maps to the protocol command', async () => {
    const ctx = testContext();
    const base = { command: [process.execPath, FIXTURE], docker_args: [], env: {} };
    expect(await destination.check({ ...base, config: { path: 'x' } }, ctx)).toEqual({ ok: true });
    expect(await destination.check({ ...base, config: {} }, ctx)).toEqual({ ok: false, message: 'path is required' });
  });

  it(
    'a crashed destination fails the sync with its exit code; the rerun resumes from the last echoed state',
    { timeout: 120_000 },
    async () => {
      const dir = tempDir('sluice-airbyte-dest-e2e-');
      const yaml = (crash: number | null) => `version: 1
connections:
  - name: notes
    source:
      type: airbyte
      config:
        command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(SOURCE_FIXTURE)}]
        config: { records: 300, state_every: 25 }
    destination:
      type: airbyte
      config:
        command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(FIXTURE)}]
        config: { path: store.json${crash ? `, crash_after_records: ${crash}` : ''} }
    processing: { text_fields: [text], chunk_size: 200 }
    streams:
      - { name: notes, sync_mode: incremental, destination_sync_mode: append_dedup }
`;
      writeFiles(dir, { 'crash.yaml': yaml(140), 'ok.yaml': yaml(null) });
      const crashed = await runCli(['sync', join(dir, 'crash.yaml'), '--json']);
      expect(crashed.code).not.toBe(0);
      expect(crashed.stderr + crashed.stdout).toMatch(/\(write\) exited with code 4; last output:[\s\S]*disk full after 140 records/);
      expect(crashed.stderr).not.toMatch(STACK_LINE);
      const saved = JSON.parse((await runCli(['state', 'show', join(dir, 'crash.yaml'), '--json'])).stdout);
      expect(saved.notes.streams.notes).toEqual({ cursor: 125 });
      const ok = await runCli(['sync', join(dir, 'ok.yaml'), '--json']);
      expect(ok.code, ok.stderr).toBe(0);
      const stored = JSON.parse(readFileSync(join(dir, 'store.json'), 'utf8')) as { notes: Record<string, unknown> };
      expect(Object.keys(stored.notes).sort()).toEqual(Array.from({ length: 300 }, (_, i) => `note-${i + 1}`).sort());
      const after = JSON.parse((await runCli(['state', 'show', join(dir, 'ok.yaml'), '--json'])).stdout);
      expect(after.notes.streams.notes).toEqual({ cursor: 300 });
    },
  );
});
