// Sharded runs (`sluice sync --shard I/N`, or Kubernetes Indexed Jobs' JOB_COMPLETION_INDEX with
// `--shards N`): N workers split one connection's work. Streams go whole to one worker, chosen by
// a hash of their name; streams the source can split (planPartitions: e.g. primary-key ranges
// of a PostgreSQL full refresh) are read by every worker, each its own partition. The plan is
// stored with the state on first use, so every worker and every restart reads the same partitions.
//
// All workers share the connection's one state entry: its `sharding` part holds the worker count,
// the plan and each worker's own SourceState. Each worker updates only its own slot, under the
// store's lock, so workers never roll each other back; a run with another worker count (or none)
// is refused instead of mixing two layouts.
import { createHash } from 'node:crypto';
import type { LoadedConnection } from '../config/load.ts';
import type { ConnectorContext, SourceState } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import type { ConfiguredCatalog, ConfiguredStream } from '../protocol/messages.ts';
import type { StateStore } from '../state/index.ts';

export interface ShardSpec {
  /** 0-based. */
  index: number;
  count: number;
}

export interface ShardedState {
  count: number;
  /** Stream → one partition per worker (from the source's planPartitions). */
  plan: Record<string, unknown[]>;
  /** Worker index → that worker's state. */
  workers: Record<string, SourceState>;
}

type Stored = SourceState & { sharding?: ShardedState };

const usage = 'use --shard I/N with 0 <= I < N (e.g. --shard 0/4), or --shards N with JOB_COMPLETION_INDEX set (Kubernetes Indexed Job)';

/** `--shard I/N`, `--shards N` and JOB_COMPLETION_INDEX → which worker this is (undefined: not sharded). */
export function resolveShard(opts: { shard?: string; shards?: string }, env: NodeJS.ProcessEnv = process.env): ShardSpec | undefined {
  const int = (v: string) => (/^\d+$/.test(v.trim()) ? Number(v.trim()) : NaN);
  let count = opts.shards !== undefined ? int(opts.shards) : undefined;
  if (count !== undefined && !(count >= 1))
    throw new SluiceError(`--shards must be a whole number of at least 1, got "${opts.shards}"`, { kind: 'config', hint: usage });
  let index: number;
  if (opts.shard !== undefined) {
    const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(opts.shard);
    if (!m) throw new SluiceError(`--shard must look like I/N (e.g. 0/4), got "${opts.shard}"`, { kind: 'config', hint: usage });
    index = Number(m[1]);
    const n = Number(m[2]);
    if (count !== undefined && count !== n)
      throw new SluiceError(`--shard ${opts.shard} disagrees with --shards ${count}`, { kind: 'config', hint: usage });
    count = n;
  } else {
    if (count === undefined) return undefined;
    const fromEnv = env.JOB_COMPLETION_INDEX;
    if (fromEnv === undefined || fromEnv === '')
      throw new SluiceError(`--shards ${count} needs the worker's index: JOB_COMPLETION_INDEX is not set`, { kind: 'config', hint: usage });
    index = int(fromEnv);
    if (Number.isNaN(index))
      throw new SluiceError(`JOB_COMPLETION_INDEX must be a whole number, got "${fromEnv}"`, { kind: 'config', hint: usage });
  }
  if (!(count! >= 1) || index >= count!)
    throw new SluiceError(`shard index ${index} is out of range for ${count} shards`, { kind: 'config', hint: usage });
  return { index, count: count! };
}

/** Which worker reads a stream that is not split. CDC streams share one replication slot: one worker has them all. */
export function ownerOf(stream: ConfiguredStream, count: number): number {
  const key = stream.cdc ? '\0cdc' : stream.stream.name;
  return createHash('sha256').update(key).digest().readUInt32BE(0) % count;
}

/**
 * Streams that may be split across workers: full refresh upserted by primary key. Re-reading a
 * partition after a crash then rewrites the same documents (idempotent); an overwrite stream
 * switches one generation, which needs one writer, so it goes whole to one worker.
 */
const splittable = (s: ConfiguredStream) => s.sync_mode === 'full_refresh' && !s.cdc && s.destination_sync_mode === 'append_dedup';

function describeLayout(stored: Stored | undefined): string | undefined {
  if (stored?.sharding) return `${stored.sharding.count} shards`;
  if (stored && (Object.keys(stored.streams ?? {}).length || stored.shared)) return 'a single worker (no --shard)';
  return undefined;
}

function refuse(connection: string, has: string, wanted: string): SluiceError {
  return new SluiceError(`the saved state of this connection was written by ${has}; this run is ${wanted}`, {
    kind: 'config',
    where: `connection ${connection}`,
    hint: `run with the same layout as before, or start over with: sluice state reset <pipeline> --connection ${connection} (the data already written stays)`,
  });
}

