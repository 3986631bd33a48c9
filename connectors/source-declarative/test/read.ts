// Runs the declarative source through its public contract (validateConfig, discover, read), as the
// engine does, and collects records and states per stream.
import { join } from 'node:path';
import type { AirbyteMessage, ConfiguredCatalog, SourceState } from '../../../src/cdk/index.ts';
import { testContext } from '../../../src/testing/index.ts';
import source from '../index.ts';

export const MANIFESTS = join(import.meta.dirname, 'manifests');

export interface ReadResult {
  records: Record<string, Record<string, unknown>[]>;
  states: Record<string, Record<string, unknown>[]>;
  /** The connection state after the read (last state per stream), to resume from. */
  state: SourceState;
  messages: AirbyteMessage[];
}

export function sourceConfig(manifest: string, config: Record<string, unknown>) {
  return { manifest, config };
}

export async function readSource(
  manifest: string,
  config: Record<string, unknown>,
  opts: { streams?: string[]; incremental?: boolean; state?: SourceState } = {},
): Promise<ReadResult> {
  const ctx = testContext({ baseDir: MANIFESTS });
  const cfg = sourceConfig(manifest, config);
  const validation = await source.validateConfig!(cfg, { baseDir: MANIFESTS });
  if (validation.problems.length) throw new Error(`invalid: ${JSON.stringify(validation.problems)}`);
  const catalog = await source.discover(cfg, ctx);
  const configured: ConfiguredCatalog = {
    streams: catalog.streams
      .filter((s) => !opts.streams || opts.streams.includes(s.name))
      .map((s) => ({
        stream: s,
        sync_mode: opts.incremental && s.supported_sync_modes.includes('incremental') ? 'incremental' : 'full_refresh',
        destination_sync_mode: 'append_dedup',
      })),
  };
  const out: ReadResult = { records: {}, states: {}, state: { streams: { ...(opts.state?.streams ?? {}) } }, messages: [] };
  for await (const m of source.read(cfg, configured, opts.state, ctx)) {
    out.messages.push(m);
    if (m.type === 'RECORD') (out.records[m.record.stream] ??= []).push(m.record.data);
    if (m.type === 'STATE' && m.state.type === 'STREAM') {
      const name = m.state.stream!.stream_descriptor.name;
      (out.states[name] ??= []).push(m.state.stream!.stream_state as Record<string, unknown>);
      out.state.streams[name] = m.state.stream!.stream_state as Record<string, unknown>;
    }
  }
  return out;
}

export async function checkSource(manifest: string, config: Record<string, unknown>) {
  return source.check(sourceConfig(manifest, config), testContext({ baseDir: MANIFESTS }));
}

export async function discoverSource(manifest: string, config: Record<string, unknown>) {
  return source.discover(sourceConfig(manifest, config), testContext({ baseDir: MANIFESTS }));
}
