import type { Command } from 'commander';
import { loadPipeline } from '../../config/load.ts';
import { connectorContext } from '../../engine/sync.ts';
import { openStateStore } from '../../state/index.ts';
import { createLogger, printJson } from '../output.ts';
import { pickConnection } from './shared.ts';

export function register(program: Command) {
  const state = program.command('state').description('Show or reset the saved state (cursors, offsets, LSNs) of connections');
  state
    .command('show')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .action(async (file: string, opts: { connection?: string }) => {
      const pipeline = await loadPipeline(file);
      const store = openStateStore(pipeline);
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      const out: Record<string, unknown> = {};
      try {
        for (const c of conns) out[c.config.name] = (await store.load(c.config.name)) ?? null;
      } finally {
        await store.close?.();
      }
      printJson(out);
    });
  state
    .command('reset')
    .description('Forget saved state so the next sync starts from scratch (data already written stays)')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('-s, --stream <name...>', 'only these streams')
    .action(async (file: string, opts: { connection?: string; stream?: string[] }) => {
      const pipeline = await loadPipeline(file);
      const store = openStateStore(pipeline);
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      try {
        for (const c of conns) {
          await store.reset(c.config.name, opts.stream);
          // Exactly-once destinations keep a copy of the state with the data: reset it there too.
          const ctx = await connectorContext(pipeline, c, { signal: new AbortController().signal, logger: createLogger({}) });
          await c.destination.resetState?.(c.destinationConfig, ctx, opts.stream);
          process.stdout.write(`reset state of ${c.config.name}${opts.stream ? ` (streams: ${opts.stream.join(', ')})` : ''}\n`);
        }
      } finally {
        await store.close?.();
      }
    });
}
