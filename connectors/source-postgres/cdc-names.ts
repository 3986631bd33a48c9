// Names and positions a CDC run continues from, apart from the replication code (./cdc.ts): a
// full-refresh or incremental run needs these but should not load the logical-replication client.
import { createHash } from 'node:crypto';
import type { SourceState } from '../../src/protocol/connector.ts';
import type { PostgresSourceConfig } from './config.ts';
import { lsnFromText, type Lsn } from './pgoutput.ts';

const baseName = (connection: string) => 'sluice_' + connection.toLowerCase().replace(/[^a-z0-9_]+/g, '_');

/**
 * Replication object names: configured, or derived from the connection name. A publication lives
 * in one database; a slot is server-wide, so the default slot name also carries a hash of the
 * database: connections of the same name in two databases of one server never share a slot.
 */
export function cdcNames(cfg: PostgresSourceConfig, connection: string, database: string): { slot: string; publication: string } {
  return {
    slot: cfg.cdc.slot ?? defaultSlotName(connection, database),
    publication: cfg.cdc.publication ?? baseName(connection).slice(0, 63),
  };
}

export function defaultSlotName(connection: string, database: string): string {
  const hash = createHash('sha256').update(database).digest('hex').slice(0, 8);
  return `${baseName(connection).slice(0, 63 - 9)}_${hash}`;
}

/** The slot name sluice used before it carried the database hash (`sluice_<connection>`). */
export const legacySlotName = (connection: string): string => baseName(connection).slice(0, 63);

/** The slot a saved CDC state continues on (it may have been created under the legacy name). */
export function savedSlot(state: SourceState | undefined): string | undefined {
  const slot = (state?.shared as Record<string, unknown> | undefined)?.slot;
  return typeof slot === 'string' ? slot : undefined;
}

export function lsnOfState(state: { global?: { shared_state?: Record<string, unknown> } } | undefined): Lsn | undefined {
  const text = state?.global?.shared_state?.lsn;
  return typeof text === 'string' ? lsnFromText(text) : undefined;
}
