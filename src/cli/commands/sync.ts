import { InvalidArgumentError, type Command } from 'commander';
import { SluiceError } from '../../protocol/errors.ts';
import { loadPipeline } from '../../config/load.ts';
import { resolveShard } from '../../engine/shard.ts';
import { runSync, type DryRunPlan, type SyncSummary } from '../../engine/sync.ts';
import { formatUsd } from '../../engine/cost-guard.ts';
import { ExitCode } from '../main.ts';
import { createLogger, humanLogs, printJson } from '../output.ts';
import { terminalProgress } from '../progress.ts';
import { abortOnSignals } from './shared.ts';
import { setTimeout as sleep } from 'node:timers/promises';

export function register(program: Command) {
  program
    .command('sync')
    .description('Run the connections of a pipeline file (all, or one with --connection)')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'run only this connection')
    .option('--full-refresh', 're-read every stream from the start (unchanged text is still not re-embedded)')
    .option('--dry-run', 'read, chunk and price the embeddings; write nothing, call no embedding API')
    .option(
      '--max-cost <usd>',
      "stop before an embedding request would take a connection's spend in this run over USD (overrides embedding.max_cost_usd)",
      parseUsd,
    )
    .option('--follow', 'keep streaming (CDC, Kafka) until SIGINT/SIGTERM (a clean stop exits 0)')
    .option('--json', 'print one JSON summary on stdout')
    .option('--shard <I/N>', 'be worker I (0-based) of N splitting each connection (shared state store and destination)')
    .option('--shards <N>', 'like --shard, with I from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs)')
    .option('--metrics-port <port>', 'serve /metrics, /healthz and /readyz on this port while the sync runs', parsePort)
    .option('--metrics-host <address>', 'address the metrics port binds to', '127.0.0.1')
    .option('--stall-seconds <n>', '/readyz turns 503 when nothing was read or committed for this long (default: never)', parseSeconds)
    .option('--pushgateway <url>', 'push the final metrics to this Prometheus Pushgateway (batch runs)')
    .option('--metrics-textfile <path>', "write the final metrics to this file (node-exporter's textfile collector)")
    .action(
      async (
        file: string,
        opts: {
          connection?: string;
          fullRefresh?: boolean;
          dryRun?: boolean;
          maxCost?: number;
          follow?: boolean;
          json?: boolean;
          shard?: string;
          shards?: string;
          metricsPort?: number;
          metricsHost: string;
          stallSeconds?: number;
          pushgateway?: string;
          metricsTextfile?: string;
        },
        cmd: Command,
      ) => {
        const debug = !!cmd.optsWithGlobals().debug;
        const shard = resolveShard(opts);
        const wantMetrics = opts.metricsPort !== undefined || !!opts.pushgateway || !!opts.metricsTextfile;
        if (opts.pushgateway) checkUrl(opts.pushgateway);
        // prom-client is loaded only when metrics are asked for: a plain sync starts without it.
        const { SyncMetrics } = wantMetrics ? await import('../../metrics/index.ts') : { SyncMetrics: undefined };
        const { serveMetrics, pushMetrics, writeMetricsTextfile } = wantMetrics
          ? await import('../../metrics/serve.ts')
          : { serveMetrics: undefined, pushMetrics: undefined, writeMetricsTextfile: undefined };
        const metrics = SyncMetrics
          ? new SyncMetrics(file, { processMetrics: opts.metricsPort !== undefined, stallSeconds: opts.stallSeconds })
          : undefined;
        const baseLogger = createLogger({ json: opts.json, debug });
        const logger = metrics ? metrics.tap(baseLogger) : baseLogger;
        const pipeline = await loadPipeline(file);
        const server =
          metrics && serveMetrics && opts.metricsPort !== undefined
            ? await serveMetrics(metrics, opts.metricsPort, opts.metricsHost)
            : undefined;
        if (server) logger.info({ url: server.url }, `serving /metrics, /healthz and /readyz on ${server.url}`);
        const signals = abortOnSignals();
        const progress = terminalProgress(pipeline);
        let summary: SyncSummary;
        try {
          for (let restarts = 0; ; restarts++) {
            summary = await runSync(pipeline, {
              connection: opts.connection,
              fullRefresh: opts.fullRefresh,
              dryRun: opts.dryRun,
              maxCostUsd: opts.maxCost,
              follow: opts.follow,
              shard,
              signal: signals.signal,
              logger,
              onConnectionStart: (name, streams) => progress.onConnectionStart(name, streams),
              observer: metrics?.observer,
            });
            // A --follow sync outlives a source or destination that goes away for a while (a
            // database restart, a failover): it resumes from the last committed state. Errors
            // that another try cannot fix (configuration, permissions) still end it.
            const failed = summary.connections.filter((c) => c.status === 'failed');
            if (!opts.follow || signals.signal.aborted || !failed.length || !failed.every((c) => c.error?.transient)) break;
            const waitMs = Math.min(30_000, 1_000 * 2 ** Math.min(restarts, 5));
            metrics?.notReady(failed.map((c) => `connection ${c.name}: ${c.error?.message}`).join('; '));
            for (const c of failed)
              logger.warn(
                { connection: c.name, err: c.error?.message, waitMs },
                `connection ${c.name} failed (${c.error?.message}); restarting in ${Math.round(waitMs / 1000)}s from the last committed state`,
              );
            await sleep(waitMs, undefined, { signal: signals.signal }).catch(() => undefined);
            if (signals.signal.aborted) break;
          }
        } finally {
          progress.stop();
          signals.dispose();
          await server?.close();
        }
        // Batch runs end before any scrape: their metrics are pushed or written once, at the end.
        if (metrics && pushMetrics && opts.pushgateway)
          await pushMetrics(metrics, opts.pushgateway).catch((err) => logger.error({ err: err.message, hint: err.hint }, err.message));
        if (metrics && writeMetricsTextfile && opts.metricsTextfile)
          await writeMetricsTextfile(metrics, opts.metricsTextfile).catch((err) =>
            logger.error({ err: err.message, hint: err.hint }, err.message),
          );
        if (opts.json) printJson(summary);
        else printHuman(summary, progress.localConnections());
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
  // Refused before any write because the embedder or processing settings changed (sluice reindex).
  if (summary.connections.some((c) => c.error?.refused === 'index_changed')) return 2;
  if (summary.status === 'failed' || !run.signal) return 1;
  if (run.follow) return 0;
  return run.signal === 'SIGTERM' ? 143 : 130;
}

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new InvalidArgumentError(`expected a port number 0-65535 (0 picks a free one), got "${value}"`);
  return port;
}

