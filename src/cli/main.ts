// `sluice` command line. Each command lives in ./commands and registers itself here.
// Only node: built-ins are imported statically: `sluice --version` answers before the commands
// (and zod, pino, the engine behind them) are loaded, so it starts about as fast as node itself.
import { readFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MODULE_EXT, PACKAGE_ROOT } from '../runtime-paths.ts';
import { withNodeNavigator } from '../runtime-navigator.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const VERSION = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** Thrown by commands to end with an exit code after they printed their own output. */
export class ExitCode extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

const COMMANDS = ['sync', 'reindex', 'inspect', 'state', 'search', 'destination', 'init', 'test-connector', 'dead-letters', 'verify'];
/** Top-level commands registered by a module whose file is named otherwise. */
const COMMAND_MODULE: Record<string, string> = {
  validate: 'inspect',
  check: 'inspect',
  discover: 'inspect',
  spec: 'inspect',
  connectors: 'inspect',
};

/**
 * The one command module a command line needs: its first word after the global `--debug`, when that
 * names a command. Loading every module (each pulls in its part of the engine) cost more start-up
 * than most small syncs; help, unknown commands and anything else still load them all.
 */
function commandModules(args: string[]): string[] {
  const word = args.find((a) => a !== '--debug');
  const name = word === undefined ? undefined : (COMMAND_MODULE[word] ?? word);
  return name !== undefined && COMMANDS.includes(name) ? [name] : COMMANDS;
}

export async function main(argv: string[]): Promise<void> {
  const args = argv.slice(2);
  if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
    process.stdout.write(`${VERSION}\n`);
    return;
  }
  const [{ Command, CommanderError }, { exitCodeFor, installRedaction, printError }, { rejectEmptyOptions }] = await Promise.all([
    import('commander'),
    import('./output.ts'),
    import('./commands/shared.ts'),
  ]);
  installRedaction();
  const debug = argv.includes('--debug');
  const program = new Command('sluice')
    .description('Keep vector indexes in step with your data: sources → chunks → embeddings → vector stores')
    .version(VERSION)
    .option('--debug', 'show stack traces and debug logs')
    .showHelpAfterError('(run `sluice --help` for usage)')
    .exitOverride()
    .hook('preAction', rejectEmptyOptions);
  for (const name of commandModules(args)) {
    const file = join(HERE, 'commands', `${name}${MODULE_EXT}`);
    if (!existsSync(file)) continue;
    // withNodeNavigator: a command module may be the first to load pg (../runtime-navigator.ts).
    const mod = (await withNodeNavigator(() => import(pathToFileURL(file).href))) as {
      register: (p: InstanceType<typeof Command>) => void;
    };
    mod.register(program);
  }
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof ExitCode) process.exit(err.code);
    // --help and --version end with 0; any other commander error is a usage error (exit 2).
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    printError(err, { debug, json: argv.includes('--json') });
    process.exit(exitCodeFor(err));
  }
}
