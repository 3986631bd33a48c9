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
// A row's first cell, e.g. "sync <pipeline> --shard I/N` (or `--shards N` …)"; `\|` inside it is an
// escaped "or" (`dead-letters list\|retry\|purge`).
const rows = [...table.matchAll(/^\| `sluice ((?:\\\||[^|])+?) \|/gm)].map((m) => m[1].replace(/`$/, ''));
// One command may have several rows (sync: the basics, sharding, metrics): --help is checked against
// all of them together. `a\|b` in the command words stands for the sub-commands a and b.
const commandsOf = (row: string) => {
  const words: string[][] = [[]];
  for (const w of row.split(' ')) {
    if (!/^[a-z][a-z-]*(\\\|[a-z][a-z-]*)*$/.test(w)) break;
    const alternatives = w.split('\\|');
    words.splice(0, words.length, ...words.flatMap((prefix) => alternatives.map((a) => [...prefix, a])));
  }
  return words;
};
// Options of test-connector are documented with the kit (docs/custom-connectors.md), not in the table.
const DOCUMENTED_ELSEWHERE = new Set(['test-connector']);

const optionsIn = (text: string) => new Set([...text.matchAll(/(?<![\w-])--([a-z][a-z-]*)/g)].map((m) => m[1]));

describe('README command table and --help agree', () => {
  it('lists the commands', () => {
    expect(rows.length).toBeGreaterThanOrEqual(12);
  });

  it.each(rows)('sluice %s', async (row) => {
    const inReadme = optionsIn(row);
    const inHelp = new Set<string>();
    for (const words of commandsOf(row)) {
      const help = await runInProcess([...words, '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^Usage: sluice ${words.join(' ')} `));
      const offered = optionsIn(help.stdout.slice(help.stdout.indexOf('Options:')));
      offered.delete('help');
      for (const o of offered) inHelp.add(o);
      const inAllRows = optionsIn(rows.filter((r) => commandsOf(r).some((c) => c.join(' ') === words.join(' '))).join(' '));
      if (!DOCUMENTED_ELSEWHERE.has(words[0])) for (const o of offered) expect(inAllRows, `--help offers --${o}`).toContain(o);
    }
    for (const o of inReadme) expect(inHelp, `README names --${o}`).toContain(o);
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
