import type { Command } from 'commander';
import { connectorContext } from '../../engine/sync.ts';
import { SluiceError } from '../../protocol/errors.ts';
import { createLogger, printJson } from '../output.ts';
import { renderReport } from '../render.ts';
import { pipelineAndConnection } from './shared.ts';

export function register(program: Command) {
  const dest = program.command('destination').description('Destination maintenance');
  dest
    .command('maintain')
    .description('Report table/index sizes; with --reindex, rebuild the vector index')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'the connection (required when the file has several)')
    .option('--reindex', 'rebuild indexes (REINDEX on pgvector)')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { connection?: string; reindex?: boolean; json?: boolean }) => {
      const { pipeline, conn } = await pipelineAndConnection(file, opts.connection);
      if (!conn.destination.maintain) {
        throw new SluiceError(`destination "${conn.config.destination.type}" has no maintenance tasks`, { kind: 'config' });
      }
      const logger = createLogger({ json: opts.json });
      const ctx = await connectorContext(pipeline, conn, { signal: new AbortController().signal, logger });
      const streams =
        conn.config.streams?.map((s) => s.name) ?? (await conn.source.discover(conn.sourceConfig, ctx)).streams.map((s) => s.name);
      const report = await conn.destination.maintain(conn.destinationConfig, ctx, { reindex: !!opts.reindex, streams });
      if (opts.json) printJson(report);
      else process.stdout.write(renderReport(report));
    });
}
