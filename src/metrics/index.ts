// Prometheus metrics and health of a sync (prom-client). Everything is fed from what the engine
// already keeps: the live per-stream counters it hands out when a connection starts (read at
// scrape time), its SyncObserver hooks, and the structured log lines of sources and embedders
// (slot lag, retries). The engine itself knows nothing of Prometheus.
import { basename, extname } from 'node:path';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ConnectionSummary, StreamStats, SyncObserver } from '../engine/sync.ts';
import { estimateCostUsd } from '../embedding/index.ts';
import type { Embedder } from '../embedding/types.ts';
import type { Logger } from '../protocol/connector.ts';
import type { SluiceError } from '../protocol/errors.ts';

/** The counters of one run of one connection (a `--follow` sync that restarts has several). */
interface Run {
  summary: ConnectionSummary;
  pricePerToken?: number;
  finished: boolean;
}

type Labels = Record<string, string>;
/** What a scraped counter reads: the runs' summaries, and embedding batches that failed for good. */
interface Sources {
  runs: Run[];
  failedEmbeddingBatches: Map<string, number>;
}
/**
 * Counters computed at scrape time from what the engine keeps (no `inc` on the hot path): each
 * yields its samples, labelled without `pipeline` (added for all).
 */
interface ScrapedCounter {
  name: string;
  help: string;
  labelNames: string[];
  samples(from: Sources): Iterable<[Labels, number]>;
}

const STREAM_COUNTERS: Array<[name: string, help: string, field: keyof StreamStats]> = [
  ['sluice_records_read_total', 'Records read from the source.', 'records_read'],
  ['sluice_records_written_total', 'Records (documents) written to the destination.', 'records_written'],
  ['sluice_records_deleted_total', 'Deletions read from the source (CDC deletes, tombstones, vanished files).', 'records_deleted'],
  ['sluice_records_skipped_total', 'Records with no text to embed.', 'records_skipped'],
  [
    'sluice_records_unchanged_total',
    'Documents skipped because their fingerprint did not change (docs/fingerprints.md).',
    'records_unchanged',
  ],
  [
    'sluice_records_metadata_updated_total',
    'Documents whose metadata only changed, updated without embedding.',
    'records_metadata_updated',
  ],
  ['sluice_chunks_written_total', 'Chunks written to the destination.', 'chunks_written'],
  ['sluice_chunks_deleted_total', 'Chunks removed from the destination.', 'chunks_deleted'],
  ['sluice_embedding_tokens_total', 'Tokens sent to the embedding provider.', 'embedding_tokens'],
  ['sluice_embedding_cache_hits_total', 'Chunks whose vector came from the embedding cache (not paid for again).', 'embedding_cache_hits'],
];

/** Every stream's summary of every run, with its connection name. */
function* streamsOf(runs: Run[]): Iterable<[connection: string, stream: string, stats: StreamStats, run: Run]> {
  for (const run of runs) for (const [stream, s] of Object.entries(run.summary.streams)) yield [run.summary.name, stream, s, run];
}

const SCRAPED_COUNTERS: ScrapedCounter[] = [
  ...STREAM_COUNTERS.map(([name, help, field]): ScrapedCounter => ({
    name,
    help,
    labelNames: ['connection', 'stream'],
    samples: ({ runs }) => sumByStream(runs, (s) => Number(s[field] ?? 0)),
  })),
  {
    name: 'sluice_embedding_requests_total',
    help: 'Embedding API requests (outcome="success", as in the --json summary, retried attempts included) and embedding batches that failed for good (outcome="failure").',
    labelNames: ['connection', 'stream', 'outcome'],
    *samples({ runs, failedEmbeddingBatches }) {
      for (const [key, value] of sumByStream(runs, (s) => s.embedding_requests)) yield [{ ...key, outcome: 'success' }, value];
      for (const [k, value] of failedEmbeddingBatches) {
        const [connection, stream] = JSON.parse(k) as [string, string];
        yield [{ connection, stream, outcome: 'failure' }, value];
      }
    },
  },
  {
    name: 'sluice_embedding_estimated_cost_usd_total',
    help: "Estimated embedding cost in US dollars (tokens times the model's price; only models with a known price).",
    labelNames: ['connection', 'stream'],
    *samples({ runs }) {
      for (const [connection, stream, s, run] of streamsOf(runs))
        if (run.pricePerToken !== undefined) yield [{ connection, stream }, s.embedding_tokens * run.pricePerToken];
    },
  },
  {
    name: 'sluice_dead_letters_total',
    help: 'Records stored as dead letters (errors.tolerance: all), by the stage that failed them: source (unparseable), key, text, embed, destination (refused).',
    labelNames: ['connection', 'stream', 'stage'],
    *samples({ runs }) {
      for (const [connection, stream, s] of streamsOf(runs))
        for (const [stage, n] of Object.entries(s.failed_by_stage ?? {})) if (n) yield [{ connection, stream, stage }, n];
    },
  },
  {
    name: 'sluice_state_commits_total',
    help: 'States (checkpoints) saved after the destination committed everything before them.',
    labelNames: ['connection'],
    samples({ runs }) {
      const byConn = new Map<string, number>();
      for (const r of runs) byConn.set(r.summary.name, (byConn.get(r.summary.name) ?? 0) + r.summary.states_committed);
      return [...byConn].map(([connection, n]): [Labels, number] => [{ connection }, n]);
    },
  },
];

