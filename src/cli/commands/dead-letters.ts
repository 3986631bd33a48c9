import type { Command } from 'commander';
import { loadPipeline } from '../../config/load.ts';
import { openDeadLetterStore } from '../../engine/dead-letters.ts';
import { retryDeadLetters } from '../../engine/retry-dead-letters.ts';
import { ExitCode } from '../main.ts';
import { createLogger, printJson } from '../output.ts';
import { abortOnSignals, pickConnection } from './shared.ts';

export function register(program: Command) {
  const dl = program
    .command('dead-letters')
    .description('List, retry or purge the records a sync could not process (errors.tolerance: all)');
  dl.command('list')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('--json', 'every letter in full (payload included), as JSON')
    .action(async (file: string, opts: { connection?: string; json?: boolean }) => {
      const pipeline = await loadPipeline(file);
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      const out: Record<string, unknown[]> = {};
      for (const c of conns) {
        const store = openDeadLetterStore(c.config.errors, pipeline.stateDir, pipeline.baseDir);
        try {
          const letters = await store.list(c.config.name);
          out[c.config.name] = letters;
          if (!opts.json) {
            process.stdout.write(`${c.config.name}: ${letters.length} dead letter(s)\n`);
            for (const l of letters)
              process.stdout.write(
                `  ${l.id}  ${l.at}  stream ${l.stream}  key ${l.key ?? '-'}  stage ${l.stage}  attempts ${l.attempts}${l.position ? `  at ${l.position}` : ''}\n    ${l.error}\n`,
              );
          }
        } finally {
          await store.close();
        }
      }
      if (opts.json) printJson(out);
    });
  dl.command('retry')
    .description('Process the dead letters again; those that succeed are removed, the others stay with their new error')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, opts: { connection?: string; json?: boolean }) => {
      const pipeline = await loadPipeline(file);
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      const { signal, dispose } = abortOnSignals();
      const logger = createLogger({});
      const results = [];
      try {
        for (const c of conns) results.push(await retryDeadLetters(pipeline, c, { logger, signal }));
      } finally {
        dispose();
      }
      if (opts.json) printJson(results);
      else
        for (const r of results)
          process.stdout.write(
            `${r.connection}: ${r.retried} retried, ${r.succeeded} succeeded, ${r.failed.length} failed again${r.skipped.length ? `, ${r.skipped.length} not retried (stage source: fix the data at the source, then purge)` : ''}\n`,
          );
      if (results.some((r) => r.failed.length)) throw new ExitCode(1);
    });
  dl.command('purge')
    .description('Delete dead letters (all of a connection, or the given ids)')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('--id <id...>', 'only these letters')
    .action(async (file: string, opts: { connection?: string; id?: string[] }) => {
      const pipeline = await loadPipeline(file);
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      for (const c of conns) {
        const store = openDeadLetterStore(c.config.errors, pipeline.stateDir, pipeline.baseDir);
        try {
          const ids = opts.id ?? (await store.list(c.config.name)).map((l) => l.id);
          await store.remove(c.config.name, ids);
          process.stdout.write(`${c.config.name}: purged ${ids.length} dead letter(s)\n`);
        } finally {
          await store.close();
        }
      }
    });
}