/** Refuses a run whose layout (worker count, or sharded vs not) differs from the stored state's. */
export function checkLayout(connection: string, stored: SourceState | undefined, shard: ShardSpec | undefined): void {
  const s = stored as Stored | undefined;
  const has = describeLayout(s);
  if (!has) return;
  if (!shard && s?.sharding) throw refuse(connection, has, 'not sharded');
  if (shard && !s?.sharding) throw refuse(connection, has, `shard ${shard.index}/${shard.count}`);
  if (shard && s?.sharding && s.sharding.count !== shard.count) throw refuse(connection, has, `shard ${shard.index}/${shard.count}`);
}

/** A view of the shared store that reads and writes only this worker's slot (atomically, layout checked). */
export class ShardStateView implements StateStore {
  constructor(
    private readonly store: StateStore,
    private readonly shard: ShardSpec,
  ) {}

  get dir() {
    return this.store.dir;
  }

  async load(connection: string): Promise<SourceState | undefined> {
    const stored = (await this.store.load(connection)) as Stored | undefined;
    checkLayout(connection, stored, this.shard);
    return stored?.sharding?.workers[String(this.shard.index)];
  }

  async update(connection: string, fn: (stored: SourceState | undefined) => SourceState): Promise<SourceState> {
    let mine: SourceState | undefined;
    await this.store.update(connection, (raw) => {
      const stored = raw as Stored | undefined;
      checkLayout(connection, stored, this.shard);
      const sharding: ShardedState = stored?.sharding ?? { count: this.shard.count, plan: {}, workers: {} };
      mine = fn(sharding.workers[String(this.shard.index)]);
      return { streams: {}, sharding: { ...sharding, workers: { ...sharding.workers, [String(this.shard.index)]: mine } } } as Stored;
    });
    return mine!;
  }

  reset(connection: string, streams?: string[]): Promise<void> {
    return this.store.reset(connection, streams);
  }

  list(): Promise<string[]> {
    return this.store.list();
  }
}

/**
 * This worker's part of the catalog, and the partitions it reads. The first worker to get here
 * stores the partition plan; the others (and later restarts) use the stored one.
 */
export async function shardCatalog(
  conn: LoadedConnection,
  catalog: ConfiguredCatalog,
  store: StateStore,
  shard: ShardSpec,
  ctx: ConnectorContext,
  opts: { dryRun?: boolean } = {},
): Promise<{ catalog: ConfiguredCatalog; partitions: Record<string, unknown> }> {
  const name = conn.config.name;
  const append = catalog.streams.find((s) => s.destination_sync_mode === 'append');
  if (append) {
    throw new SluiceError(`stream "${append.stream.name}" uses destination_sync_mode append, which a sharded run cannot replay exactly`, {
      kind: 'config',
      where: `connection ${name}, stream ${append.stream.name}`,
      hint: 'give the stream a primary key and use append_dedup (or overwrite), or run it without --shard',
    });
  }
  const stored = (await store.load(name)) as Stored | undefined;
  checkLayout(name, stored, shard);
  const candidates = catalog.streams.filter(splittable);
  let plan: Record<string, unknown[]> = stored?.sharding?.plan ?? {};
  const unplanned = candidates.filter((s) => !plan[s.stream.name]);
  if (unplanned.length && conn.source.planPartitions && shard.count > 1) {
    const proposed = await conn.source.planPartitions(conn.sourceConfig, { streams: unplanned }, shard.count, ctx);
    for (const [stream, parts] of Object.entries(proposed)) {
      if (!Array.isArray(parts) || parts.length !== shard.count)
        throw new SluiceError(
          `source ${conn.config.source.type} planned ${Array.isArray(parts) ? parts.length : 'no'} partitions of stream ${stream} for ${shard.count} shards`,
          {
            kind: 'source',
            where: `connection ${name}`,
          },
        );
    }
    // A dry run changes no state (invariant 9): it uses the plan it made without storing it.
    if (opts.dryRun) plan = { ...proposed, ...plan };
    else if (Object.keys(proposed).length) {
      await store.update(name, (raw) => {
        const cur = raw as Stored | undefined;
        checkLayout(name, cur, shard);
        const sharding: ShardedState = cur?.sharding ?? { count: shard.count, plan: {}, workers: {} };
        // First plan wins: a worker that planned concurrently adopts what is stored.
        plan = { ...proposed, ...sharding.plan };
        return { streams: {}, sharding: { ...sharding, plan } } as Stored;
      });
    }
  }
  const split = (s: ConfiguredStream) => splittable(s) && Array.isArray(plan[s.stream.name]);
  const mine = catalog.streams.filter((s) => split(s) || ownerOf(s, shard.count) === shard.index);
  const partitions: Record<string, unknown> = {};
  for (const s of mine) if (split(s)) partitions[s.stream.name] = plan[s.stream.name][shard.index];
  return { catalog: { streams: mine }, partitions };
}
