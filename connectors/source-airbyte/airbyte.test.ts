// The `airbyte` source with a protocol-speaking fixture program (test/fixture-source.mjs): check,
// discover, read with per-stream and legacy states, resume, a crash mid-read, SIGTERM reaching the
// program, the `docker run` command line, and a CLI sync that crashes and resumes into jsonl.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AirbyteMessage, ConfiguredCatalog, SourceState } from '../../src/cdk/index.ts';
import { scratchDir, testContext } from '../../src/testing/index.ts';
import { STACK_LINE, runCli, tempDir, writeFiles } from '../../test/helpers/cli.ts';
import source, { protocolCommand, toProtocolState } from './index.ts';

const FIXTURE = join(import.meta.dirname, 'test', 'fixture-source.mjs');
const cfg = (config: Record<string, unknown>) => ({ command: [process.execPath, FIXTURE], docker_args: [], env: {}, config });

async function read(config: Record<string, unknown>, state?: SourceState, ctx = testContext()) {
  const catalog = await source.discover(cfg(config), ctx);
  const configured: ConfiguredCatalog = {
    streams: catalog.streams.map((s) => ({
      stream: s,
      sync_mode: 'incremental',
      destination_sync_mode: 'append_dedup',
      cursor_field: ['n'],
    })),
  };
  const messages: AirbyteMessage[] = [];
  for await (const m of source.read(cfg(config), configured, state, ctx)) messages.push(m);
  const records = messages
    .filter((m) => m.type === 'RECORD')
    .map((m) => (m as unknown as { record: { data: { n: number } } }).record.data.n);
  const states = messages.filter((m) => m.type === 'STATE').map((m) => (m as { state: unknown }).state);
  return { messages, records, states, ctx };
}

