// What the file source remembers between runs: the listing of the last complete run, on disk in
// the connection's workDir (one `[path, mtime_ms]` JSON line per file, in path order), so the
// state that travels with every checkpoint stays a few bytes however many files there are.
//
// A run writes the listing it starts from as a new generation, but names it in its state only at
// the end; until then its checkpoints keep naming the previous generation, so a crash mid-run
// diffs against the same base again and nothing is missed.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';

export type ListedFile = readonly [rel: string, mtimeMs: number];

/** A file listed now; `changed` is set by diffListing. */
export interface ListingEntry {
  rel: string;
  mtimeMs: number;
  changed?: boolean;
}

/** Path order used for listings and the merge join: plain UTF-16 order, the same on both sides. */
export const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

const GEN_FILE = /^listing-(\d+)\.jsonl$/;

export class ListingDir {
  readonly dir: string;

  constructor(workDir: string, stream: string) {
    this.dir = join(workDir, 'file', encodeURIComponent(stream));
  }

  path(gen: number): string {
    return join(this.dir, `listing-${gen}.jsonl`);
  }

  /**
   * Removes every listing but `keep` (leftovers of runs that never completed) and returns the
   * generation this run writes: always the one after `keep`, so the numbering does not depend on
   * how many runs crashed on the way.
   */
  async prepare(keep: number | undefined): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    for (const name of await readdir(this.dir)) {
      const m = GEN_FILE.exec(name);
      if ((m && Number(m[1]) !== keep) || (!m && name.endsWith('.tmp'))) await rm(join(this.dir, name), { force: true });
    }
    return (keep ?? 0) + 1;
  }

  /** Writes a listing (already in path order) atomically: a crash leaves the old file set intact. */
  async write(gen: number, files: Iterable<ListingEntry>): Promise<void> {
    const tmp = `${this.path(gen)}.tmp`;
    const out = createWriteStream(tmp);
    const failed = once(out, 'error').then(([err]) => Promise.reject(err as Error));
    failed.catch(() => undefined);
    let batch = '';
    for (const f of files) {
      batch += `${JSON.stringify([f.rel, f.mtimeMs])}\n`;
      if (batch.length >= 64 * 1024) {
        if (!out.write(batch)) await Promise.race([once(out, 'drain'), failed]);
        batch = '';
      }
    }
    out.end(batch);
    await Promise.race([once(out, 'finish'), failed]);
    await rename(tmp, this.path(gen));
  }

  async exists(gen: number): Promise<boolean> {
    return stat(this.path(gen)).then(
      () => true,
      () => false,
    );
  }

  /**
   * The listing of generation `gen`, in path order, in blocks of entries (read 1 MB at a time,
   * one JSON.parse per block: listings can be long, and per-line parsing dominated a re-run).
   */
  async *read(gen: number): AsyncGenerator<ListedFile[]> {
    let rest = '';
    for await (const block of createReadStream(this.path(gen), { encoding: 'utf8', highWaterMark: 1024 * 1024 })) {
      const text = rest + (block as string);
      const end = text.lastIndexOf('\n');
      rest = text.slice(end + 1);
      if (end > 0) yield parseLines(text.slice(0, end));
    }
    if (rest) yield parseLines(rest);
  }
}

/** JSON lines (one array each) → the arrays, in one parse. */
function parseLines(text: string): ListedFile[] {
  const body = text.split('\n').filter(Boolean).join(',');
  return body ? (JSON.parse(`[${body}]`) as ListedFile[]) : [];
}

/**
 * Merge join of the previous listing with the current one (both in path order): yields each path
 * that is only in the previous listing, and sets `changed` on every current entry — true when the
 * file is new or has another mtime than before.
 */
export async function* diffListing(
  previous: AsyncIterable<readonly ListedFile[]> | Iterable<readonly ListedFile[]>,
  current: readonly ListingEntry[],
): AsyncGenerator<string> {
  let i = 0;
  for await (const block of previous) {
    for (const [rel, mtimeMs] of block) {
      while (i < current.length && byPath(current[i].rel, rel) < 0) current[i++].changed = true;
      if (i < current.length && current[i].rel === rel) {
        current[i].changed = current[i].mtimeMs !== mtimeMs;
        i++;
      } else yield rel;
    }
  }
  while (i < current.length) current[i++].changed = true;
}
