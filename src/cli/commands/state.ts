import type { Command } from 'commander';
import type { LoadedConnection, LoadedPipeline } from '../../config/load.ts';
import { loadPipeline } from '../../config/load.ts';
import { closest } from '../../config/suggest.ts';
import { connectorContext } from '../../engine/sync.ts';
import { SluiceError } from '../../protocol/errors.ts';
import { effectiveState, stateLocations, stateStoreFor } from '../../state/locations.ts';
import type { StateStore } from '../../state/store.ts';
import type { SourceState } from '../../protocol/connector.ts';
import { createLogger, printJson } from '../output.ts';
import { renderStates } from '../render.ts';
import { pickConnection } from './shared.ts';

async function locationsOf(pipeline: LoadedPipeline, store: StateStore, conn: LoadedConnection) {
  const ctx = await connectorContext(pipeline, conn, { signal: new AbortController().signal, logger: createLogger({}) });
  return { ctx, locations: stateLocations(store, conn, ctx) };
}

/** Runs `fn` with the pipeline's state store open (a PostgreSQL store holds connections). */
async function withStore<T>(pipeline: LoadedPipeline, fn: (store: StateStore) => Promise<T>): Promise<T> {
  const store = stateStoreFor(pipeline);
  try {
    return await fn(store);
  } finally {
    await store.close?.();
  }
}

export function register(program: Command) {
  const state = program.command('state').description('Show or reset the saved state (cursors, offsets, LSNs) of connections');
  state
    .command('show')
    .description('Print the state each connection will start from (the destination copy when the destination keeps one)')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('-s, --stream <name...>', 'only these streams')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { connection?: string; stream?: string[]; json?: boolean }) => {
      const pipeline = await loadPipeline(file);
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      const out: Record<string, unknown> = {};
      await withStore(pipeline, async (store) => {
        for (const c of conns) {
          const { state, from } = await effectiveState((await locationsOf(pipeline, store, c)).locations);
          out[c.config.name] = state && opts.stream ? onlyStreams(state, opts.stream) : (state ?? null);
          if (from) process.stderr.write(`${c.config.name}: state kept by ${from}\n`);
        }
      });
      if (opts.json) printJson(out);
      else process.stdout.write(renderStates(out as Parameters<typeof renderStates>[0]));
    });
  state
    .command('reset')
    .description('Forget saved state, wherever it is kept, so the next sync starts from scratch (data already written stays)')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('-s, --stream <name...>', 'only these streams')
    .action(async (file: string, opts: { connection?: string; stream?: string[] }) => {
      const pipeline = await loadPipeline(file);
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      await withStore(pipeline, async (store) => {
        const prepared = [];
        // Every stream name is checked (for every connection) before anything is reset.
        for (const c of conns) {
          const { ctx, locations } = await locationsOf(pipeline, store, c);
          if (opts.stream?.length) {
            const known = new Set<string>(c.config.streams?.map((s) => s.name) ?? []);
            for (const l of locations) for (const s of Object.keys((await l.load())?.streams ?? {})) known.add(s);
            if (!c.config.streams) {
              const discovered = await c.source.discover(c.sourceConfig, ctx).catch(() => undefined);
              for (const s of discovered?.streams ?? []) known.add(s.name);
            }
            const unknown = opts.stream.filter((s) => !known.has(s));
            if (unknown.length) {
              const guess = closest(unknown[0], [...known]);
              throw new SluiceError(
                `connection ${c.config.name} has no stream ${unknown.map((s) => `"${s}"`).join(', ')}; nothing was reset`,
                {
                  kind: 'config',
                  hint: `${guess ? `did you mean "${guess}"? ` : ''}known streams: ${[...known].join(', ') || '(none)'}`,
                },
              );
            }
          }
          prepared.push({ c, locations });
        }
        for (const { c, locations } of prepared) {
          for (const l of locations) await l.reset(opts.stream);
          process.stdout.write(
            `reset state of ${c.config.name}${opts.stream ? ` (streams: ${opts.stream.join(', ')})` : ''} in ${locations.map((l) => l.label).join(' and ')}\n`,
          );
        }
      });
    });
}

/** The state of the named streams only (the shared part, e.g. a CDC position, belongs to all of them). */
function onlyStreams(state: SourceState, names: string[]): SourceState {
  return {
    streams: Object.fromEntries(Object.entries(state.streams).filter(([name]) => names.includes(name))),
    ...(state.shared ? { shared: state.shared } : {}),
  };
}
