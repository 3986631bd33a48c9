// The file source's read-ahead threads when read() runs on its own, in a script or a test: no CLI
// connection keeps the process alive there, so the process must end exactly when the read is done.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReadAhead } from './read-ahead.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const FILES = 600; // read-ahead starts at 500 files
let root: string;

// A consumer doing synchronous work (hashing, a local model…) without turning the event loop: the
// reader threads answer meanwhile, and their replies are delivered only once the read is closing.
const SCRIPT = `
import { stat } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import source, { FileSourceConfig } from ${JSON.stringify(resolve(here, 'index.ts'))};
import { testContext } from ${JSON.stringify(resolve(here, '../../src/testing/index.ts'))};
const [root, mode, files] = process.argv.slice(2);
const busy = (ms) => { const until = Date.now() + ms; while (Date.now() < until); };
const threads = () => readdirSync('/proc/self/task').length;
// libuv's pool threads start on first use: start them before counting.
await Promise.all(Array.from({ length: 8 }, () => stat(root)));
const threadsBefore = threads();
const catalog = { streams: [{ stream: { name: 'docs', json_schema: {}, supported_sync_modes: ['full_refresh'] }, sync_mode: 'full_refresh', destination_sync_mode: 'overwrite' }] };
const ctx = testContext({ baseDir: root });
let records = 0;
for await (const m of source.read(FileSourceConfig.parse({ path: 'docs', stream: 'docs' }), catalog, undefined, ctx)) {
  if (m.type !== 'RECORD') continue;
  records++;
  if (records === 1 || records === Number(files)) busy(1500);
  if (records === 100 && mode !== 'full') {
    busy(1500);
    if (mode === 'return') break;
    ctx.abort();
  }
}
// A terminated reader's OS thread can exit a moment after terminate() resolves (seen on a loaded
// machine): give it up to 3 s; a thread that is really left behind stays and fails the check.
let threadsAfter = threads();
for (let i = 0; i < 60 && threadsAfter > threadsBefore; i++) {
  await new Promise((r) => setTimeout(r, 50));
  threadsAfter = threads();
}
process.stdout.write(JSON.stringify({ records, threadsBefore, threadsAfter }));
`;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'sluice-read-ahead-'));
  mkdirSync(join(root, 'docs'));
  for (let i = 0; i < FILES; i++) writeFileSync(join(root, 'docs', `f${String(i).padStart(4, '0')}.md`), `doc ${i}`);
  writeFileSync(join(root, 'read.mts'), SCRIPT);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Runs the stand-alone read in its own `node`; resolves with its exit code and what it printed. */
function standAlone(mode: 'full' | 'return' | 'abort') {
  return new Promise<{ code: number | null; signal: string | null; out: string; err: string }>((done) => {
    const child = execFile(
      process.execPath,
      ['--import', 'tsx', join(root, 'read.mts'), root, mode, String(FILES)],
      { cwd: resolve(here, '../..'), timeout: 60_000, killSignal: 'SIGKILL' },
      (_error, out, err) => done({ code: child.exitCode, signal: child.signalCode, out, err }),
    );
  });
}

describe('source-file read-ahead, read() on its own', () => {
  it.each([
    ['full', FILES],
    ['return', 100],
    ['abort', 100],
  ] as const)(
    '%s: the process finishes by itself with every record, and no reader thread is left',
    async (mode, records) => {
      const run = await standAlone(mode);
      // Before the fix, Node 20: exit code 13 (the read's last await left unsettled).
      expect({ code: run.code, signal: run.signal }, run.err).toEqual({ code: 0, signal: null });
      // Node 22 and 24 exit with code 0 there instead, before the script's last line.
      expect(run.out, 'the script stopped before its last line').not.toBe('');
      const result = JSON.parse(run.out) as { records: number; threadsBefore: number; threadsAfter: number };
      expect(result.records).toBe(records);
      expect(result.threadsAfter).toBeLessThanOrEqual(result.threadsBefore);
    },
    90_000,
  );

  it('a caller that never turns the event loop gets no reply, and the threads are not sent every file to read in vain', async () => {
    const formed: number[] = [];
    const count = 3000;
    const ahead = new ReadAhead(count, (i) => (formed.push(i), { path: join(root, 'docs', 'f0000.md'), size: 5, eligible: true }), 'utf8');
    // Microtasks only, as a plain `for await` over read() in a script: replies stay queued.
    for (let i = 0; i < count; i++) expect(await ahead.take(i)).toBeUndefined();
    // A few batches of 64 at most, not all 3000 files read a second time and held until the end.
    expect(formed.length).toBeLessThanOrEqual(4 * 64);
    await ahead.close();
  });
});
