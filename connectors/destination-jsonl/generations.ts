// `sluice reindex` on jsonl: every stream's new generation is staged beside the file, and at the
// end one new file replaces the old one by a single rename (readers see the old file or the new
// one). With --keep-previous the old file is kept as `<path>.previous`; rollback swaps them back.
import { createReadStream, createWriteStream } from 'node:fs';
import { link, open, rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { SluiceError } from '../../src/protocol/errors.ts';

export const previousFile = (file: string) => `${file}.previous`;

const exists = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

async function* lines(file: string): AsyncGenerator<string> {
  if (!(await exists(file))) return;
  for await (const raw of createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })) if (raw) yield raw;
}

/**
 * Writes the new file (lines of streams this run did not rebuild, then each staged generation),
 * keeps or drops the old one, and renames the new one into place.
 */
export async function switchFile(file: string, staged: Map<string, string>, keepPrevious: boolean): Promise<void> {
  const tmp = `${file}.${process.pid}.reindex.tmp`;
  const out = createWriteStream(tmp);
  const put = async (text: string) => {
    if (!out.write(text)) await once(out, 'drain');
  };
  for await (const raw of lines(file)) if (!staged.has((JSON.parse(raw) as { stream: string }).stream)) await put(raw + '\n');
  for (const path of staged.values()) for await (const raw of lines(path)) await put(raw + '\n');
  out.end();
  await once(out, 'finish');
  const h = await open(tmp, 'r+');
  await h.sync();
  await h.close();
  await rm(previousFile(file), { force: true });
  // A hard link keeps the old file as it is while the rename below replaces the name atomically.
  if (keepPrevious && (await exists(file))) await link(file, previousFile(file));
  await rename(tmp, file);
  for (const path of staged.values()) await rm(path, { force: true });
}

export async function hasPreviousFile(file: string): Promise<boolean> {
  return exists(previousFile(file));
}

/** Swaps the file with the kept previous one (the current one becomes the previous). */
export async function rollbackFile(file: string): Promise<void> {
  const previous = previousFile(file);
  if (!(await exists(previous)))
    throw new SluiceError(`no previous generation ${previous} to roll back to; nothing was changed`, {
      kind: 'config',
      hint: 'a previous generation is kept only by sluice reindex --keep-previous',
    });
  const swap = `${file}.swap`;
  await rm(swap, { force: true });
  const hadFile = await exists(file);
  if (hadFile) await link(file, swap);
  await rename(previous, file);
  if (hadFile) await rename(swap, previous);
}
