import type { Command } from 'commander';
import { loadPipeline } from '../../config/load.ts';
import { runSync, type SyncSummary } from '../../engine/sync.ts';
import { ExitCode } from '../main.ts';
import { clearProgressLine, createLogger, humanLogs, printJson, showProgress } from '../output.ts';
import { ProgressView, type LiveConnection } from '../progress.ts';
import { abortOnSignals } from './shared.ts';

export function register(program: Command) {
  program
    .command('sync')
    .description('Run the connections of a pipeline file (all, or one with --connection)')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'run only this connection')
    .option('--full-refresh', 're-read every stream from the start (unchanged text is still not re-embedded)')
    .option('--dry-run', 'read, chunk and price the embeddings; write nothing, call no embedding API')
    .option('--follow', 'keep streaming (CDC, Kafka) until SIGINT/SIGTERM (a clean stop exits 0)')
    .option('--json', 'print one JSON summary on stdout')
    .action(
      async (
        file: string,
        opts: { connection?: string; fullRefresh?: boolean; dryRun?: boolean; follow?: boolean; json?: boolean },
        cmd: Command,
      ) => {
        const debug = !!cmd.optsWithGlobals().debug;
        const logger = createLogger({ json: opts.json, debug });
        const pipeline = await loadPipeline(file);
        const signals = abortOnSignals();
        const live: LiveConnection[] = [];
        const view = new ProgressView();
        const tick = () => {
          view.sample(live.slice(-1), Date.now());
          showProgress(view.render(live.slice(-1), process.stderr.columns || 80));
        };
        const ticker = process.stderr.isTTY ? setInterval(tick, 500) : undefined;
        let summary: SyncSummary;
        try {
          summary = await runSync(pipeline, {
            connection: opts.connection,
            fullRefresh: opts.fullRefresh,
            dryRun: opts.dryRun,
            follow: opts.follow,
            signal: signals.signal,
            logger,
            onConnectionStart: (name, streams) =>
              live.push({
                name,
                streams,
                localEmbedder: pipeline.connections.find((c) => c.config.name === name)?.config.embedding?.provider === 'hash',
              }),
          });
        } finally {
          if (ticker) clearInterval(ticker);
          clearProgressLine();
          signals.dispose();
        }
        if (opts.json) printJson(summary);
        else printHuman(summary, new Set(live.filter((c) => c.localEmbedder).map((c) => c.name)));
        // On a terminal the failure was already shown as a log line (with where and hint): once is enough.
        for (const c of summary.connections) {
          if (c.error && !opts.json && !humanLogs(opts)) {
            process.stderr.write(`error: connection ${c.name}: ${c.error.message}\n`);
            if (c.error.where) process.stderr.write(`  where: ${c.error.where}\n`);
            if (c.error.hint) process.stderr.write(`  hint: ${c.error.hint}\n`);
          }
        }
        const code = syncExitCode(summary, { follow: !!opts.follow, signal: signals.received() });
        if (code) throw new ExitCode(code);
      },
    );
}

/**
 * 0 success · 1 a connection failed (including a flush that failed while stopping) · 130/143 a
 * one-shot run cut short by SIGINT/SIGTERM. `--follow` never ends by itself, so a signal is how it
 * is meant to stop: after a clean shutdown it is a success (a supervisor must not see a crash).
 */
export function syncExitCode(summary: SyncSummary, run: { follow: boolean; signal?: NodeJS.Signals }): number {
  if (summary.status === 'succeeded') return 0;
  if (summary.status === 'failed' || !run.signal) return 1;
  if (run.follow) return 0;
  return run.signal === 'SIGTERM' ? 143 : 130;
}

function printHuman(summary: SyncSummary, localEmbedders: Set<string>) {
  const out: string[] = [];
  for (const c of summary.connections) {
    out.push(`${c.name}: ${c.status} in ${(c.duration_ms / 1000).toFixed(1)}s`);
    for (const [name, s] of Object.entries(c.streams)) {
      if (summary.dry_run) {
        const cost = s.estimated_cost_usd == null ? 'unknown price' : `$${s.estimated_cost_usd.toFixed(4)}`;
        out.push(
          `  ${name}: ${s.records_read} records, ${s.chunks_to_write ?? 0} chunks (${s.chunks_to_embed ?? 0} to embed, ${s.embedding_cache_hits} cached), ${s.tokens_to_embed ?? 0} tokens, est. ${cost}`,
        );
      } else {
        out.push(
          `  ${name}: ${s.records_read} read, ${s.records_written} written, ${s.records_deleted} deleted, ${s.records_skipped} skipped; ` +
            `chunks ${s.chunks_written} written / ${s.chunks_deleted} removed; ` +
            // A local embedder (hash) sends no requests and keeps no cache.
            (localEmbedders.has(c.name)
              ? `embedded locally (${s.embedding_tokens} tokens)`
              : `embeddings ${s.embedding_requests} requests, ${s.embedding_tokens} tokens, ${s.embedding_cache_hits} cached`),
        );
      }
    }
  }
  process.stdout.write(out.join('\n') + '\n');
}
