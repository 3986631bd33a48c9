// `sluice reindex` on Pinecone. Pinecone has no alias and no transaction, so a reindex loads every
// stream into a fresh namespace generation (`<namespace>__sluice_gen<N>`) while the old ones keep
// serving, and switches them with ONE upsert of the streams' pointer records in the control
// namespace `__sluice_generations` (writer.ts finishReindex; docs/pinecone.md "Reindex"). The
// pointer of each stream also names the generation kept by `--keep-previous` and which index
// identity built each, so a rollback can refuse to pair a generation with another one's state.
import type { ConnectorContext, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type { PineconeConfig } from './config.ts';
import { PineconeStore, identityTag, type GenerationPointer } from './store.ts';
import { logicalNamespace } from './writer.ts';

export async function hasPrevious(config: PineconeConfig, ctx: ConnectorContext, streams: string[]): Promise<boolean> {
  const store = await PineconeStore.connect(config, ctx);
  const logical = streams.map((s) => logicalNamespace(config.namespace, s));
  const pointers = await store.readPointers(logical);
  return logical.every((ns) => pointers.get(ns)?.kept !== undefined);
}

/**
 * Switches every stream back to its kept generation (keeping the current one in its place), in one
 * pointer upsert. The engine saves `state` after this returns; a crash in between leaves readers on
 * the kept generation with the state of the other: `sync` is then refused (the identity differs)
 * or, with the same settings, re-reads from the saved position (idempotent upserts).
 */
export async function rollback(config: PineconeConfig, ctx: ConnectorContext, options: { streams: string[]; state: SourceState }) {
  const store = await PineconeStore.connect(config, ctx);
  const logical = options.streams.map((s) => logicalNamespace(config.namespace, s));
  const pointers = await store.readPointers(logical);
  const restoring = options.state.index ? identityTag(options.state.index) : undefined;
  const switched: Array<[string, GenerationPointer]> = [];
  for (const ns of logical) {
    const p = pointers.get(ns);
    if (!p?.kept)
      throw new SluiceError(`Pinecone namespace "${ns}" has no kept previous generation; nothing was changed`, {
        kind: 'config',
        hint: 'a previous generation is kept only by sluice reindex --keep-previous',
      });
    if (restoring !== undefined && p.keptIdentity !== undefined && p.keptIdentity !== restoring)
      throw new SluiceError(
        `the generation kept in Pinecone namespace "${p.kept}" was not built with the settings the saved state would restore (an earlier reindex switched but its state was not saved); nothing was changed`,
        {
          kind: 'config',
          hint: 'run sluice reindex again to rebuild with the current settings, or revert the settings and reindex',
        },
      );
    const { kept, keptIdentity, identity, embedder, keptEmbedder, ...rest } = p;
    switched.push([
      ns,
      {
        ...rest,
        current: kept,
        kept: p.current,
        ...(keptIdentity !== undefined ? { identity: keptIdentity } : {}),
        ...(identity !== undefined ? { keptIdentity: identity } : {}),
        ...(keptEmbedder !== undefined ? { embedder: keptEmbedder } : {}),
        ...(embedder !== undefined ? { keptEmbedder: embedder } : {}),
      },
    ]);
  }
  await store.writePointers(switched);
  ctx.logger.info({ namespaces: switched.map(([, p]) => p.current) }, 'Pinecone: readers switched back to the kept generations');
}
