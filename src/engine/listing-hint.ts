// Whether a run will list stored documents (the end-of-read sweep, ./sweep.ts), known from the
// pipeline before discovery: then the destination may connect for the listing while the run sets
// up (ConnectorContext.listsDocuments). A stream whose modes come from discovery defaults is not
// counted: a wrong "yes" would only open a session that is closed unused at the end of the run.
import type { LoadedConnection } from '../config/load.ts';

export function listsDocuments(conn: LoadedConnection, opts: { shard?: unknown; reindex?: unknown; fullRefresh?: boolean }): boolean {
  if (opts.shard || opts.reindex || !conn.destination.documents) return false;
  return (conn.config.streams ?? []).some(
    (s) => (opts.fullRefresh || s.sync_mode === 'full_refresh') && s.destination_sync_mode === 'append_dedup',
  );
}
