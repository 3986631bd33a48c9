// `sluice reindex`: rebuild a connection's index with its current embedder and processing settings
// while the old index keeps serving, then switch every stream at once (with the new state and
// index identity); `--rollback` switches back to a generation kept by `--keep-previous`.
// The run itself is a sync (./sync.ts) in reindex mode: a fresh read of every stream, each written
// as a new generation, with the same progress, summary, cache and cost guard.
import type { LoadedConnection, LoadedPipeline } from '../config/load.ts';
import type { IndexIdentity, Logger, SourceState } from '../protocol/connector.ts';
import { SluiceError, withContext } from '../protocol/errors.ts';
import { openStateStore } from '../state/index.ts';
import { configureCatalog } from './catalog.ts';
import { lockConnection } from './connection-lock.ts';
import { recordedIdentity, withoutIndex } from './index-identity.ts';
import { connectorContext, runSync, type SyncOptions, type SyncSummary } from './sync.ts';

export interface ReindexOptions extends Omit<SyncOptions, 'fullRefresh' | 'dryRun' | 'follow' | 'shard' | 'reindex'> {
  keepPrevious?: boolean;
}

export function runReindex(pipeline: LoadedPipeline, opts: ReindexOptions): Promise<SyncSummary> {
  return runSync(pipeline, { ...opts, reindex: { keepPrevious: !!opts.keepPrevious } });
}

export interface RollbackResult {
  connection: string;
  streams: string[];
  /** The identity serving now (the restored one) and the one it replaced (kept for another --rollback). */
  index: { from: IndexIdentity | null; to: IndexIdentity | null };
}

/** Switches each connection back to its kept previous generation, restoring that generation's state and identity. */
export async function rollbackReindex(
  pipeline: LoadedPipeline,
  opts: { connection?: string; logger: Logger; signal: AbortSignal },
): Promise<RollbackResult[]> {
  const targets = opts.connection ? pipeline.connections.filter((c) => c.config.name === opts.connection) : pipeline.connections;
  if (!targets.length)
    throw new SluiceError(`no connection named "${opts.connection}" in ${pipeline.file}`, {
      kind: 'config',
      hint: `connections: ${pipeline.connections.map((c) => c.config.name).join(', ')}`,
    });
  const results: RollbackResult[] = [];
  for (const conn of targets) results.push(await rollbackConnection(pipeline, conn, opts));
  return results;
}

async function rollbackConnection(
  pipeline: LoadedPipeline,
  conn: LoadedConnection,
  opts: { logger: Logger; signal: AbortSignal },
): Promise<RollbackResult> {
  const name = conn.config.name;
  const generations = conn.destination.reindex;
  if (!generations)
    throw new SluiceError(`connection ${name}: destination ${conn.config.destination.type} keeps no previous generation to roll back to`, {
      kind: 'config',
      where: `connection ${name}`,
      hint: 'docs/embeddings.md lists what each destination supports',
    });
  const unlock = await lockConnection(pipeline.stateDir, name);
  const store = openStateStore(pipeline);
  try {
    const ctx = await connectorContext(pipeline, conn, opts);
    const { identity, state } = await recordedIdentity(conn, ctx, store);
    const previous = identity?.previous;
    const noPrevious = (why: string) =>
      new SluiceError(`connection ${name}: nothing to roll back to (${why}); nothing was changed`, {
        kind: 'config',
        where: `connection ${name}`,
        hint: `sluice reindex ${pipeline.file} --connection ${name} --keep-previous keeps the replaced index for --rollback`,
      });
    if (!previous) throw noPrevious('the last reindex kept no previous generation');
    const discovered = await conn.source.discover(conn.sourceConfig, ctx).catch((err) => {
      throw withContext(err, `connection ${name}, source ${conn.config.source.type} (discover)`);
    });
    const streams = configureCatalog(conn, discovered, {}).streams.map((s) => s.stream.name);
    if (!(await generations.hasPrevious(conn.destinationConfig, ctx, streams)))
      throw noPrevious(`destination ${conn.config.destination.type} holds no previous generation of every stream`);
    const { previous: _kept, ...current } = identity!;
    // The generation switched away from is kept in turn: a second --rollback switches forward again.
    const restored: SourceState = {
      ...previous.state,
      ...(previous.index
        ? { index: { ...previous.index, previous: { index: current, state: withoutIndex(state) ?? { streams: {} } } } }
        : {}),
    };
    await generations.rollback(conn.destinationConfig, ctx, { streams, state: restored }).catch((err) => {
      throw withContext(err, `connection ${name}, destination ${conn.config.destination.type}`);
    });
    await store.update(name, () => restored);
    opts.logger.info({ connection: name, streams }, `connection ${name}: switched back to the previous generation`);
    return { connection: name, streams, index: { from: current, to: previous.index ?? null } };
  } finally {
    await store.close?.();
    await unlock();
  }
}
