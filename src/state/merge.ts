// How a STATE message changes a connection's state.
import type { SourceState } from '../protocol/connector.ts';
import type { StateMessage } from '../protocol/messages.ts';

export function applyStateMessage(current: SourceState | undefined, msg: StateMessage): SourceState {
  const next: SourceState = {
    streams: { ...(current?.streams ?? {}) },
    ...(current?.shared ? { shared: current.shared } : {}),
    ...(current?.index ? { index: current.index } : {}), // the engine's record of what built the index
  };
  if (msg.type === 'GLOBAL' && msg.global) {
    if (msg.global.shared_state) next.shared = msg.global.shared_state;
    for (const s of msg.global.stream_states) next.streams[s.stream_descriptor.name] = s.stream_state ?? {};
  } else if (msg.stream) {
    next.streams[msg.stream.stream_descriptor.name] = msg.stream.stream_state ?? {};
  }
  return next;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Objects merged key by key (recursively); anything else in `mine` replaces what was stored. */
export function deepMerge(stored: unknown, mine: unknown): unknown {
  if (!isPlainObject(stored) || !isPlainObject(mine)) return mine;
  const out: Record<string, unknown> = { ...stored };
  for (const [k, v] of Object.entries(mine)) out[k] = deepMerge(stored[k], v);
  return out;
}

export function mergeConnectionState(stored: SourceState | undefined, mine: SourceState, mode: 'replace' | 'deep'): SourceState {
  if (mode === 'replace' || !stored) return mine;
  return deepMerge(stored, mine) as SourceState;
}

/** The state without these streams, in the unsharded part and in every shard worker's slot (and their partition plans). */
export function dropStreams(stored: SourceState | undefined, names: string[]): SourceState {
  const without = (s: SourceState | undefined): SourceState => {
    const out: SourceState = { ...(s ?? {}), streams: { ...(s?.streams ?? {}) } };
    for (const name of names) delete out.streams[name];
    return out;
  };
  const next = without(stored) as SourceState & { sharding?: { plan: Record<string, unknown>; workers: Record<string, SourceState> } };
  if (next.sharding) {
    const plan = { ...next.sharding.plan };
    for (const name of names) delete plan[name];
    next.sharding = {
      ...next.sharding,
      plan,
      workers: Object.fromEntries(Object.entries(next.sharding.workers).map(([k, w]) => [k, without(w)])),
    };
  }
  return next;
}
