import type { Command } from 'commander';
import type { LoadedConnection, LoadedPipeline } from '../../config/load.ts';
import { loadPipeline } from '../../config/load.ts';
import { SluiceError } from '../../protocol/errors.ts';

export async function pipelineAndConnection(
  file: string,
  connection?: string,
): Promise<{ pipeline: LoadedPipeline; conn: LoadedConnection }> {
  const pipeline = await loadPipeline(file);
  return { pipeline, conn: pickConnection(pipeline, connection) };
}

export function pickConnection(pipeline: LoadedPipeline, name?: string): LoadedConnection {
  if (!name) {
    if (pipeline.connections.length > 1) {
      throw new SluiceError(`${pipeline.file} has ${pipeline.connections.length} connections; choose one`, {
        kind: 'config',
        hint: `add --connection with one of: ${pipeline.connections.map((c) => c.config.name).join(', ')}`,
      });
    }
    return pipeline.connections[0];
  }
  const conn = pipeline.connections.find((c) => c.config.name === name);
  if (!conn) {
    throw new SluiceError(`no connection named "${name}" in ${pipeline.file}`, {
      kind: 'config',
      hint: `connections: ${pipeline.connections.map((c) => c.config.name).join(', ')}`,
    });
  }
  return conn;
}

/** SIGINT/SIGTERM abort the run gracefully; a second signal ends the process at once. */
export function abortOnSignals(): { signal: AbortSignal; received: () => NodeJS.Signals | undefined; dispose: () => void } {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const handler = (sig: NodeJS.Signals) => {
    if (received) process.exit(sig === 'SIGINT' ? 130 : 143);
    received = sig;
    process.stderr.write(
      `\nreceived ${sig}: stopping — flushing what was read and saving the last committed state (send again to force)\n`,
    );
    controller.abort();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    received: () => received,
    dispose: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/**
 * Runs before every command action: an option given an empty value (`--connection ""`, often an
 * unset shell variable) is refused instead of reading as "not given" (which would run everything).
 */
export function rejectEmptyOptions(_program: Command, action: Command): void {
  for (const [key, value] of Object.entries(action.opts())) {
    const values = Array.isArray(value) ? value : [value];
    if (values.some((v) => typeof v === 'string' && v.trim() === '')) {
      const flag = action.options.find((o) => o.attributeName() === key)?.long ?? key;
      throw new SluiceError(`${flag} was given an empty value`, {
        kind: 'config',
        hint: `pass a name (${flag} NAME), or leave the option out; an unset shell variable expands to ""`,
      });
    }
  }
}
