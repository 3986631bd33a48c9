import type { Command } from 'commander';
import { loadPipeline } from '../../config/load.ts';
import type { IndexIdentity } from '../../protocol/connector.ts';
import { rollbackReindex, runReindex } from '../../engine/reindex.ts';
import type { SyncSummary } from '../../engine/sync.ts';
import { ExitCode } from '../main.ts';
import { createLogger, humanLogs, printJson } from '../output.ts';
import { terminalProgress } from '../progress.ts';
import { abortOnSignals } from './shared.ts';
import { parseUsd, printHuman, syncExitCode } from './sync.ts';

export function register(program: Command) {
  program
    .command('reindex')
    .description(
      'Rebuild the index with the current embedding and processing settings while the old one keeps serving; switch every stream at once at the end',
    )
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('--keep-previous', 'keep the replaced index so --rollback can switch back to it')
    .option('--rollback', 'switch back to the index kept by the last reindex --keep-previous (and its state)')
    .option(
      '--max-cost <usd>',
      "stop before an embedding request would take a connection's spend over USD (the old index keeps serving)",
      parseUsd,
    )
    .option('--json', 'print one JSON summary on stdout')
    .action(
      async (
        file: string,
        opts: { connection?: string; keepPrevious?: boolean; rollback?: boolean; maxCost?: number; json?: boolean },
        cmd: Command,
      ) => {
        const debug = !!cmd.optsWithGlobals().debug;
        const logger = createLogger({ json: opts.json, debug });
        const pipeline = await loadPipeline(file);
        const signals = abortOnSignals();
        if (opts.rollback) {
          try {
            const results = await rollbackReindex(pipeline, { connection: opts.connection, logger, signal: signals.signal });
            if (opts.json) printJson({ status: 'succeeded', rollback: results });
            else
              for (const r of results)
                process.stdout.write(
                  `${r.connection}: rolled back to ${label(r.index.to)} (was ${label(r.index.from)}); streams ${r.streams.join(', ')}\n`,
                );
          } finally {
            signals.dispose();
          }
          return;
        }
        const progress = terminalProgress(pipeline);
        let summary: SyncSummary;
        try {
          summary = await runReindex(pipeline, {
            connection: opts.connection,
            keepPrevious: opts.keepPrevious,
            maxCostUsd: opts.maxCost,
            signal: signals.signal,
            logger,
            onConnectionStart: (name, streams) => progress.onConnectionStart(name, streams),
          });
        } finally {
          progress.stop();
          signals.dispose();
        }
        if (opts.json) printJson({ ...summary, reindex: true });
        else {
          printHuman(summary, progress.localConnections());
          for (const c of summary.connections)
            process.stdout.write(
              c.status === 'succeeded'
                ? `${c.name}: switched to the new index${opts.keepPrevious ? ' (the previous one is kept for --rollback)' : ''}\n`
                : `${c.name}: not switched; the previous index keeps serving\n`,
            );
        }
        for (const c of summary.connections) {
          if (c.error && !opts.json && !humanLogs(opts)) {
            process.stderr.write(`error: connection ${c.name}: ${c.error.message}\n`);
            if (c.error.where) process.stderr.write(`  where: ${c.error.where}\n`);
            if (c.error.hint) process.stderr.write(`  hint: ${c.error.hint}\n`);
          }
        }
        const code = syncExitCode(summary, { follow: false, signal: signals.received() });
        if (code) throw new ExitCode(code);
      },
    );
}

function label(i: IndexIdentity | null): string {
  if (!i) return 'an index of unknown settings';
  const embedder = i.provider
    ? `${i.provider} ${i.model ?? ''}`.trim() + (i.dimensions ? ` (${i.dimensions} dimensions)` : '')
    : 'no embedder';
  return `${embedder}, processing ${i.processing_hash.slice(0, 12)}`;
}