describe('airbyte source (a protocol-speaking program)', () => {
  it('check and discover map to the protocol commands', async () => {
    const ctx = testContext();
    expect(await source.check(cfg({ password: 'right' }), ctx)).toEqual({ ok: true });
    expect(await source.check(cfg({ password: 'wrong' }), ctx)).toEqual({ ok: false, message: 'wrong password' });
    expect(ctx.logs.some((l) => l.msg === 'checking the password')).toBe(true);
    const catalog = await source.discover(cfg({}), ctx);
    expect(catalog.streams.map((s) => [s.name, s.source_defined_primary_key])).toEqual([['notes', [['id']]]]);
    // The config file the program read is private to the owner.
    const { mode } = await import('node:fs').then((fs) => fs.statSync(join(ctx.workDir, 'airbyte', 'config.json')));
    expect(mode & 0o077).toBe(0);
  });

  it('reads records and per-stream states, and resumes from the state it is given', async () => {
    const first = await read({ records: 12, state_every: 5 });
    expect(first.records).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(first.states).toEqual(
      [5, 10, 12].map((n) => ({ type: 'STREAM', stream: { stream_descriptor: { name: 'notes' }, stream_state: { cursor: n } } })),
    );
    expect(first.ctx.logs.some((l) => l.msg === 'airbyte stderr: reading notes after 0')).toBe(true);
    const second = await read({ records: 15, state_every: 5 }, { streams: { notes: { cursor: 12 } } });
    expect(second.records).toEqual([13, 14, 15]);
    expect(toProtocolState({ streams: { notes: { cursor: 12 } } })).toEqual([
      { type: 'STREAM', stream: { stream_descriptor: { name: 'notes' }, stream_state: { cursor: 12 } } },
    ]);
  });

  it('a legacy STATE is kept as one blob and handed back as it was', async () => {
    const first = await read({ records: 6, state_every: 4, legacy_state: true });
    const last = first.states[first.states.length - 1] as { type: string; global: { shared_state: Record<string, unknown> } };
    expect(last.type).toBe('GLOBAL');
    expect(last.global.shared_state).toEqual({ __airbyte_legacy: { notes: { cursor: 6 } } });
    const resumed = await read({ records: 8, legacy_state: true }, { streams: {}, shared: last.global.shared_state });
    expect(resumed.records).toEqual([7, 8]);
  });

  it('a crash mid-read is an error with the exit code and the last log lines', async () => {
    const err = await read({ records: 20, crash_at: 8 }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/\(read\) exited with code 3; last output:\n.*boom: the API went away at note 8/s);
  });

  it('SIGTERM reaches the program when the sync is stopped', async () => {
    const marker = join(scratchDir('sluice-airbyte-'), 'sigterm');
    const ctx = testContext();
    const catalog = await source.discover(cfg({}), ctx);
    const configured: ConfiguredCatalog = {
      streams: catalog.streams.map((s) => ({ stream: s, sync_mode: 'full_refresh', destination_sync_mode: 'append' })),
    };
    let seen = 0;
    for await (const m of source.read(cfg({ records: 100_000, slow_ms: 5, sigterm_marker: marker }), configured, undefined, ctx)) {
      if (m.type === 'RECORD' && ++seen === 5) ctx.abort();
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(readFileSync(marker, 'utf8')).toBe('got SIGTERM');
    expect(seen).toBeLessThan(1000);
  });

  it('a missing program is a clear config error', async () => {
    const err = await source
      .check({ command: ['./no-such-connector'], docker_args: [], env: {}, config: {} }, testContext())
      .catch((e: Error) => e);
    expect(err).toMatchObject({ ok: false });
    expect((err as { message: string }).message).toMatch(/cannot start command \.\/no-such-connector: .*ENOENT/);
  });

  it('builds the `docker run` command line the platform would', () => {
    expect(
      protocolCommand(
        { image: 'airbyte/source-github:1.8.0', docker_args: ['--network', 'host'], env: { GITHUB_TOKEN: 'x' } },
        ['read', '--config', '@config.json', '--catalog', '@catalog.json', '--state', '@state.json'],
        '/work/.sluice/state/work/gh/airbyte',
      ),
    ).toEqual([
      'docker',
      'run',
      '-i',
      '--rm',
      '--init',
      '-v',
      '/work/.sluice/state/work/gh/airbyte:/airbyte/sluice:ro',
      '-e',
      'GITHUB_TOKEN',
      '--network',
      'host',
      'airbyte/source-github:1.8.0',
      'read',
      '--config',
      '/airbyte/sluice/config.json',
      '--catalog',
      '/airbyte/sluice/catalog.json',
      '--state',
      '/airbyte/sluice/state.json',
    ]);
    expect(protocolCommand({ command: ['python3', 'main.py'] }, ['check', '--config', '@config.json'], '/w')).toEqual([
      'python3',
      'main.py',
      'check',
      '--config',
      '/w/config.json',
    ]);
  });
});

describe('airbyte source through the CLI', () => {
  it('a sync whose connector crashes resumes after the last committed state, without duplicates', { timeout: 120_000 }, async () => {
    const dir = tempDir('sluice-airbyte-e2e-');
    const yaml = (crash: number | null) => `version: 1
connections:
  - name: notes
    source:
      type: airbyte
      config:
        command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(FIXTURE)}]
        config: { records: 300, state_every: 25${crash ? `, crash_at: ${crash}` : ''} }
    destination:
      type: jsonl
      config: { path: out.jsonl, include_embeddings: false }
    processing: { text_fields: [text], chunk_size: 200 }
    streams:
      - { name: notes, sync_mode: incremental, destination_sync_mode: append_dedup }
`;
    writeFiles(dir, { 'crash.yaml': yaml(140), 'ok.yaml': yaml(null) });
    const crashed = await runCli(['sync', join(dir, 'crash.yaml'), '--json']);
    expect(crashed.code).not.toBe(0);
    expect(crashed.stderr + crashed.stdout).toMatch(/exited with code 3/);
    expect(crashed.stderr + crashed.stdout).toMatch(/boom: the API went away at note 140/);
    expect(crashed.stderr).not.toMatch(STACK_LINE);
    const state = await runCli(['state', 'show', join(dir, 'crash.yaml'), '--json']);
    expect(JSON.parse(state.stdout).notes.streams.notes).toEqual({ cursor: 125 });
    const ok = await runCli(['sync', join(dir, 'ok.yaml'), '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    const lines = readFileSync(join(dir, 'out.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { document_id: string });
    const ids = lines.map((l) => l.document_id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids)).toEqual(new Set(Array.from({ length: 300 }, (_, i) => `note-${i + 1}`)));
    expect(existsSync(join(dir, 'out.jsonl'))).toBe(true);
  });
});
