// The file source on its own: what it remembers between runs (a listing file in the workDir, not a
// map in the state), resuming a crashed incremental run, and state written by earlier versions.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ConnectorContext, SourceState } from '../../src/protocol/connector.ts';
import type { AirbyteMessage, ConfiguredCatalog, SyncMode } from '../../src/protocol/messages.ts';
import { readFileSync } from 'node:fs';
import { glob } from 'tinyglobby';
import source, { FileSourceConfig, LocalIo, readTextSync, walkAll } from './index.ts';
import { ReadAhead } from './read-ahead.ts';
import { ListingDir } from './listing.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup(files: Record<string, string | [string, number]>) {
  const root = mkdtempSync(join(tmpdir(), 'sluice-source-file-'));
  dirs.push(root);
  mkdirSync(join(root, 'docs'));
  mkdirSync(join(root, 'work'));
  write(root, files);
  return root;
}

/** Writes files; `[content, epochSeconds]` also sets the modification time. */
function write(root: string, files: Record<string, string | [string, number]>) {
  for (const [rel, v] of Object.entries(files)) {
    const [content, mtime] = typeof v === 'string' ? [v, undefined] : v;
    const path = join(root, 'docs', rel);
    writeFileSync(path, content);
    if (mtime !== undefined) utimesSync(path, mtime, mtime);
  }
}

const warnings: string[] = [];
function context(root: string): ConnectorContext {
  const log = () => {};
  return {
    logger: { debug: log, info: log, error: log, warn: (_o: unknown, msg?: string) => warnings.push(String(msg)) } as never,
    baseDir: root,
    signal: new AbortController().signal,
    connection: 'test',
    follow: false,
    workDir: join(root, 'work'),
  };
}

function catalog(mode: SyncMode = 'incremental'): ConfiguredCatalog {
  return {
    streams: [
      {
        stream: { name: 'docs', json_schema: {}, supported_sync_modes: ['full_refresh', 'incremental'] },
        sync_mode: mode,
        destination_sync_mode: 'append_dedup',
      },
    ],
  } as ConfiguredCatalog;
}

async function read(root: string, state: SourceState | undefined, opts: { checkpointEvery?: number; mode?: SyncMode } = {}) {
  const config = FileSourceConfig.parse({ path: 'docs', stream: 'docs', checkpoint_every: opts.checkpointEvery ?? 1000 });
  const out: AirbyteMessage[] = [];
  for await (const m of source.read(config, catalog(opts.mode), state, context(root))) out.push(m);
  const records = out.filter((m) => m.type === 'RECORD');
  return {
    messages: out,
    read: records.filter((m) => !(m.record.data as Record<string, unknown>)._ab_cdc_deleted_at).map((m) => m.record.data.path as string),
    deleted: records.filter((m) => (m.record.data as Record<string, unknown>)._ab_cdc_deleted_at).map((m) => m.record.data.path as string),
    states: out.filter((m) => m.type === 'STATE').map((m) => m.state.stream!.stream_state as Record<string, unknown>),
  };
}

const asState = (streamState: Record<string, unknown>): SourceState => ({ streams: { docs: streamState } });

