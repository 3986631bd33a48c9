// `sluice` command line. Each command lives in ./commands and registers itself here.
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { exitCodeFor, installRedaction, printError } from './output.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const VERSION = (JSON.parse(readFileSync(join(HERE, '../../package.json'), 'utf8')) as { version: string }).version;

/** Thrown by commands to end with an exit code after they printed their own output. */
export class ExitCode extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

const COMMANDS = ['sync', 'inspect', 'state', 'search', 'destination', 'init', 'test-connector', 'dead-letters'];

export async function main(argv: string[]): Promise<void> {
  installRedaction();
  const debug = argv.includes('--debug');
  const program = new Command('sluice')
    .description('Keep vector indexes in step with your data: sources → chunks → embeddings → vector stores')
    .version(VERSION)
    .option('--debug', 'show stack traces and debug logs')
    .showHelpAfterError('(run `sluice --help` for usage)')
    .exitOverride();
  for (const name of COMMANDS) {
    const file = join(HERE, 'commands', `${name}.ts`);
    if (!existsSync(file)) continue;
    const mod = (await import(pathToFileURL(file).href)) as { register: (p: Command) => void };
    mod.register(program);
  }
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof ExitCode) process.exit(err.code);
    if (err instanceof CommanderError) process.exit(err.exitCode);
    printError(err, { debug });
    process.exit(exitCodeFor(err));
  }
}
