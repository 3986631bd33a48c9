import type { Command } from 'commander';
import { loadPipeline } from '../../config/load.ts';
import { connectorContext } from '../../engine/sync.ts';
import type { SourceState } from '../../protocol/connector.ts';
import { FileStateStore } from '../../state/index.ts';
import { createLogger, printJson } from '../output.ts';
import { renderStates } from '../render.ts';
import { pickConnection } from './shared.ts';

export function register(program: Command) {
  const state = program.command('state').description('Show or reset the saved state (cursors, offsets, LSNs) of connections');
  state
    .command('show')
    .description('Print the saved state (cursors, offsets, LSNs) of each connection and stream')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('-s, --stream <name...>', 'only these streams')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { connection?: string; stream?: string[]; json?: boolean }) => {
      const pipeline = await loadPipeline(file);
      const store = new FileStateStore(pipeline.stateDir);
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      const out: Record<string, unknown> = {};
      for (const c of conns) {
        const state = (await store.load(c.config.name)) ?? null;
        out[c.config.name] = state && opts.stream ? onlyStreams(state, opts.stream) : state;
      }
      if (opts.json) printJson(out);
      else process.stdout.write(renderStates(out as Parameters<typeof renderStates>[0]));
    });
  state
    .command('reset')
    .description('Forget saved state so the next sync starts from scratch (data already written stays)')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('-s, --stream <name...>', 'only these streams')
    .action(async (file: string, opts: { connection?: string; stream?: string[] }) => {
      const pipeline = await loadPipeline(file);
      const store = new FileStateStore(pipeline.stateDir);
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      for (const c of conns) {
        await store.reset(c.config.name, opts.stream);
        // Exactly-once destinations keep a copy of the state with the data: reset it there too.
        const ctx = await connectorContext(pipeline, c, { signal: new AbortController().signal, logger: createLogger({}) });
        await c.destination.resetState?.(c.destinationConfig, ctx, opts.stream);
        process.stdout.write(`reset state of ${c.config.name}${opts.stream ? ` (streams: ${opts.stream.join(', ')})` : ''}\n`);
      }
    });
}

/** The state of the named streams only (the shared part, e.g. a CDC position, belongs to all of them). */
function onlyStreams(state: SourceState, names: string[]): SourceState {
  return {
    streams: Object.fromEntries(Object.entries(state.streams).filter(([name]) => names.includes(name))),
    ...(state.shared ? { shared: state.shared } : {}),
  };
}
