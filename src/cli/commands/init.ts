// `sluice init connector <name> --kind source|destination [--dir .]`
import type { Command } from 'commander';
import { relative } from 'node:path';
import { scaffoldConnector } from '../../cdk/scaffold.ts';
import { SluiceError } from '../../protocol/errors.ts';

export function register(program: Command) {
  const init = program.command('init').description('Create project files');
  init
    .command('connector')
    .description('Write a working custom connector skeleton, its conformance test and an example pipeline')
    .argument('<name>', 'connector name, e.g. my-api (lowercase letters, digits, "-")')
    .option('-k, --kind <kind>', 'source or destination', 'source')
    .option('-d, --dir <dir>', 'project directory to write into', '.')
    .option('-f, --force', 'replace files that already exist')
    .action(async (name: string, opts: { kind: string; dir: string; force?: boolean }) => {
      if (opts.kind !== 'source' && opts.kind !== 'destination') {
        throw new SluiceError(`--kind must be "source" or "destination", not "${opts.kind}"`, { kind: 'config' });
      }
      const result = await scaffoldConnector({ name, kind: opts.kind, dir: opts.dir, force: opts.force });
      const rel = (f: string) => relative(process.cwd(), f) || f;
      process.stdout.write(
        [
          `created ${opts.kind} connector "${name}":`,
          ...result.files.map((f) => `  ${rel(f)}`),
          '',
          'next steps:',
          `  npx sluice test-connector ${rel(result.pipeline)}    (conformance checks)`,
          `  npx vitest run ${rel(result.test)}    (the same checks as a test)`,
          `  npx sluice sync ${rel(result.pipeline)}    (run it)`,
          '',
        ].join('\n'),
      );
    });
}
