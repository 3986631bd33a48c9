// What the source remembers between runs, on disk in the connection's workDir so memory stays
// flat however many objects the bucket holds:
//
//   snapshot-<gen>.jsonl   the full listing of the last complete run, [key, etag, lastModified, size]
//                          per line in S3 key order. Diffed against the next listing (a merge join,
//                          O(1) memory) to find deleted and changed objects.
//   rows/<hash>            for a structured object (key, etag): the ids of the rows it produced,
//                          so rows can be deleted when the object is deleted or rewritten.
//   graveyard-<gen>.jsonl  row files that become garbage once generation <gen> is committed.
//   committed              the last generation the engine confirmed (see onStateCommitted).
//
// The generation a run builds is named in the state only at the end of the run, so a crash
// before then replays against the previous (committed) listing and nothing is missed.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ListedObject } from './client.ts';

/** S3's listing order: UTF-8 byte order, i.e. code point order (not JS's UTF-16 order). */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      const xs = x >= 0xd800 && x <= 0xdfff;
      const ys = y >= 0xd800 && y <= 0xdfff;
      if (xs !== ys) return xs ? 1 : -1;
      return x - y;
    }
  }
  return a.length - b.length;
}

export class StreamDir {
  readonly dir: string;
  constructor(workDir: string, stream: string) {
    this.dir = join(workDir, 's3', encodeURIComponent(stream));
  }

  snapshotPath(gen: number) {
    return join(this.dir, `snapshot-${gen}.jsonl`);
  }

  rowsPath(key: string, etag: string) {
    return join(this.dir, 'rows', createHash('sha1').update(`${key}\0${etag}`).digest('hex'));
  }

  async family(): Promise<'text' | 'structured' | undefined> {
    const text = await readFile(join(this.dir, 'family'), 'utf8').catch(() => undefined);
    return text === 'text' || text === 'structured' ? text : undefined;
  }

  async setFamily(family: 'text' | 'structured') {
    await mkdir(this.dir, { recursive: true });
    await writeFile(join(this.dir, 'family'), family);
  }

  async committedGen(): Promise<number | undefined> {
    // Written by onStateCommitted; used when the engine has no state for the stream (a reset).
    const text = await readFile(join(this.dir, 'committed'), 'utf8').catch(() => undefined);
    const n = Number(text);
    return text !== undefined && Number.isInteger(n) ? n : undefined;
  }

  async setCommitted(gen: number) {
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, 'committed.tmp');
    await writeFile(tmp, String(gen));
    await rename(tmp, join(this.dir, 'committed'));
  }

  /**
   * Cleans up before a run and says which earlier listings count. `base` is the last complete
   * listing the state names. Listings newer than it belong to runs that did not complete — their
   * states may not even have been saved, yet the destination may hold what they emitted — so they
   * all count as partial listings. Older ones, and row files the base made obsolete, are removed.
   */
  async prepare(base: number | undefined): Promise<{ partials: number[]; maxGen: number }> {
    await mkdir(join(this.dir, 'rows'), { recursive: true });
    const partials: number[] = [];
    let maxGen = base ?? 0;
    for (const name of await readdir(this.dir)) {
      const snap = /^snapshot-(\d+)\.jsonl(\.tmp)?$/.exec(name);
      if (snap) {
        const g = Number(snap[1]);
        maxGen = Math.max(maxGen, g);
        if (snap[2] || (base !== undefined && g < base)) await rm(join(this.dir, name), { force: true });
        else if (g !== base) partials.push(g);
      }
      const grave = /^graveyard-(\d+)\.jsonl$/.exec(name);
      if (!grave) continue;
      const g = Number(grave[1]);
      maxGen = Math.max(maxGen, g);
      if (base === undefined || g > base) continue; // that run is not committed yet
      for (const line of (await readFile(join(this.dir, name), 'utf8')).split('\n')) {
        if (!line) continue;
        const [file, at] = JSON.parse(line) as [string, number];
        const path = join(this.dir, 'rows', file);
        // A file written again since it was buried (the object came back) is alive.
        const st = await stat(path).catch(() => undefined);
        if (st && st.mtimeMs <= at) await rm(path, { force: true });
      }
      await rm(join(this.dir, name), { force: true });
    }
    return { partials: partials.sort((a, b) => a - b), maxGen };
  }

  graveyard(gen: number): Graveyard {
    return new Graveyard(join(this.dir, `graveyard-${gen}.jsonl`));
  }
}

export class Graveyard {
  private out: WriteStream | undefined;
  constructor(private path: string) {}
  async add(rowsFile: string) {
    this.out ??= createWriteStream(this.path, { flags: 'a' });
    const name = rowsFile.slice(rowsFile.lastIndexOf('/') + 1);
    if (!this.out.write(`${JSON.stringify([name, Date.now()])}\n`)) await once(this.out, 'drain');
  }
  async close() {
    if (!this.out) return;
    const out = this.out;
    this.out = undefined;
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  }
}

type Entry = ListedObject;
const toLine = (o: Entry) => `${JSON.stringify([o.key, o.etag, o.lastModified, o.size])}\n`;
const fromLine = (line: string): Entry => {
  const [key, etag, lastModified, size] = JSON.parse(line) as [string, string, string, number];
  return { key, etag, lastModified, size };
};

