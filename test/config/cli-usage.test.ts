// The command line as a script sees it: --version, usage errors exit 2 (commander's unknown
// option/command, a missing argument), help exits 0, and NO_COLOR turns colour off.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO, runCli, STACK_LINE } from '../helpers/cli.ts';

const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

describe('sluice command line', () => {
  it('--version prints the package version', async () => {
    for (const flag of ['--version', '-V']) {
      const r = await runCli([flag]);
      expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: `${version}\n` });
    }
  });

  it.each([
    [['--bogus'], "error: unknown option '--bogus'"],
    [['frobnicate'], "error: unknown command 'frobnicate'"],
    [['sync'], "error: missing required argument 'pipeline'"],
    [['sync', 'x.yaml', '--nope'], "error: unknown option '--nope'"],
  ])('usage error %j exits 2 with a one-line reason', async (args, message) => {
    const r = await runCli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toMatch(STACK_LINE);
  });

  it('--help exits 0', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: sluice');
  });

  it('errors are red only when colour is wanted: FORCE_COLOR on, NO_COLOR off (NO_COLOR wins)', async () => {
    const colored = await runCli(['validate', 'no-such.yaml'], { env: { FORCE_COLOR: '1', NO_COLOR: '' } });
    expect(colored.code).toBe(2);
    expect(colored.stderr).toContain('\x1b[31merror:\x1b[39m pipeline file not found');
    const plain = await runCli(['validate', 'no-such.yaml'], { env: { FORCE_COLOR: '1', NO_COLOR: '1' } });
    expect(plain.stderr).toContain('error: pipeline file not found');
    expect(plain.stderr).not.toContain('\x1b[');
  });
});
