// What `open` would refuse, found without changing anything (for `sluice sync --dry-run`): the
// vector size of the existing tables against the embedder's, and pgvector's index size limit.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ConnectorContext, OpenOptions } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type { PgvectorConfig } from './config.ts';
import { MAX_INDEXED_DIMENSIONS, REQUIRED_COLUMNS, inspectTable } from './schema.ts';
import { alteredTable, tableShapeProblems } from './shape.ts';
import { openSession, pgError } from './session.ts';
import { tableNameFor } from './sql.ts';

export async function preflight(config: PgvectorConfig, ctx: ConnectorContext, options: OpenOptions): Promise<void> {
  const dims = options.dimensions;
  if (dims && dims > MAX_INDEXED_DIMENSIONS && config.index !== 'none') {
    throw new SluiceError(
      `pgvector cannot build a ${config.index} index on vectors of ${dims} dimensions (at most ${MAX_INDEXED_DIMENSIONS})`,
      {
        kind: 'config',
        where: 'destination.index',
        hint: `set index: none, or ask the embedding model for ${MAX_INDEXED_DIMENSIONS} dimensions or fewer (embedding.dimensions)`,
      },
    );
  }
  if (!dims) return;
  // An embedded database that was never written holds no tables; opening it would create it.
  if (config.embedded && !existsSync(join(resolve(ctx.baseDir, config.embedded), 'pgdata'))) return;
  const session = await openSession(config, ctx).catch((err) => {
    throw err instanceof SluiceError ? err : pgError(err, 'destination');
  });
  try {
    for (const s of options.streams) {
      if (s.destinationSyncMode === 'overwrite') continue; // an overwrite builds a new table
      const table = tableNameFor(s.name, config.table);
      const info = await inspectTable(session.client, config.schema, table);
      const missing = REQUIRED_COLUMNS.filter((c) => info.exists && !info.columns.includes(c));
      const altered = info.exists ? await tableShapeProblems(session.client, config.schema, table) : [];
      if (missing.length) altered.unshift(`it lacks the column(s) ${missing.join(', ')}`);
      if (altered.length)
        throw alteredTable(config.schema, table, altered, `connection ${ctx.connection}, stream ${s.name}, destination ${session.label}`);
      if (info.exists && info.dimensions !== undefined && info.dimensions !== dims) {
        throw new SluiceError(
          `table ${config.schema}.${table} has ${info.dimensions} dimensions, embedding model${options.embedderName ? ` ${options.embedderName}` : ''} gives ${dims}`,
          {
            kind: 'destination',
            where: `connection ${ctx.connection}, stream ${s.name}, destination ${session.label}`,
            hint: 'write to another table (destination.table), or run the stream once in overwrite mode (full_refresh) to rebuild it with the new model',
          },
        );
      }
    }
  } finally {
    await session.close();
  }
}