/**
 * Writes a listing to `path` in S3 key order. S3 (and MinIO, R2, Ceph) list in that order, so
 * this streams; a store that lists in another order is sorted in memory (logged by the caller).
 */
export async function writeListing(listing: AsyncIterable<Entry>, path: string): Promise<{ count: number; resorted: boolean }> {
  const tmp = `${path}.tmp`;
  const out = createWriteStream(tmp);
  let prev: string | undefined;
  let sorted = true;
  let count = 0;
  try {
    for await (const o of listing) {
      if (prev !== undefined && compareKeys(prev, o.key) >= 0) sorted = false;
      prev = o.key;
      count++;
      if (!out.write(toLine(o))) await once(out, 'drain');
    }
  } finally {
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  }
  if (!sorted) {
    const entries: Entry[] = [];
    for await (const e of readSnapshot(tmp)) entries.push(e);
    entries.sort((a, b) => compareKeys(a.key, b.key));
    const deduped = entries.filter((e, i) => i === 0 || entries[i - 1].key !== e.key);
    await writeFile(tmp, deduped.map(toLine).join(''));
    count = deduped.length;
  }
  await rename(tmp, path);
  return { count, resorted: !sorted };
}

export async function* readSnapshot(path: string): AsyncGenerator<Entry> {
  const input = createReadStream(path, { encoding: 'utf8' });
  const lines = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const line of lines) if (line) yield fromLine(line);
  } finally {
    lines.close();
    input.destroy();
  }
}

export type Diff =
  /** In an earlier listing, gone now. `etags`: every version we may have read. */
  | { kind: 'deleted'; key: string; etags: string[] }
  /**
   * Listed now. `base`: its entry in the last complete listing; `older`: etags seen in earlier
   * listings that differ from the current one (versions whose rows may be downstream).
   */
  | { kind: 'present'; cur: Entry; base?: Entry; older: string[] };

export interface PreviousListing {
  path: string;
  /** The last complete listing (vs. one of an interrupted run). */
  base: boolean;
}

/** Merge join of the current listing with earlier ones, all in S3 key order. */
export async function* diffListings(previous: PreviousListing[], curPath: string): AsyncGenerator<Diff> {
  const prevs = previous.map((p) => ({ base: p.base, it: readSnapshot(p.path), head: undefined as Entry | undefined, done: false }));
  const advance = async (p: (typeof prevs)[number]) => {
    const r = await p.it.next();
    p.done = !!r.done;
    p.head = r.done ? undefined : r.value;
  };
  for (const p of prevs) await advance(p);
  const smallestPrev = () => {
    let min: string | undefined;
    for (const p of prevs) if (p.head && (min === undefined || compareKeys(p.head.key, min) < 0)) min = p.head.key;
    return min;
  };
  /** Pops every earlier entry for `key`. */
  const take = async (key: string) => {
    let base: Entry | undefined;
    const etags: string[] = [];
    for (const p of prevs) {
      if (p.head?.key !== key) continue;
      if (p.base) base = p.head;
      if (!etags.includes(p.head.etag)) etags.push(p.head.etag);
      await advance(p);
    }
    return { base, etags };
  };
  try {
    for await (const c of readSnapshot(curPath)) {
      for (let k = smallestPrev(); k !== undefined && compareKeys(k, c.key) < 0; k = smallestPrev()) {
        yield { kind: 'deleted', key: k, etags: (await take(k)).etags };
      }
      const { base, etags } = await take(c.key);
      yield { kind: 'present', cur: c, base, older: etags.filter((e) => e !== c.etag) };
    }
    for (let k = smallestPrev(); k !== undefined; k = smallestPrev()) yield { kind: 'deleted', key: k, etags: (await take(k)).etags };
  } finally {
    for (const p of prevs) await p.it.return(undefined);
  }
}

/** Row ids of one structured object: a count (default key) or one JSON id per line. */
export class RowsWriter {
  private out: WriteStream | undefined;
  private tmp: string;
  constructor(private path: string) {
    this.tmp = `${path}.tmp`;
  }
  async add(id: unknown) {
    this.out ??= createWriteStream(this.tmp);
    if (!this.out.write(`${JSON.stringify(id)}\n`)) await once(this.out, 'drain');
  }
  async finish(count: number, withIds: boolean) {
    if (!withIds) {
      await writeFile(this.tmp, JSON.stringify({ count }));
    } else {
      this.out ??= createWriteStream(this.tmp);
      const out = this.out;
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    }
    await rename(this.tmp, this.path);
  }
  async abort() {
    this.out?.destroy();
    await rm(this.tmp, { force: true });
  }
}

/** Count of a default-keyed object's rows, or undefined when its file is missing. */
export async function readRowCount(path: string): Promise<number | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text) as { count?: unknown };
    return typeof v.count === 'number' ? v.count : undefined;
  } catch {
    return undefined;
  }
}

export async function* readRowIds(path: string): AsyncGenerator<unknown> {
  const input = createReadStream(path, { encoding: 'utf8' });
  const lines = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const line of lines) if (line) yield JSON.parse(line);
  } finally {
    lines.close();
    input.destroy();
  }
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