describe('source-file', () => {
  it('keeps its state a few bytes however many files there are; the listing lives in the workDir', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 2000; i++) files[`doc-${String(i).padStart(5, '0')}.md`] = `Document ${i}.`;
    const root = setup(files);
    const first = await read(root, undefined, { checkpointEvery: 100 });
    expect(first.read).toHaveLength(2000);
    expect(first.states).toHaveLength(21);
    for (const s of first.states) expect(JSON.stringify(s).length).toBeLessThan(300);
    const last = first.states.at(-1)!;
    expect(last).toMatchObject({ listing_gen: 1 });
    expect(readdirSync(join(root, 'work/file/docs'))).toEqual(['listing-1.jsonl']);

    // Next run: nothing changed, nothing read; one file deleted and one touched are noticed.
    rmSync(join(root, 'docs/doc-00007.md'));
    write(root, { 'doc-00009.md': 'Document 9, edited.' });
    const second = await read(root, asState(last));
    expect(second.deleted).toEqual(['doc-00007.md']);
    expect(second.read).toEqual(['doc-00009.md']);
    expect(second.states.at(-1)).toMatchObject({ listing_gen: 2 });
    // The base listing (1) is kept until a state names the new one (2).
    expect(readdirSync(join(root, 'work/file/docs')).sort()).toEqual(['listing-1.jsonl', 'listing-2.jsonl']);
    const third = await read(root, asState(second.states.at(-1)!));
    expect(third.read).toEqual([]);
    expect(third.deleted).toEqual([]);
    // Nothing changed: the listing is kept as it is, older ones are cleaned up.
    expect(third.states.at(-1)).toMatchObject({ listing_gen: 2 });
    expect(readdirSync(join(root, 'work/file/docs'))).toEqual(['listing-2.jsonl']);
    // A change after an unchanged run is still seen against that kept listing.
    rmSync(join(root, 'docs/doc-00011.md'));
    const fourth = await read(root, asState(third.states.at(-1)!));
    expect(fourth.deleted).toEqual(['doc-00011.md']);
    expect(fourth.states.at(-1)).toMatchObject({ listing_gen: 3 });
  });

  it('resumes a crashed incremental run from its last checkpoint: late and new files are each read once', async () => {
    const root = setup({ 'a.md': ['A', 1000], 'b.md': ['B', 2000] });
    const done = (await read(root, undefined)).states.at(-1)!;
    // Two files copied in with old mtimes (late) and three new ones.
    write(root, { 'late1.md': ['L1', 500], 'late2.md': ['L2', 1500], 'c.md': ['C', 3000], 'd.md': ['D', 3001], 'e.md': ['E', 3002] });
    const full = await read(root, asState(done), { checkpointEvery: 1 });
    expect(full.read).toEqual(['late1.md', 'late2.md', 'c.md', 'd.md', 'e.md']);
    // A crash after each checkpoint k: the resumed run reads exactly what came after it.
    for (let k = 0; k < full.states.length - 1; k++) {
      const resumed = await read(root, asState(full.states[k]));
      expect([...full.read.slice(0, k + 1), ...resumed.read]).toEqual(full.read);
      expect(resumed.deleted).toEqual([]);
    }
  });

  it('a file changed during a crashed run is read again on resume', async () => {
    const root = setup({ 'a.md': ['A', 1000] });
    const done = (await read(root, undefined)).states.at(-1)!;
    write(root, { 'b.md': ['B', 2000], 'c.md': ['C', 3000] });
    const crashed = await read(root, asState(done), { checkpointEvery: 1 });
    const afterB = crashed.states[0];
    expect(afterB).toMatchObject({ progress: { path: 'b.md' } });
    write(root, { 'b.md': ['B, again', 4000] });
    const resumed = await read(root, asState(afterB));
    expect(resumed.read).toEqual(['c.md', 'b.md']);
  });

  it('reads state written by sluice ≤ 0.1 (every file in a map) once, then keeps a listing', async () => {
    const root = setup({ 'a.md': ['A', 1000], 'b.md': ['B', 2000] });
    const legacy = { cursor: { mtime_ms: 2_000_000, path: 'b.md' }, files: { 'a.md': 1_000_000, 'b.md': 2_000_000, 'gone.md': 1_500_000 } };
    write(root, { 'late.md': ['L', 10] });
    const r = await read(root, asState(legacy));
    expect(r.deleted).toEqual(['gone.md']);
    expect(r.read).toEqual(['late.md']);
    expect(r.states.at(-1)).not.toHaveProperty('files');
    expect(r.states.at(-1)).toMatchObject({ listing_gen: 1 });
  });

  it('a listing missing from the workDir: warns, still reads new and changed files', async () => {
    const root = setup({ 'a.md': ['A', 1000] });
    const done = (await read(root, undefined)).states.at(-1)!;
    rmSync(join(root, 'work/file'), { recursive: true });
    write(root, { 'b.md': ['B', 2000] });
    warnings.length = 0;
    const r = await read(root, asState(done));
    expect(r.read).toEqual(['b.md']);
    expect(warnings.join('\n')).toMatch(/previous file listing is missing/);
  });

  it('full refresh reads everything and still reports vanished files', async () => {
    const root = setup({ 'a.md': 'A', 'b.md': 'B' });
    const done = (await read(root, undefined, { mode: 'full_refresh' })).states.at(-1)!;
    rmSync(join(root, 'docs/a.md'));
    const r = await read(root, asState(done), { mode: 'full_refresh' });
    expect(r.read).toEqual(['b.md']);
    expect(r.deleted).toEqual(['a.md']);
  });

  it('listings are written atomically and read back in path order', async () => {
    const root = setup({});
    const dir = new ListingDir(join(root, 'work'), 'we/ird stream');
    expect(await dir.prepare(undefined)).toBe(1);
    const entries = ['b', 'a/ü', 'a/z', 'é', 'A'].map((rel, i) => ({ rel, mtimeMs: i })).sort((x, y) => (x.rel < y.rel ? -1 : 1));
    await dir.write(1, entries);
    const back: unknown[] = [];
    for await (const block of dir.read(1)) back.push(...block);
    expect(back).toEqual(entries.map((e) => [e.rel, e.mtimeMs]));
    // A listing longer than one read block comes back whole and in order.
    const many = Array.from({ length: 30_000 }, (_, i) => ({
      rel: `dir-${String(i).padStart(6, '0')}/${'n'.repeat(i % 40)}.md`,
      mtimeMs: 1e12 + i,
    }));
    await dir.write(3, many);
    const blocks: unknown[][] = [];
    for await (const block of dir.read(3)) blocks.push(block);
    expect(blocks.length).toBeGreaterThan(1);
    expect(blocks.flat()).toEqual(many.map((e) => [e.rel, e.mtimeMs]));
    // Leftovers of crashed runs go; the next generation is always the one after the kept listing.
    rmSync(dir.path(3));
    writeFileSync(`${dir.path(7)}.tmp`, 'half');
    writeFileSync(dir.path(5), '');
    writeFileSync(dir.path(2), 'partial');
    expect(await dir.prepare(1)).toBe(2);
    expect(readdirSync(dir.dir)).toEqual(['listing-1.jsonl']);
  });

  it('switches to parallel asynchronous reads on a slow file system, with the same result', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 300; i++) files[`d${i}.md`] = `Doc ${i} `.repeat(i % 7);
    const root = setup(files);
    const io = new LocalIo();
    expect(io.sync).toBe(true);
    // The odd slow call on a busy machine does not switch.
    const busy = new LocalIo();
    for (let i = 0; i < 200; i++) busy.timed(() => 0);
    LocalIo.slowCallMs = -1;
    for (let i = 0; i < 10; i++) busy.timed(() => 0);
    LocalIo.slowCallMs = 2;
    expect(busy.sync).toBe(true);
    const fast = await read(root, undefined, { mode: 'full_refresh' });
    const saved = LocalIo.slowCallMs;
    LocalIo.slowCallMs = -1; // every call counts as slow
    try {
      for (let i = 0; i < 7; i++) io.timed(() => 0);
      expect(io.sync).toBe(true);
      io.timed(() => 0);
      expect(io.sync).toBe(false);
      rmSync(join(root, 'work/file'), { recursive: true });
      const slow = await read(root, undefined, { mode: 'full_refresh' });
      expect(slow.read).toEqual(fast.read);
      const content = (r: typeof fast) => r.messages.filter((m) => m.type === 'RECORD').map((m) => m.record.data.content);
      expect(content(slow)).toEqual(content(fast));
    } finally {
      LocalIo.slowCallMs = saved;
    }
  });

  it('reads small files synchronously exactly as readFileSync does: large, grown since listing, multi-byte, latin1', async () => {
    const big = Array.from({ length: 40_000 }, (_, i) => (i % 3 ? `word${i} ` : `é中😀 `)).join(''); // > 64 KiB, spans the buffer
    const root = setup({ 'a.md': 'short', 'big.md': big, 'empty.md': '' });
    for (const name of ['a.md', 'big.md', 'empty.md']) {
      const path = join(root, 'docs', name);
      for (const hint of [0, 3, 70_000, 1 << 20]) {
        expect(readTextSync(path, 'utf8', hint)).toBe(readFileSync(path, 'utf8'));
        expect(readTextSync(path, 'latin1', hint)).toBe(readFileSync(path, 'latin1'));
      }
    }
    const { messages } = await read(root, undefined, { mode: 'full_refresh' });
    const content = Object.fromEntries(messages.filter((m) => m.type === 'RECORD').map((m) => [m.record.data.path, m.record.data.content]));
    expect(content).toEqual({ 'a.md': 'short', 'big.md': big, 'empty.md': '' });
  });

  it('walks a tree exactly as the default glob does: no dot entries, no symbolic links, only regular files', async () => {
    const root = setup({});
    const docs = join(root, 'docs');
    for (const d of ['a/b/c', '.hidden/x', 'dir.with.dots', 'ünï cødé', 'a/.git']) mkdirSync(join(docs, d), { recursive: true });
    const files = [
      'top.md',
      'a/one.md',
      'a/b/two.txt',
      'a/b/c/three.json',
      '.dot.md',
      '.hidden/x/in.md',
      'a/.git/config',
      'dir.with.dots/f.md',
      'ünï cødé/ß.md',
      'a/b/.also-hidden.md',
    ];
    for (const f of files) writeFileSync(join(docs, f), 'x');
    symlinkSync(join(docs, 'top.md'), join(docs, 'link.md'));
    symlinkSync(join(docs, 'a'), join(docs, 'linkdir'));
    symlinkSync(join(docs, 'missing'), join(docs, 'broken.md'));
    execFileSync('mkfifo', [join(docs, 'fifo.md')]);
    const expected = await glob(['**/*'], { cwd: docs, onlyFiles: true, dot: false, followSymbolicLinks: false });
    expect(walkAll(docs).sort()).toEqual(expected.sort());
    expect(walkAll(docs).sort()).toEqual(['a/b/c/three.json', 'a/b/two.txt', 'a/one.md', 'dir.with.dots/f.md', 'top.md', 'ünï cødé/ß.md']);
  });

  it('reads many files ahead on a worker thread: same records, in order, around files it leaves to the main thread', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 700; i++) files[`f${String(i).padStart(4, '0')}.md`] = i % 50 === 0 ? '' : `doc ${i} ${'é中 '.repeat(i % 13)}`;
    for (let i = 0; i < 5; i++) files[`rows${i}.jsonl`] = `{"id":${i}}\n`;
    files['big.txt'] = 'x'.repeat(1024 * 1024 + 10); // above the small-file limit: read by the main thread
    const root = setup(files);
    const { messages } = await read(root, undefined, { mode: 'full_refresh' });
    const records = messages.filter((m) => m.type === 'RECORD').map((m) => m.record.data);
    const byPath = new Map(records.filter((r) => typeof r.path === 'string').map((r) => [r.path, r.content]));
    for (const [name, content] of Object.entries(files)) if (!name.endsWith('.jsonl')) expect(byPath.get(name), name).toBe(content);
    expect(records.filter((r) => r.id !== undefined).map((r) => r.id)).toEqual([0, 1, 2, 3, 4]);
    // Listing order (mtime, then path) is kept.
    const paths = records.map((r) => r.path).filter((p): p is string => typeof p === 'string' && p.startsWith('f'));
    expect(paths).toEqual([...paths].sort());
  });

  it('read-ahead leaves a file it could not read, or everything after its worker stopped, to the caller', async () => {
    const root = setup({ 'a.md': 'A', 'b.md': 'B', 'c.md': 'C' });
    const at = (n: string) => join(root, 'docs', n);
    const list = [
      { path: at('a.md'), size: 1, eligible: true },
      { path: at('gone.md'), size: 1, eligible: true },
      { path: at('b.md'), size: 1, eligible: false },
      { path: at('c.md'), size: 1, eligible: true },
    ];
    const ahead = new ReadAhead(list.length, (i) => list[i], 'utf8');
    expect(await ahead.take(0)).toBeUndefined(); // the workers are still starting: the caller reads
    await ahead.started();
    expect(await ahead.take(0)).toBe('A');
    expect(await ahead.take(1)).toBeUndefined(); // ENOENT: the caller reads it and reports the error
    expect(await ahead.take(2)).toBeUndefined(); // not eligible
    expect(await ahead.take(3)).toBe('C');
    await ahead.close();
    const stopped = new ReadAhead(list.length, (i) => list[i], 'utf8');
    await stopped.close();
    for (let i = 0; i < list.length; i++) expect(await stopped.take(i)).toBeUndefined();
  });
});
