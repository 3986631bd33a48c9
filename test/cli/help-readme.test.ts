// The README's command table and `--help` describe the same CLI: every command in the table
// exists, every option the table names is in its --help, and every option --help offers is in the
// table. Every `npm run <script>` the README mentions exists.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from '../helpers/cli.ts';
import { runInProcess, useInProcessCli } from '../helpers/cli-in-process.ts';

useInProcessCli();
const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
const table = readme.slice(readme.indexOf('## Command line'), readme.indexOf('### Exit codes'));
const rows = [...table.matchAll(/^\| `sluice ([^`]+)` \|/gm)].map((m) => m[1]);
// Options of test-connector are documented with the kit (docs/custom-connectors.md), not in the table.
const DOCUMENTED_ELSEWHERE = new Set(['test-connector']);

const optionsIn = (text: string) => new Set([...text.matchAll(/(?<![\w-])--([a-z][a-z-]*)/g)].map((m) => m[1]));

describe('README command table and --help agree', () => {
  it('lists the commands', () => {
    expect(rows.length).toBeGreaterThanOrEqual(12);
  });

  it.each(rows)('sluice %s', async (row) => {
    const words = row.split(' ').filter((w, i, all) => all.slice(0, i + 1).every((x) => /^[a-z][a-z-]*$/.test(x)));
    const help = await runInProcess([...words, '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(new RegExp(`^Usage: sluice ${words.join(' ')} `));
    const inHelp = optionsIn(help.stdout.slice(help.stdout.indexOf('Options:')));
    inHelp.delete('help');
    const inReadme = optionsIn(row);
    for (const o of inReadme) expect(inHelp, `README names --${o}`).toContain(o);
    if (!DOCUMENTED_ELSEWHERE.has(words[0])) for (const o of inHelp) expect(inReadme, `--help offers --${o}`).toContain(o);
  });

  it('every `npm run` script the README names exists', () => {
    const scripts = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).scripts as Record<string, string>;
    const named = [...readme.matchAll(/npm run ([a-z:]+)/g)].map((m) => m[1]);
    expect(named).toContain('lint');
    for (const n of named) expect(scripts, n).toHaveProperty(n);
    // What the README says lint runs is what it runs.
    expect(readme).toMatch(/npm run lint\s+# type check \(tsc\) \+ formatting \(prettier --check\)/);
    expect(scripts.lint).toMatch(/tsc --noEmit/);
    expect(scripts.lint).toMatch(/prettier --check/);
  });
});
