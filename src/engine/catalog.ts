// Turns the pipeline's `streams:` (or, when absent, everything the source discovers) into a
// configured catalog, filling defaults from what the source declares.
import type { LoadedConnection } from '../config/load.ts';
import type { StreamConfig } from '../config/schema.ts';
import { closest } from '../config/suggest.ts';
import type { AirbyteCatalog, ConfiguredCatalog, ConfiguredStream } from '../protocol/messages.ts';
import { SluiceError } from '../protocol/errors.ts';

export function configureCatalog(conn: LoadedConnection, discovered: AirbyteCatalog, opts: { fullRefresh?: boolean }): ConfiguredCatalog {
  const byName = new Map(discovered.streams.map((s) => [s.name, s]));
  const wanted: StreamConfig[] = conn.config.streams ?? discovered.streams.map((s) => ({ name: s.name }));
  const where = (i: number) => `connections[${conn.index}].streams[${i}]`;
  const streams: ConfiguredStream[] = wanted.map((w, i) => {
    const stream = byName.get(w.name);
    if (!stream) {
      const guess = closest(w.name, [...byName.keys()]);
      throw new SluiceError(`source has no stream "${w.name}"`, {
        kind: 'config',
        where: `${where(i)}.name`,
        hint: guess ? `did you mean "${guess}"?` : `streams found: ${[...byName.keys()].slice(0, 20).join(', ') || '(none)'}`,
      });
    }
    const sourceCursor = stream.source_defined_cursor || conn.source.capabilities.sourceDefinedCursor;
    let syncMode: StreamConfig['sync_mode'] =
      w.sync_mode ??
      (stream.supported_sync_modes.includes('incremental') && (sourceCursor || stream.default_cursor_field?.length)
        ? 'incremental'
        : 'full_refresh');
    if (opts.fullRefresh) syncMode = 'full_refresh';
    const cdc = syncMode === 'cdc';
    const wire: 'full_refresh' | 'incremental' = cdc ? 'incremental' : (syncMode as 'full_refresh' | 'incremental');
    if (!stream.supported_sync_modes.includes(wire)) {
      throw new SluiceError(
        `stream "${w.name}" does not support sync_mode ${syncMode}; it supports ${stream.supported_sync_modes.join(', ')}`,
        {
          kind: 'config',
          where: `${where(i)}.sync_mode`,
        },
      );
    }
    const primaryKey: string[][] = w.primary_key ?? stream.source_defined_primary_key ?? [];
    const cursorField: string[] | undefined = w.cursor_field ?? stream.default_cursor_field;
    if (wire === 'incremental' && !cdc && !sourceCursor && !cursorField?.length) {
      throw new SluiceError(`stream "${w.name}" is incremental but has no cursor_field`, {
        kind: 'config',
        where: where(i),
        hint: 'add cursor_field: [updated_at] (a column that grows on every change)',
      });
    }
    const destinationSyncMode = w.destination_sync_mode ?? (primaryKey.length ? 'append_dedup' : 'append');
    if (destinationSyncMode === 'append_dedup' && !primaryKey.length) {
      throw new SluiceError(`stream "${w.name}" uses append_dedup but has no primary key`, {
        kind: 'config',
        where: where(i),
        hint: 'add primary_key: [[id]] to the stream, or use destination_sync_mode: append',
      });
    }
    return {
      stream,
      sync_mode: wire,
      destination_sync_mode: destinationSyncMode,
      ...(cursorField?.length ? { cursor_field: cursorField } : {}),
      primary_key: primaryKey,
      ...(cdc ? { cdc: true } : {}),
    };
  });
  return { streams };
}
