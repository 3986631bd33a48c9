// Fault matrix: the state directory made read-only while a sync runs. Tests run as root, which
// ignores file modes, so the sync runs as the unprivileged user `nobody` (runuser). The run fails
// naming the directory, the state file is left as it was (valid, the last committed state), and a
// re-run with the directory writable again ends exact.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { BIN, STACK_LINE, tempDir, writeFiles, type CliResult } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';

// Root ignores file modes: as root the CLI runs as `nobody`; any other user is subject to them already.
const asRoot = process.getuid?.() === 0;
const uid = asRoot ? Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim()) : process.getuid!();

/** The real CLI as an unprivileged user (so file modes apply). */
function startUnprivileged(args: string[], cwd: string): { done: Promise<CliResult> } {
  const [cmd, argv] = asRoot ? ['runuser', ['-u', 'nobody', '--', process.execPath, BIN, ...args]] : [process.execPath, [BIN, ...args]];
  const child = spawn(cmd, argv, {
    cwd,
    env: { ...process.env, HOME: cwd, SLUICE_LOG_LEVEL: 'warn', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return { done: new Promise((res) => child.on('close', (code, signal) => res({ code, signal, stdout, stderr }))) };
}

/** A source that emits one record per run and waits for a `go` file before emitting its STATE. */
const gatedSource = `
  import { existsSync } from 'node:fs';
  import { join } from 'node:path';
  import { z } from 'zod';
  import { message } from '${join(process.cwd(), 'src/protocol/messages.ts')}';
  export default {
    kind: 'source',
    spec: { name: 'gated', config: z.strictObject({}) },
    capabilities: { syncModes: ['incremental'], sourceDefinedCursor: true },
    async check() { return { ok: true }; },
    async discover() { return { streams: [{ name: 's', json_schema: { type: 'object' }, supported_sync_modes: ['incremental'], source_defined_cursor: true, source_defined_primary_key: [['id']] }] }; },
    async *read(_c, _cat, state, ctx) {
      const n = (state?.streams?.s?.n ?? 0) + 1;
      yield message.record('s', { id: n, content: 'record ' + n });
      while (!existsSync(join(ctx.baseDir, 'go'))) await new Promise((r) => setTimeout(r, 50));
      yield message.streamState('s', { n });
    },
  };`;

describe('state directory made read-only mid-run (as an unprivileged user)', () => {
  it('the run fails naming the directory; nothing is corrupted; a re-run with it writable is exact', { timeout: 400_000 }, async () => {
    const dir = tempDir('state-ro-', true);
    writeFiles(dir, {
      'gated.ts': gatedSource,
      'p.yaml': `version: 1
connections:
  - name: c
    source: { type: ./gated.ts }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
`,
      go: '',
    });
    const own = (p: string) => {
      if (asRoot) chownSync(p, uid, uid);
      if (existsSync(p) && readdirSync(p, { withFileTypes: true }).length)
        for (const e of readdirSync(p, { withFileTypes: true })) {
          const q = join(p, e.name);
          if (e.isDirectory()) own(q);
          else if (asRoot) chownSync(q, uid, uid);
        }
    };
    own(dir);
    const first = await startUnprivileged(['sync', 'p.yaml'], dir).done;
    expect(first.code, first.stderr).toBe(0);
    const stateDir = join(dir, '.sluice/state');
    const stateFile = join(stateDir, 'c.json');
    const committed = readFileSync(stateFile, 'utf8');
    expect(JSON.parse(committed).state.streams.s).toEqual({ n: 1 });

    // Second run: its record is read, then the directory turns read-only before its STATE.
    const goFile = join(dir, 'go');
    rmSync(goFile);
    const run = startUnprivileged(['sync', 'p.yaml', '--json'], dir);
    const lock = join(stateDir, 'locks/c.lock');
    for (let i = 0; i < 600 && !existsSync(lock); i++) await sleep(50);
    expect(existsSync(lock)).toBe(true);
    chmodSync(stateDir, 0o555);
    writeFileSync(goFile, '');
    const failed = await run.done;
    chmodSync(stateDir, 0o755);
    expect(failed.code).not.toBe(0);
    expect(failed.stderr).not.toMatch(STACK_LINE);
    const err = JSON.parse(failed.stdout).connections[0].error;
    expect(err.message).toBe(
      `cannot save the state of connection c: the state directory ${stateDir} is not writable (permission denied, EACCES)`,
    );
    expect(err.hint).toMatch(/make the directory writable for the user running sluice .*then run the sync again/);
    // Nothing corrupted: the state file is the last committed one, no temp file left behind.
    expect(readFileSync(stateFile, 'utf8')).toBe(committed);
    expect(readdirSync(stateDir).filter((f) => f.endsWith('.tmp'))).toEqual([]);

    // Writable again: the re-run ends exact (record 2 re-read and written once, state moved on).
    const again = await startUnprivileged(['sync', 'p.yaml', '--json'], dir).done;
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(readFileSync(stateFile, 'utf8')).state.streams.s).toEqual({ n: 2 });
    const lines = readJsonl(join(dir, 'out.jsonl'));
    expect(lines.map((l) => l.document_id).sort()).toEqual(['1', '2']);
    expect(lines.map((l) => l.content).sort()).toEqual(['record 1', 'record 2']);
  });
});
