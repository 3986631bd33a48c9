import type { Command } from 'commander';
import { loadPipeline } from '../../config/load.ts';
import { resolveShard } from '../../engine/shard.ts';
import { runSync, type StreamStats, type SyncSummary } from '../../engine/sync.ts';
import { ExitCode } from '../main.ts';
import { clearProgressLine, createLogger, printJson, showProgress } from '../output.ts';
import { abortOnSignals } from './shared.ts';

export function register(program: Command) {
  program
    .command('sync')
    .description('Run the connections of a pipeline file (all, or one with --connection)')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'run only this connection')
    .option('--full-refresh', 're-read every stream from the start (unchanged text is still not re-embedded)')
    .option('--dry-run', 'read, chunk and price the embeddings; write nothing, call no embedding API')
    .option('--follow', 'keep streaming (CDC, Kafka) until SIGINT/SIGTERM')
    .option('--json', 'print one JSON summary on stdout')
    .option('--shard <I/N>', 'be worker I (0-based) of N splitting each connection (shared state store and destination)')
    .option('--shards <N>', 'like --shard, with I from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs)')
    .action(
      async (
        file: string,
        opts: {
          connection?: string;
          fullRefresh?: boolean;
          dryRun?: boolean;
          follow?: boolean;
          json?: boolean;
          shard?: string;
          shards?: string;
        },
        cmd: Command,
      ) => {
        const debug = !!cmd.optsWithGlobals().debug;
        const logger = createLogger({ json: opts.json, debug });
        const shard = resolveShard(opts);
        const pipeline = await loadPipeline(file);
        const signals = abortOnSignals();
        const live: Array<[string, Record<string, StreamStats>]> = [];
        const started = Date.now();
        const ticker = process.stderr.isTTY ? setInterval(() => showProgress(progressLine(live, started)), 500) : undefined;
        let summary: SyncSummary;
        try {
          summary = await runSync(pipeline, {
            connection: opts.connection,
            fullRefresh: opts.fullRefresh,
            dryRun: opts.dryRun,
            follow: opts.follow,
            shard,
            signal: signals.signal,
            logger,
            onConnectionStart: (name, streams) => live.push([name, streams]),
          });
        } finally {
          if (ticker) clearInterval(ticker);
          clearProgressLine();
          signals.dispose();
        }
        if (opts.json) printJson(summary);
        else printHuman(summary);
        for (const c of summary.connections) {
          if (c.error && !opts.json) {
            process.stderr.write(`error: connection ${c.name}: ${c.error.message}\n`);
            if (c.error.where) process.stderr.write(`  where: ${c.error.where}\n`);
            if (c.error.hint) process.stderr.write(`  hint: ${c.error.hint}\n`);
          }
        }
        const sig = signals.received();
        if (summary.status !== 'succeeded') throw new ExitCode(sig === 'SIGTERM' ? 143 : sig === 'SIGINT' ? 130 : 1);
      },
    );
}

function progressLine(live: Array<[string, Record<string, StreamStats>]>, started: number): string {
  const secs = Math.max(0.001, (Date.now() - started) / 1000);
  const parts: string[] = [];
  for (const [conn, streams] of live.slice(-1)) {
    for (const [name, s] of Object.entries(streams)) {
      parts.push(
        `${conn}/${name}: ${s.records_read} read (${Math.round(s.records_read / secs)}/s), ${s.chunks_written} chunks written, ${s.embedding_requests} embed req`,
      );
    }
  }
  return parts.join(' · ');
}

function printHuman(summary: SyncSummary) {
  const out: string[] = [];
  for (const c of summary.connections) {
    out.push(`${c.name}${c.shard ? ` (shard ${c.shard})` : ''}: ${c.status} in ${(c.duration_ms / 1000).toFixed(1)}s`);
    for (const [name, s] of Object.entries(c.streams)) {
      if (summary.dry_run) {
        const cost = s.estimated_cost_usd == null ? 'unknown price' : `$${s.estimated_cost_usd.toFixed(4)}`;
        out.push(
          `  ${name}: ${s.records_read} records, ${s.chunks_to_embed ?? 0} chunks to embed (${s.embedding_cache_hits} cached), ${s.tokens_to_embed ?? 0} tokens, est. ${cost}`,
        );
      } else {
        out.push(
          `  ${name}: ${s.records_read} read, ${s.records_written} written, ${s.records_deleted} deleted, ${s.records_skipped} skipped; ` +
            `chunks ${s.chunks_written} written / ${s.chunks_deleted} removed; embeddings ${s.embedding_requests} requests, ${s.embedding_tokens} tokens, ${s.embedding_cache_hits} cached`,
        );
      }
    }
  }
  process.stdout.write(out.join('\n') + '\n');
}
