// Where connection state lives between runs. The file store is the default; the interface lets a
// database-backed store follow. Destinations that keep state with their data (exactly-once) win
// over the store on load (the engine decides that).
import { mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SourceState } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import { dropStreams } from './merge.ts';

export interface StateStore {
  /** Where local artefacts that belong with the state (the embedding cache) may live. */
  readonly dir: string;
  load(connection: string): Promise<SourceState | undefined>;
  /** Atomically replaces the connection's state with `fn(stored)` (serialised across processes). */
  update(connection: string, fn: (stored: SourceState | undefined) => SourceState): Promise<SourceState>;
  /** Removes the state of the whole connection, or of some streams. */
  reset(connection: string, streams?: string[]): Promise<void>;
  list(): Promise<string[]>;
  /** Releases connections (database-backed stores). */
  close?(): Promise<void>;
}

const safeName = (connection: string) => encodeURIComponent(connection);

export class FileStateStore implements StateStore {
  constructor(readonly dir: string) {}

  private file(connection: string) {
    return join(this.dir, `${safeName(connection)}.json`);
  }

  async load(connection: string): Promise<SourceState | undefined> {
    let text: string;
    try {
      text = await readFile(this.file(connection), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new SluiceError(`cannot read state file ${this.file(connection)}: ${(err as Error).message}`, { kind: 'config' });
    }
    const hint = `inspect it, or start over with: sluice state reset <pipeline> --connection ${connection}`;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new SluiceError(`state file ${this.file(connection)} is not valid JSON (${(err as Error).message})`, { kind: 'config', hint });
    }
    // A wrong shape must not read as "no state" (that would silently re-read everything).
    const problem = stateFileProblem(parsed);
    if (problem)
      throw new SluiceError(`state file ${this.file(connection)} is not a sluice state file: ${problem}`, { kind: 'config', hint });
    return (parsed as { state: SourceState }).state;
  }

  async update(connection: string, fn: (stored: SourceState | undefined) => SourceState): Promise<SourceState> {
    try {
      await mkdir(this.dir, { recursive: true });
      return await this.withLock(connection, async () => {
        const next = fn(await this.load(connection));
        await atomicWrite(
          this.file(connection),
          JSON.stringify({ version: 1, connection, updated_at: new Date().toISOString(), state: next }, null, 2),
        );
        return next;
      });
    } catch (err) {
      throw unwritable(err, this.dir, connection) ?? err;
    }
  }

  async reset(connection: string, streams?: string[]): Promise<void> {
    if (!streams?.length) {
      await rm(this.file(connection), { force: true });
      return;
    }
    await this.update(connection, (stored) => dropStreams(stored, streams));
  }

  async list(): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter((f) => f.endsWith('.json')).map((f) => decodeURIComponent(f.slice(0, -5)));
    } catch {
      return [];
    }
  }

  /** A lock file created with O_EXCL; a lock older than 30 s is taken to be left by a dead process. */
  private async withLock<T>(connection: string, fn: () => Promise<T>): Promise<T> {
    const lock = `${this.file(connection)}.lock`;
    for (let attempt = 0; ; attempt++) {
      try {
        const h = await open(lock, 'wx');
        await h.writeFile(String(process.pid));
        await h.close();
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const age = await stat(lock).then(
          (s) => Date.now() - s.mtimeMs,
          () => 0,
        );
        if (age > 30_000) await rm(lock, { force: true });
        else await sleep(Math.min(50, 2 + attempt));
      }
    }
    try {
      return await fn();
    } finally {
      await rm(lock, { force: true });
    }
  }
}

const UNWRITABLE: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
};

/** A state directory that cannot be written, in words (the state file itself is left as it was). */
function unwritable(err: unknown, dir: string, connection: string): SluiceError | undefined {
  const code = (err as NodeJS.ErrnoException).code;
  if (!code || !(code in UNWRITABLE)) return undefined;
  return new SluiceError(
    `cannot save the state of connection ${connection}: the state directory ${dir} is not writable (${UNWRITABLE[code]}, ${code})`,
    {
      kind: 'config',
      hint: 'make the directory writable for the user running sluice (or set state.path), then run the sync again: it resumes from the last saved state',
      cause: err,
    },
  );
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** What is wrong with the shape of a parsed state file ({ version, connection, state: { streams, shared? } }), if anything. */
export function stateFileProblem(parsed: unknown): string | undefined {
  const kind = (v: unknown) => (Array.isArray(v) ? 'a list' : v === null ? 'null' : typeof v);
  if (!isObject(parsed)) return `expected an object with "state", found ${kind(parsed)}`;
  if (!isObject(parsed.state)) return `"state" should be an object, found ${kind(parsed.state)}`;
  if (!isObject(parsed.state.streams)) return `"state.streams" should be an object, found ${kind(parsed.state.streams)}`;
  for (const [name, value] of Object.entries(parsed.state.streams))
    if (!isObject(value)) return `"state.streams.${name}" should be an object, found ${kind(value)}`;
  return undefined;
}

/** Write to a temp file, fsync it, rename over the target, fsync the directory. */
export async function atomicWrite(file: string, content: string | Buffer): Promise<void> {
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  const h = await open(tmp, 'w');
  try {
    await h.writeFile(content);
    await h.sync();
  } finally {
    await h.close();
  }
  await rename(tmp, file);
  const dir = await open(join(file, '..'), 'r').catch(() => undefined);
  if (dir) {
    await dir.sync().catch(() => undefined);
    await dir.close();
  }
}