const CONNECTION_LABELS = ['pipeline', 'connection'] as const;
/** Metrics the observer hooks and the log tap set as things happen (field name → definition). */
const PUSHED = {
  retries: {
    name: 'sluice_retries_total',
    help: 'Requests retried after a transient failure (embedding and destination HTTP calls).',
    labelNames: CONNECTION_LABELS,
  },
  errors: {
    name: 'sluice_errors_total',
    help: 'Connection runs that failed, by error kind (config, source, destination, embedding, internal…).',
    labelNames: [...CONNECTION_LABELS, 'kind'] as const,
  },
  syncDuration: {
    name: 'sluice_sync_duration_seconds',
    help: 'Duration of a connection run, by final status.',
    labelNames: [...CONNECTION_LABELS, 'status'] as const,
    buckets: [1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200],
  },
  batchDuration: {
    name: 'sluice_batch_duration_seconds',
    help: 'stage="embed": one embedding batch (cache lookup excluded); stage="commit": a checkpoint from reaching the destination to its commit.',
    labelNames: [...CONNECTION_LABELS, 'stage'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  },
  lastSuccess: {
    name: 'sluice_last_success_timestamp_seconds',
    help: 'Unix time the connection last finished a run successfully.',
    labelNames: CONNECTION_LABELS,
  },
  lastCommit: {
    name: 'sluice_last_commit_timestamp_seconds',
    help: 'Unix time the destination last committed a checkpoint (advances during a --follow run).',
    labelNames: CONNECTION_LABELS,
  },
  lag: {
    name: 'sluice_replication_lag_seconds',
    help: "At the last commit: seconds from the newest record it covers being emitted (PostgreSQL CDC: its source commit) to the destination's commit; 0 when caught up.",
    labelNames: CONNECTION_LABELS,
  },
  slotBytes: {
    name: 'sluice_replication_slot_wal_bytes',
    help: 'PostgreSQL CDC: WAL the replication slot retains on the server (kind="retained") and WAL not yet confirmed (kind="unconfirmed").',
    labelNames: [...CONNECTION_LABELS, 'slot', 'kind'] as const,
  },
};
type LabelOf<K extends keyof typeof PUSHED> = (typeof PUSHED)[K]['labelNames'][number];

export class SyncMetrics {
  readonly registry = new Registry();
  readonly pipeline: string;
  private readonly runs: Run[] = [];
  private current: Run | undefined;
  private readonly failedEmbeddingBatches = new Map<string, number>();
  private lastFailure: string | undefined;
  private readonly retries: Counter<LabelOf<'retries'>>;
  private readonly errors: Counter<LabelOf<'errors'>>;
  private readonly syncDuration: Histogram<LabelOf<'syncDuration'>>;
  private readonly batchDuration: Histogram<LabelOf<'batchDuration'>>;
  private readonly lastSuccess: Gauge<LabelOf<'lastSuccess'>>;
  private readonly lastCommit: Gauge<LabelOf<'lastCommit'>>;
  private readonly lag: Gauge<LabelOf<'lag'>>;
  private readonly slotBytes: Gauge<LabelOf<'slotBytes'>>;
  /** Per connection, the Kafka source's last lag report: [topic, partition, messages]. */
  private readonly kafkaLag = new Map<string, Array<[topic: string, partition: number, messages: number]>>();
  private readonly now: () => number;
  private readonly stallMs: number;
  private lastProgressAt = 0;
  private lastProgressMark = '';

  /**
   * `stallSeconds`: /readyz also turns 503 when the running connection read nothing and committed
   * nothing for that long (0: never). `now` is for tests.
   */
  constructor(pipelineFile: string, opts: { processMetrics?: boolean; stallSeconds?: number; now?: () => number } = {}) {
    this.pipeline = basename(pipelineFile, extname(pipelineFile));
    this.now = opts.now ?? Date.now;
    this.stallMs = (opts.stallSeconds ?? 0) * 1000;
    const registers = [this.registry];
    const pipeline = this.pipeline;
    const sources: Sources = { runs: this.runs, failedEmbeddingBatches: this.failedEmbeddingBatches };
    for (const { name, help, labelNames, samples } of SCRAPED_COUNTERS) {
      new Counter({
        name,
        help,
        labelNames: ['pipeline', ...labelNames],
        registers,
        collect() {
          this.reset();
          for (const [labels, value] of samples(sources)) this.inc({ pipeline, ...labels }, value);
        },
      });
    }
    const pushed = <K extends keyof typeof PUSHED>(key: K) => ({ ...PUSHED[key], labelNames: [...PUSHED[key].labelNames], registers });
    this.retries = new Counter(pushed('retries'));
    this.errors = new Counter(pushed('errors'));
    this.syncDuration = new Histogram(pushed('syncDuration'));
    this.batchDuration = new Histogram(pushed('batchDuration'));
    this.lastSuccess = new Gauge(pushed('lastSuccess'));
    this.lastCommit = new Gauge(pushed('lastCommit'));
    this.lag = new Gauge(pushed('lag'));
    this.slotBytes = new Gauge(pushed('slotBytes'));
    const kafkaLag = this.kafkaLag;
    new Gauge({
      name: 'sluice_kafka_consumer_lag_messages',
      help: "Kafka: messages between the next offset this worker reads and the partition's high watermark, per partition it owns (updated at every checkpoint).",
      labelNames: ['pipeline', 'connection', 'topic', 'partition'],
      registers,
      collect() {
        // Each report replaces the last: partitions handed to another worker disappear.
        this.reset();
        for (const [connection, lags] of kafkaLag)
          for (const [topic, partition, messages] of lags)
            this.set({ pipeline, connection, topic, partition: String(partition) }, messages);
      },
    });
    const self = this;
    new Gauge({
      name: 'sluice_ready',
      help: '1 while a connection is streaming (what /readyz reports), else 0.',
      registers,
      collect() {
        this.set(self.ready().ready ? 1 : 0);
      },
    });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'sluice_' });
  }

  /** Hooks for runSync's `observer` option. */
  readonly observer: SyncObserver = {
    connectionStarted: (summary: ConnectionSummary, embedder: Embedder | undefined) => {
      const perMillion = embedder ? estimateCostUsd(1_000_000, embedder) : undefined;
      this.current = { summary, finished: false, ...(perMillion !== undefined ? { pricePerToken: perMillion / 1_000_000 } : {}) };
      this.runs.push(this.current);
      this.lastProgressAt = this.now();
      this.lastProgressMark = '';
    },
    embeddingBatch: (connection, stream, seconds, ok) => {
      this.batchDuration.observe({ pipeline: this.pipeline, connection, stage: 'embed' }, seconds);
      if (!ok) {
        const key = JSON.stringify([connection, stream]);
        this.failedEmbeddingBatches.set(key, (this.failedEmbeddingBatches.get(key) ?? 0) + 1);
      }
    },
    stateCommitted: (connection, commitSeconds, lagSeconds) => {
      const labels = { pipeline: this.pipeline, connection };
      this.batchDuration.observe({ ...labels, stage: 'commit' }, commitSeconds);
      this.lastCommit.set(labels, Date.now() / 1000);
      this.lastProgressAt = this.now();
      this.lag.set(labels, lagSeconds);
    },
    connectionFinished: (summary: ConnectionSummary, error: SluiceError | undefined) => {
      const labels = { pipeline: this.pipeline, connection: summary.name };
      const run = this.runs.find((r) => r.summary === summary);
      if (run) run.finished = true;
      else this.runs.push({ summary, finished: true }); // failed before it started streaming
      this.syncDuration.observe({ ...labels, status: summary.status }, summary.duration_ms / 1000);
      if (summary.status === 'succeeded') this.lastSuccess.set(labels, Date.now() / 1000);
      if (summary.status === 'failed') {
        this.errors.inc({ ...labels, kind: error?.kind ?? 'internal' });
        this.lastFailure = summary.error?.message;
      }
    },
  };

  /**
   * `/readyz`: a connection has been discovered and is streaming, has not failed since, and (with
   * `stallSeconds`) read a record or committed a checkpoint recently.
   */
  ready(): { ready: boolean; reason: string } {
    const run = this.current;
    if (!run) return { ready: false, reason: this.lastFailure ? `not connected: ${this.lastFailure}` : 'starting' };
    if (run.finished) return { ready: false, reason: `connection ${run.summary.name} ${run.summary.status}` };
    if (this.stallMs > 0) {
      // Progress between two looks counts as progress now: the counters are read, not pushed.
      const s = run.summary;
      const mark = `${Object.values(s.streams).reduce((n, st) => n + st.records_read, 0)}/${s.states_committed}`;
      const now = this.now();
      if (mark !== this.lastProgressMark) {
        this.lastProgressMark = mark;
        this.lastProgressAt = now;
      }
      const idle = now - this.lastProgressAt;
      if (idle > this.stallMs)
        return { ready: false, reason: `connection ${s.name} stalled: nothing read or committed for ${Math.round(idle / 1000)}s` };
    }
    return { ready: true, reason: `connection ${run.summary.name} streaming` };
  }

  /** Marks the run as over for readiness (e.g. between a failure and the restart of a --follow sync). */
  notReady(reason: string): void {
    this.current = undefined;
    this.lastFailure = reason;
  }

  /**
   * A logger that also turns structured log lines into metrics: retries (a warning with
   * `attempt` and `waitMs`, as src/net/retry callers log them), PostgreSQL slot lag (the CDC
   * source's `walRetainedBytes`/`unconfirmedBytes` fields or its LOG message) and Kafka consumer
   * lag (the Kafka source's `kafkaConsumerLag` field).
   */
  tap(logger: Logger): Logger {
    const observe = (obj: object | string, msg?: string) => {
      const connection = this.current?.summary.name;
      if (!connection || typeof obj !== 'object' || obj === null) return;
      const o = obj as Record<string, unknown>;
      const labels = { pipeline: this.pipeline, connection };
      if (typeof o.attempt === 'number' && typeof o.waitMs === 'number') this.retries.inc(labels);
      if (typeof o.walRetainedBytes === 'number' && typeof o.slot === 'string') {
        this.slotBytes.set({ ...labels, slot: o.slot, kind: 'retained' }, o.walRetainedBytes);
        if (typeof o.unconfirmedBytes === 'number')
          this.slotBytes.set({ ...labels, slot: o.slot, kind: 'unconfirmed' }, o.unconfirmedBytes);
      }
      if (Array.isArray(o.kafkaConsumerLag)) {
        const lags = (o.kafkaConsumerLag as Array<Record<string, unknown>>).filter(
          (l) => typeof l?.topic === 'string' && typeof l.partition === 'number' && typeof l.messages === 'number',
        );
        this.kafkaLag.set(
          connection,
          lags.map((l) => [l.topic as string, l.partition as number, l.messages as number]),
        );
      }
      const m = msg && /^slot (\S+): (\d+) bytes of WAL retained, (\d+) bytes not yet confirmed$/.exec(msg);
      if (m) {
        this.slotBytes.set({ ...labels, slot: m[1], kind: 'retained' }, Number(m[2]));
        this.slotBytes.set({ ...labels, slot: m[1], kind: 'unconfirmed' }, Number(m[3]));
      }
    };
    const wrap =
      (level: keyof Logger) =>
      (...args: [obj: object | string, msg?: string]): void => {
        observe(...args);
        logger[level](...args);
      };
    return { debug: wrap('debug'), info: wrap('info'), warn: wrap('warn'), error: wrap('error') };
  }

  /** The connections that ran, in order. */
  connections(): string[] {
    return [...new Set(this.runs.map((r) => r.summary.name))];
  }
}

function sumByStream(runs: Run[], value: (s: StreamStats) => number): Array<[Labels, number]> {
  const totals = new Map<string, number>();
  for (const [connection, stream, s] of streamsOf(runs)) {
    const key = JSON.stringify([connection, stream]);
    totals.set(key, (totals.get(key) ?? 0) + value(s));
  }
  return [...totals].map(([key, n]) => {
    const [connection, stream] = JSON.parse(key) as [string, string];
    return [{ connection, stream }, n];
  });
}
