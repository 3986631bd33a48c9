// The exit-code table of the README ("Exit codes"), checked against the real CLI:
// 0 success · 1 runtime failure · 2 invalid input or usage · 130/143 a one-shot run cut short;
// `sync --follow` stopped by SIGTERM/SIGINT after a clean shutdown is a success.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO, STACK_LINE, fileToJsonlPipeline, runCli, startCli, tempDir, writePipeline } from '../helpers/cli.ts';

const jsonlPipeline = (dir: string, connection: Record<string, unknown> = {}): string =>
  fileToJsonlPipeline(dir, { files: { 'docs/a.md': '# A\n\nalpha' }, connection: connection });

describe('exit codes: 0 success, 1 runtime failure, 2 invalid input', () => {
  it('0: a valid file validates and syncs', async () => {
    const dir = tempDir();
    const file = jsonlPipeline(dir);
    expect((await runCli(['validate', file])).code).toBe(0);
    const r = await runCli(['sync', file]);
    expect(r.code).toBe(0);
    expect(existsSync(join(dir, 'out.jsonl'))).toBe(true);
  });

  it('1: a runtime failure (source path gone, destination unreachable)', async () => {
    const dir = tempDir();
    const file = jsonlPipeline(dir, { source: { type: 'file', config: { path: './missing', stream: 'docs' } } });
    const r = await runCli(['sync', file]);
    expect(r.stderr).toMatch(/path not found/);
    expect(r.code).toBe(1);
    const unreachable = jsonlPipeline(tempDir(), {
      destination: { type: 'qdrant', config: { url: 'http://127.0.0.1:9', collection: 'x' } },
      embedding: { provider: 'hash', dimensions: 8 },
    });
    const check = await runCli(['check', unreachable]);
    expect(check.stdout).toMatch(/destination: FAILED/);
    expect(check.code).toBe(1);
  });

  it.each([
    ['an unknown key', { processing: { chunk_sise: 10 } }, {}, /unknown key "chunk_sise" — did you mean "chunk_size"\?/],
    ['a missing env var', { destination: { type: 'jsonl', config: { path: '${NOT_SET_ANYWHERE}' } } }, {}, /NOT_SET_ANYWHERE is not set/],
  ])('2: invalid pipeline file (%s)', async (_what, connection, env, pattern) => {
    const dir = tempDir();
    const r = await runCli(['sync', jsonlPipeline(dir, connection)], { env });
    expect(r.stderr).toMatch(pattern);
    expect(r.stderr).not.toMatch(STACK_LINE);
    expect(r.code).toBe(2);
    expect(existsSync(join(dir, 'out.jsonl'))).toBe(false);
  });

  it('2: a pipeline file that does not exist, a connection that does not exist, an empty option', async () => {
    expect((await runCli(['validate', join(tempDir(), 'nope.yaml')])).code).toBe(2);
    const file = jsonlPipeline(tempDir());
    const r = await runCli(['sync', file, '--connection', 'nope']);
    expect(r.stderr).toMatch(/no connection named "nope"/);
    expect(r.code).toBe(2);
    expect((await runCli(['state', 'show', file, '--connection', ''])).code).toBe(2);
  });
});

// Usage errors are commander's: the wiring that maps them to 2 lives in src/cli/main.ts.
describe('exit codes: usage errors are 2, --version and --help are 0', () => {
  it.each([
    [['sync', 'x.yaml', '--bogus'], /unknown option/],
    [['snyc'], /unknown command/],
    [['sync'], /missing required argument/],
  ])('%j exits 2', async (args, pattern) => {
    const r = await runCli(args);
    expect(r.stderr).toMatch(pattern);
    expect(r.code).toBe(2);
  });

  it('--version and --help exit 0', async () => {
    const v = await runCli(['--version']);
    expect(v.stdout.trim()).toBe(JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version);
    expect(v.code).toBe(0);
    expect((await runCli(['--help'])).code).toBe(0);
  });
});

describe('sync --follow stopped by a signal', () => {
  const fixture = (name: string) => join(REPO, 'test/cli/fixtures', name);
  const followPipeline = (dir: string) =>
    writePipeline(dir, [
      {
        name: 'f',
        source: { type: fixture('follow-source.ts') },
        destination: { type: fixture('final-flush-destination.ts'), config: { path: './out.txt' } },
      },
    ]);
  /** Starts `sync --follow`, waits until the source is following, sends the signals. */
  async function stopFollow(signals: NodeJS.Signals[], env: NodeJS.ProcessEnv = {}) {
    const dir = tempDir();
    const { child, done } = startCli(['sync', followPipeline(dir), '--follow'], { env });
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      child.stderr!.on('data', (d) => {
        stderr += d;
        if (stderr.includes('follow-source: waiting')) resolve();
      });
      child.on('close', () => reject(new Error(`exited before following:\n${stderr}`)));
    });
    for (const s of signals) {
      child.kill(s);
      await new Promise((r) => setTimeout(r, 100));
    }
    return { ...(await done), dir };
  }

  it.each(['SIGTERM', 'SIGINT'] as const)('%s after a clean shutdown exits 0, with everything flushed and the state saved', async (sig) => {
    const r = await stopFollow([sig]);
    expect(r.stderr).toMatch(new RegExp(`received ${sig}: stopping`));
    expect(r.code).toBe(0);
    expect(readFileSync(join(r.dir, 'out.txt'), 'utf8')).toBe('1\n2\n');
    expect(JSON.parse(readFileSync(join(r.dir, '.sluice/state/f.json'), 'utf8')).state.streams.events).toEqual({ seen: 1 });
  });

  it('a second signal while stopping exits non-zero at once', async () => {
    const r = await stopFollow(['SIGTERM', 'SIGTERM'], { FOLLOW_SOURCE_STOP_DELAY_MS: '5000' });
    expect(r.code).toBe(143);
  });

  it('a flush that fails while stopping exits 1', async () => {
    const r = await stopFollow(['SIGTERM'], { FINAL_FLUSH_FAILS: '1' });
    expect(r.stderr).toMatch(/final flush of 1 record\(s\) failed/);
    expect(r.code).toBe(1);
  });
});
