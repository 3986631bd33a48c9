// Building blocks for end-to-end tests of vector destinations through the CLI: a markdown corpus
// with controlled modification times, a file-source pipeline, and a sync that can be SIGKILLed
// when the destination has seen enough writes.
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startCli, type CliResult } from './cli.ts';

/** Writes `<name>.md` documents with distinct, increasing mtimes (the file source is incremental by mtime). */
export function corpusWriter(corpus: string): (name: string, paragraphs: number, variant?: string) => void {
  let clock = Math.floor(Date.now() / 1000) - 100_000;
  mkdirSync(corpus, { recursive: true });
  return (name, paragraphs, variant = '') => {
    const body = Array.from(
      { length: paragraphs },
      (_, i) => `Paragraph ${i} of ${name}${variant} talks about topic ${(i * 7) % 11} at some length.`,
    );
    const file = join(corpus, `${name}.md`);
    writeFileSync(file, `# ${name}\n\n${body.join('\n\n')}\n`);
    clock += 10;
    utimesSync(file, clock, clock);
  };
}

/**
 * A pipeline `folder/pipeline.yaml`: the corpus as stream `docs` (small checkpoints and chunks, so a
 * kill lands mid-sync), the hash embedder, and the given destination.
 */
export function filePipeline(
  folder: string,
  corpus: string,
  destination: { type: string; config: Record<string, unknown> },
  opts: { mode?: 'append_dedup' | 'overwrite'; dimensions?: number } = {},
): string {
  const mode = opts.mode ?? 'append_dedup';
  mkdirSync(folder, { recursive: true });
  const file = join(folder, 'pipeline.yaml');
  const pipeline = {
    version: 1,
    connections: [
      {
        name: 'e2e',
        source: { type: 'file', config: { path: corpus, include: ['**/*.md'], stream: 'docs', checkpoint_every: 3 } },
        destination,
        embedding: { provider: 'hash', dimensions: opts.dimensions ?? 16 },
        processing: { chunk_size: 24, chunk_overlap: 0 },
        streams: [{ name: 'docs', sync_mode: mode === 'overwrite' ? 'full_refresh' : 'incremental', destination_sync_mode: mode }],
      },
    ],
  };
  writeFileSync(file, stringify(pipeline));
  return file;
}

/** Runs the CLI; SIGKILLs it as soon as `killWhen()` turns true (polled every 2 ms). */
export function runCliKilledWhen(args: string[], killWhen?: () => boolean): Promise<CliResult> {
  const { child, done } = startCli(args);
  const timer = killWhen
    ? setInterval(() => {
        if (killWhen()) child.kill('SIGKILL');
      }, 2)
    : undefined;
  return done.finally(() => timer && clearInterval(timer));
}
