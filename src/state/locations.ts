// Where a connection's state lives, for `sluice state show|reset`: the pipeline's state store and,
// for destinations that keep it with their data (exactly-once, e.g. pgvector's _sluice_state), the
// destination's copy — which is the one the next sync starts from when present. Both go through
// public interfaces (StateStore; Destination.readState/resetState), so any store or destination
// that implements them is covered.
import type { LoadedConnection, LoadedPipeline } from '../config/load.ts';
import type { ConnectorContext, SourceState } from '../protocol/connector.ts';
import { openStateStore } from './open.ts';
import { PostgresStateStore } from './postgres.ts';
import { FileStateStore, type StateStore } from './store.ts';

export interface StateLocation {
  /** For people: "state file .sluice/state/docs.json", "destination pgvector (table public._sluice_state in …)". */
  label: string;
  load(): Promise<SourceState | undefined>;
  reset(streams?: string[]): Promise<void>;
}

/** The pipeline's state store (the one the engine uses). */
export function stateStoreFor(pipeline: LoadedPipeline): StateStore {
  return openStateStore(pipeline);
}

/** In the order the engine reads them: the first that holds a state is what the next sync starts from. */
export function stateLocations(store: StateStore, conn: LoadedConnection, ctx: ConnectorContext): StateLocation[] {
  const name = conn.config.name;
  const out: StateLocation[] = [];
  const dest = conn.destination;
  if (dest.readState) {
    out.push({
      label: `destination ${conn.config.destination.type}${dest.describeState ? ` (${dest.describeState(conn.destinationConfig, ctx)})` : ''}`,
      load: () => dest.readState!(conn.destinationConfig, ctx),
      reset: async (streams) => dest.resetState?.(conn.destinationConfig, ctx, streams),
    });
  }
  out.push({
    label:
      store instanceof FileStateStore
        ? `state file in ${store.dir}`
        : store instanceof PostgresStateStore
          ? `state store in ${store.label}`
          : 'state store',
    load: () => store.load(name),
    reset: (streams) => store.reset(name, streams),
  });
  return out;
}

/** The state the next sync of the connection starts from, and where it is kept. */
export async function effectiveState(locations: StateLocation[]): Promise<{ state: SourceState | undefined; from?: string }> {
  for (const l of locations) {
    const state = await l.load();
    if (state) return { state, from: l.label };
  }
  return { state: undefined };
}
