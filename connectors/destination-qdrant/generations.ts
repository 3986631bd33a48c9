// `sluice reindex` on Qdrant (docs/qdrant.md "Changing the model: sluice reindex"). Readers query the
// alias `<collection>`; every generation is a physical collection `<collection>_<n>` (the naming
// overwrite syncs already use, so existing deployments need no migration). A reindex loads a new
// generation while the alias keeps serving the old one, and switches with ONE
// `POST /collections/aliases` request, which Qdrant applies atomically: readers resolve the alias to
// the old generation or to the new one, never to a partial one or to nothing.
// `--keep-previous` keeps the replaced generation under a second alias, `<collection>__sluice_previous`,
// moved in that same request; `--rollback` swaps the two aliases in one request. An alias (rather
// than a name pattern) marks the kept generation, so an interrupted run's leftover generation can
// never be mistaken for it: leftovers are the generations no alias points to, and the next
// overwrite or reindex drops them.
import type { ConnectorContext, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type { Qdrant } from './client.ts';
import { connectQdrant } from './client.ts';
import type { QdrantConfig } from './config.ts';
import { describeCollection, dropCollection, readLayout } from './collection.ts';
import { FP_EMBEDDER } from './fingerprints.ts';

/** The alias naming the generation kept by `sluice reindex --keep-previous`. */
export const previousAlias = (collection: string) => `${collection}__sluice_previous`;

type AliasAction = { delete_alias: { alias_name: string } } | { create_alias: { collection_name: string; alias_name: string } };

/** Points `alias` at `physical` (replacing what it named), as actions of one alias request. */
export function pointAlias(aliases: Map<string, string>, alias: string, physical: string): AliasAction[] {
  return [
    ...(aliases.has(alias) ? [{ delete_alias: { alias_name: alias } }] : []),
    { create_alias: { collection_name: physical, alias_name: alias } },
  ];
}

export async function updateAliases(q: Qdrant, what: string, actions: AliasAction[]): Promise<void> {
  await q.call(what, () => q.client.updateCollectionAliases({ actions }));
}

/**
 * The end of a complete reindex: the alias goes to `target` and, with keepPrevious, the kept alias to
 * the replaced generation, in one atomic request; then generations nobody serves any more are dropped
 * (the replaced one without keepPrevious, an older kept one always).
 */
export async function switchReindexed(
  q: Qdrant,
  collection: string,
  target: string,
  keepPrevious: boolean,
  ctx: ConnectorContext,
): Promise<void> {
  const layout = await readLayout(q, collection);
  const current = layout.current;
  const kept = layout.aliases.get(previousAlias(collection));
  const actions: AliasAction[] = [];
  if (current && !current.viaAlias) {
    // A plain collection (made outside sluice) holds the name: Qdrant cannot rename it, and an alias
    // may not take a collection's name, so it must be deleted before the alias can be created —
    // readers see no collection between these two requests (milliseconds; once per collection).
    // keepPrevious was refused for this case before anything was written (prepare()).
    ctx.logger.warn({ collection }, 'replacing a plain Qdrant collection by an alias: readers see a short gap once');
    await dropCollection(q, current.physical);
  }
  actions.push(...pointAlias(layout.aliases, collection, target));
  if (keepPrevious && current?.viaAlias) actions.push(...pointAlias(layout.aliases, previousAlias(collection), current.physical));
  else if (kept !== undefined) actions.push({ delete_alias: { alias_name: previousAlias(collection) } });
  await updateAliases(q, `switch of alias ${collection} to ${target}`, actions);
  ctx.logger.info(
    { alias: collection, collection: target, kept: keepPrevious ? current?.physical : undefined },
    'switched the Qdrant alias to the reindexed generation',
  );
  const unserved = new Set<string>();
  if (kept !== undefined && kept !== target) unserved.add(kept);
  if (!keepPrevious && current?.viaAlias && current.physical !== target) unserved.add(current.physical);
  for (const name of unserved) await dropCollection(q, name);
}

export async function hasPrevious(config: QdrantConfig, ctx: ConnectorContext): Promise<boolean> {
  const q = connectQdrant(config, ctx.logger);
  const layout = await readLayout(q, config.collection);
  const kept = layout.aliases.get(previousAlias(config.collection));
  return !!kept && !!layout.current?.viaAlias && layout.collections.has(kept);
}

/**
 * Swaps the serving alias and the kept alias in one request. Before that, checks the kept generation
 * holds vectors of the model being restored (size, and the embedder tag stored with fingerprints), so
 * a generation kept by a run whose state was never committed is not served under the wrong identity.
 */
export async function rollback(
  config: QdrantConfig,
  ctx: ConnectorContext,
  options: { streams: string[]; state: SourceState },
): Promise<void> {
  const q = connectQdrant(config, ctx.logger);
  const collection = config.collection;
  const layout = await readLayout(q, collection);
  const kept = layout.aliases.get(previousAlias(collection));
  const current = layout.current;
  if (!kept || !current?.viaAlias)
    throw new SluiceError(
      `Qdrant collection "${collection}" has no kept previous generation (alias ${previousAlias(collection)}); nothing was changed`,
      {
        kind: 'config',
        hint: 'a previous generation is kept only by sluice reindex --keep-previous',
      },
    );
  const restoring = options.state.index;
  if (restoring?.dimensions) {
    const { shape } = await describeCollection(q, kept);
    const tag = await embedderTagOf(q, kept);
    const want = `${restoring.provider}/${restoring.model}/${restoring.dimensions}`;
    if (shape.size !== restoring.dimensions || (tag !== undefined && tag !== want))
      throw new SluiceError(
        `the kept Qdrant generation ${kept} holds vectors of ${tag ?? `size ${shape.size}`}, but the state to restore was built with ${want}; nothing was changed`,
        {
          kind: 'destination',
          where: `collection ${collection}`,
          hint: 'an interrupted reindex replaced the kept generation; run sluice reindex with the settings you want instead',
        },
      );
  }
  await updateAliases(q, `rollback of alias ${collection} to ${kept}`, [
    ...pointAlias(layout.aliases, collection, kept),
    ...pointAlias(layout.aliases, previousAlias(collection), current.physical),
  ]);
  ctx.logger.info({ alias: collection, collection: kept, kept: current.physical }, 'switched the Qdrant alias back to the kept generation');
}

/** The embedder tag on one point of a generation (all of a generation's points share it), if stored. */
export async function embedderTagOf(q: Qdrant, physical: string): Promise<string | undefined> {
  const page = await q.call(`read of the embedder of ${physical}`, () =>
    q.client.scroll(physical, {
      filter: { must: [{ key: 'chunk_index', match: { value: 0 } }] },
      limit: 1,
      with_payload: [FP_EMBEDDER],
      with_vector: false,
    }),
  );
  const tag = page.points[0]?.payload?.[FP_EMBEDDER];
  return typeof tag === 'string' ? tag : undefined;
}