export function parseUsd(value: string): number {
  const n = Number(value.replace(/^\$/, ''));
  if (!value.trim() || !Number.isFinite(n) || n < 0)
    throw new InvalidArgumentError(`expected an amount in USD, e.g. 5 or 0.50, got "${value}"`);
  return n;
}

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a number of seconds above 0, got "${value}"`);
  return n;
}

function checkUrl(value: string): void {
  let ok = false;
  try {
    ok = /^https?:$/.test(new URL(value).protocol);
  } catch {}
  if (!ok)
    throw new SluiceError(`--pushgateway expects an http(s) URL, got "${value}"`, {
      kind: 'config',
      hint: 'e.g. --pushgateway http://prometheus-pushgateway:9091',
    });
}

export function printHuman(summary: SyncSummary, localEmbedders: Set<string>) {
  const out: string[] = [];
  for (const c of summary.connections) {
    out.push(`${c.name}${c.shard ? ` (shard ${c.shard})` : ''}: ${c.status} in ${(c.duration_ms / 1000).toFixed(1)}s`);
    for (const [name, s] of Object.entries(c.streams)) {
      if (summary.dry_run) {
        const cost = s.estimated_cost_usd == null ? 'unknown price' : formatUsd(s.estimated_cost_usd);
        out.push(
          `  ${name}: ${s.records_read} records, ${s.chunks_to_write ?? 0} chunks (${s.chunks_to_embed ?? 0} to embed, ${s.embedding_cache_hits} cached), ${s.tokens_to_embed ?? 0} tokens, est. ${cost}`,
        );
        out.push(
          `    documents: ${s.documents_to_write ?? 0} to write (${s.documents_to_embed ?? 0} with text to embed, ${s.documents_cached ?? 0} with all chunks cached), ${s.documents_to_delete ?? 0} to delete` +
            (s.documents_unchanged !== undefined ? `, ${s.documents_unchanged} unchanged` : ''),
        );
      } else {
        out.push(
          `  ${name}: ${s.records_read} read, ${s.records_written} written, ${s.records_deleted} deleted, ${s.records_skipped} skipped` +
            // Only with a destination that keeps fingerprints (docs/fingerprints.md).
            (s.records_unchanged !== undefined
              ? `, ${s.records_unchanged} unchanged, ${s.records_metadata_updated ?? 0} metadata-only`
              : '') +
            '; ' +
            `chunks ${s.chunks_written} written / ${s.chunks_deleted} removed; ` +
            // A local embedder (hash) sends no requests and keeps no cache.
            (localEmbedders.has(c.name)
              ? `embedded locally (${s.embedding_tokens} tokens)`
              : `embeddings ${s.embedding_requests} requests, ${s.embedding_tokens} tokens, ${s.embedding_cache_hits} cached`),
        );
      }
    }
    if (c.plan) out.push(...planLines(c.plan));
    if (c.cost)
      out.push(
        `  cost: ${formatUsd(c.cost.spent_usd)} of ${formatUsd(c.cost.limit_usd)} allowed${c.cost.stopped ? ' (stopped at the limit)' : ''}`,
      );
  }
  process.stdout.write(out.join('\n') + '\n');
}

/** The dry run's connection totals: what to write and delete, tokens, cost and time under the rate limits. */
function planLines(plan: DryRunPlan): string[] {
  const cost =
    plan.estimated_cost_usd == null ? 'unknown price (set embedding.price_per_million_tokens)' : formatUsd(plan.estimated_cost_usd);
  const time = !plan.requests_to_embed
    ? 'none (no requests)'
    : plan.estimated_seconds == null
      ? 'not estimated (no rate limit set: it depends on the provider)'
      : `~${formatDuration(plan.estimated_seconds)} under the configured rate limits`;
  const lines = [
    `  plan: ${plan.documents_to_write} documents to write, ${plan.documents_to_delete} to delete` +
      (plan.documents_unchanged !== undefined ? `, ${plan.documents_unchanged} unchanged` : '') +
      `; ${plan.chunks_to_write} chunks, ${plan.chunks_to_embed} to embed ` +
      `(${plan.tokens_to_embed} tokens, ~${plan.requests_to_embed} requests); est. cost ${cost}; embedding time ${time}`,
  ];
  if (plan.max_cost_usd !== undefined && plan.within_max_cost === false)
    lines.push(
      `  note: over the cost limit of ${formatUsd(plan.max_cost_usd)}: a real run would stop before the request that goes over it`,
    );
  return lines;
}

function formatDuration(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
