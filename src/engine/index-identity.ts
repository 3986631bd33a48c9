// The identity of a connection's index: which embedder (provider, model, dimensions) and which
// processing settings produced the vectors it holds. It is recorded in the connection state
// (`SourceState.index`), so it travels wherever the state is kept — the state store and, for
// exactly-once destinations, the destination's own state table — and survives a pod whose disk
// vanishes. A sync whose configuration no longer matches it is refused before anything is
// written (invariant 9: one index never holds vectors of two models); `sluice reindex` switches.
import type { LoadedConnection, LoadedPipeline } from '../config/load.ts';
import type { ConfiguredCatalog } from '../protocol/messages.ts';
import type { Embedder } from '../embedding/types.ts';
import type { ConnectorContext, IndexIdentity, Logger, SourceState } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import { canonicalJson, sha256 } from '../protocol/identity.ts';
import { openStateStore, type StateStore } from '../state/index.ts';
import { ProcessingConfigSchema } from '../text/config.ts';

export type { IndexIdentity } from '../protocol/connector.ts';

/**
 * The processing settings that shape the embedded chunks. Not the run guards (max_empty_share,
 * max_delete_share), and not metadata_fields: a metadata change updates stored metadata without
 * touching vectors (docs/fingerprints.md), so it needs no new generation.
 */
function normalizedProcessing(conn: LoadedConnection): Record<string, unknown> {
  const parsed = ProcessingConfigSchema.parse(conn.config.processing ?? {}) as Record<string, unknown>;
  const { max_empty_share: _empty, max_delete_share: _delete, metadata_fields: _metadata, ...shaping } = parsed;
  return JSON.parse(canonicalJson(shaping)) as Record<string, unknown>;
}

/** What the connection's current configuration would build. */
export function currentIdentity(conn: LoadedConnection, embedder: Embedder | undefined): IndexIdentity {
  const processing = normalizedProcessing(conn);
  return {
    provider: embedder?.provider ?? null,
    model: embedder?.model ?? null,
    dimensions: embedder?.dimensions ?? null,
    processing_hash: sha256(canonicalJson(processing)),
    processing,
  };
}

/** The state a source sees: without the engine's own `index` record. */
export function withoutIndex(state: SourceState | undefined): SourceState | undefined {
  if (!state || state.index === undefined) return state;
  const { index: _index, ...rest } = state;
  return rest;
}

const embedderLabel = (i: IndexIdentity) =>
  i.provider ? `${i.provider} ${i.model ?? ''}`.trim() + (i.dimensions ? ` (${i.dimensions} dimensions)` : '') : 'no embedder';

/** What changed between the recorded and the current identity, one phrase per change (empty: same). */
export function identityChanges(recorded: IndexIdentity, current: IndexIdentity): string[] {
  const changes: string[] = [];
  if (recorded.provider !== current.provider || recorded.model !== current.model || recorded.dimensions !== current.dimensions)
    changes.push(`embedding: ${embedderLabel(recorded)} → ${embedderLabel(current)}`);
  if (recorded.processing_hash !== current.processing_hash) {
    const before = recorded.processing ?? {};
    const after = current.processing ?? {};
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    const show = (v: unknown) => (v === undefined ? '(unset)' : JSON.stringify(v));
    const fields = keys.filter((k) => canonicalJson(before[k] ?? null) !== canonicalJson(after[k] ?? null));
    changes.push(
      fields.length
        ? fields.map((k) => `processing.${k}: ${show(before[k])} → ${show(after[k])}`).join(', ')
        : 'processing settings changed',
    );
  }
  return changes;
}

/** The identity recorded for a connection: with the destination's state (it wins, as on load) or in the store. */
export async function recordedIdentity(
  conn: LoadedConnection,
  ctx: ConnectorContext,
  store: StateStore,
): Promise<{ identity?: IndexIdentity; state?: SourceState }> {
  const atDestination = await conn.destination.readState?.(conn.destinationConfig, ctx);
  const inStore = await store.load(conn.config.name);
  const state = atDestination ?? inStore;
  return { identity: atDestination?.index ?? inStore?.index, state };
}

/** A run refused before any write because the index cannot take the configuration (the CLI exits 2). */
export class IndexChangedError extends SluiceError {}

/** The error a sync, dry run or check gives when the configuration no longer matches the index. */
export function indexChangedError(connection: string, pipelineFile: string, changes: string[]): IndexChangedError {
  return new IndexChangedError(
    `the index was built with other settings (${changes.join('; ')}); syncing now would mix vectors of two settings in one index, so nothing was written`,
    {
      kind: 'config',
      where: `connection ${connection}`,
      hint: `rebuild the index with the new settings while the old one keeps serving: sluice reindex ${pipelineFile} --connection ${connection} (add --keep-previous to be able to roll back); or revert the setting`,
    },
  );
}

/**
 * Refuses a run (sync, dry run, check) whose configuration differs from the recorded identity.
 * A connection with no recorded identity is not refused: its next successful run records it.
 */
export async function refuseChangedIndex(
  pipeline: LoadedPipeline,
  conn: LoadedConnection,
  ctx: ConnectorContext,
  embedder: Embedder | undefined,
): Promise<void> {
  const store = openStateStore(pipeline);
  try {
    const { identity } = await recordedIdentity(conn, ctx, store);
    if (!identity) return;
    const changes = identityChanges(identity, currentIdentity(conn, embedder));
    if (changes.length) throw indexChangedError(conn.config.name, pipeline.file, changes);
  } finally {
    await store.close?.();
  }
}

/** After a successful run: the store records the identity too (connections from before identities, sources without states). */
export async function adoptIdentity(store: StateStore, connection: string, identity: IndexIdentity, logger: Logger): Promise<void> {
  const stored = await store.load(connection);
  if (stored?.index && !identityChanges(stored.index, identity).length) return;
  await store.update(connection, (s) => ({ ...(s ?? { streams: {} }), index: identity }));
  logger.debug({ connection }, 'recorded the index identity');
}

/**
 * The identity a run records with its states. A sync refuses a configuration that differs from the
 * recorded one (keeping what was recorded, including a generation kept for rollback); a reindex
 * records the current one, with the replaced generation's identity and state when it keeps it.
 */
export async function indexForRun(
  pipeline: LoadedPipeline,
  conn: LoadedConnection,
  ctx: ConnectorContext,
  embedder: Embedder | undefined,
  opts: { reindex?: { keepPrevious: boolean } },
): Promise<IndexIdentity> {
  const current = currentIdentity(conn, embedder);
  if (opts.reindex && !conn.destination.reindex)
    throw new IndexChangedError(
      `connection ${conn.config.name}: destination ${conn.config.destination.type} cannot be reindexed (it cannot build a new generation of every stream and switch to it at once); nothing was written`,
      {
        kind: 'config',
        where: `connection ${conn.config.name}`,
        hint: 'point the connection at a new index (another table, collection, namespace or file) and sync it from scratch, or revert the setting; docs/embeddings.md lists what each destination supports',
      },
    );
  const store = openStateStore(pipeline);
  try {
    const { identity, state } = await recordedIdentity(conn, ctx, store);
    if (opts.reindex) {
      if (!opts.reindex.keepPrevious) return current;
      const { previous: _older, ...replaced } = identity ?? ({} as Partial<IndexIdentity>);
      return {
        ...current,
        previous: { ...(identity ? { index: replaced as IndexIdentity } : {}), state: withoutIndex(state) ?? { streams: {} } },
      };
    }
    if (!identity) return current;
    const changes = identityChanges(identity, current);
    if (changes.length) throw indexChangedError(conn.config.name, pipeline.file, changes);
    return identity.previous ? { ...current, previous: identity.previous } : current;
  } finally {
    await store.close?.();
  }
}

/** A reindex writes every stream as a new generation. */
export function reindexCatalog(catalog: ConfiguredCatalog): ConfiguredCatalog {
  return { ...catalog, streams: catalog.streams.map((s) => ({ ...s, destination_sync_mode: 'overwrite' as const })) };
}
