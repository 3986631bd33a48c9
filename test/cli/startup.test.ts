// Start-up cost: a command loads the modules it needs, not every command's. A scheduled sync starts a
// fresh process each time, so what it imports is paid on every run. A module-loader hook in the
// child records every module it resolves.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { fileToJsonlPipeline, runCli, tempDir } from '../helpers/cli.ts';

/** Runs the CLI with a resolve hook; returns its result and the URLs of the modules it loaded. */
async function loadedModules(args: string[], dir: string, nodeOptions = '') {
  const hooks = join(dir, 'trace-hooks.mjs');
  writeFileSync(
    hooks,
    `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  appendFileSync(process.env.TRACE_OUT, resolved.url + '\\n');
  return resolved;
}`,
  );
  const register = join(dir, 'trace.mjs');
  writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
  const out = join(dir, `modules-${args[0]}.txt`);
  writeFileSync(out, '');
  const result = await runCli(args, {
    cwd: dir,
    env: { NODE_OPTIONS: `--import ${pathToFileURL(register).href} ${nodeOptions}`, TRACE_OUT: out },
  });
  return { result, modules: readFileSync(out, 'utf8').split('\n').filter(Boolean) };
}

const commandModules = (modules: string[]) =>
  [...new Set(modules.map((u) => /\/cli\/commands\/([\w-]+)\.[jt]s$/.exec(u)?.[1]).filter((m) => m !== undefined))].sort();

describe('start-up: a command loads what it needs', () => {
  it('validate and a hash-embedder sync load neither the other commands nor the openai package; validate not the engine', async () => {
    const dir = tempDir();
    fileToJsonlPipeline(dir, {
      files: { 'docs/a.md': '# A\n\nalpha beta' },
      connection: { embedding: { provider: 'hash', dimensions: 8 } },
    });

    const validate = await loadedModules(['validate', 'p.yaml'], dir);
    expect(validate.result.code, validate.result.stderr).toBe(0);
    expect(validate.result.stdout).toContain('valid');
    expect(commandModules(validate.modules)).toEqual(['inspect', 'shared']);
    expect(validate.modules.filter((u) => u.includes('/node_modules/openai/'))).toEqual([]);
    // validate reads files only: no engine, state stores or LMDB.
    expect(validate.modules.filter((u) => /\/engine\/sync\.[jt]s$|\/node_modules\/lmdb\//.test(u))).toEqual([]);

    const sync = await loadedModules(['--debug', 'sync', 'p.yaml', '--json'], dir);
    expect(sync.result.code, sync.result.stderr).toBe(0);
    expect(JSON.parse(sync.result.stdout).status).toBe('succeeded');
    expect(readFileSync(join(dir, 'out.jsonl'), 'utf8')).toContain('alpha beta');
    expect(commandModules(sync.modules)).toEqual(['shared', 'sync']);
    expect(sync.modules.filter((u) => u.includes('/node_modules/openai/'))).toEqual([]);
  });

  it('a sync of a file source loads no Kafka client, LMDB or PostgreSQL driver, and (Node 20) no fetch', async () => {
    const dir = tempDir();
    fileToJsonlPipeline(dir, {
      files: { 'docs/a.md': '# A\n\nalpha beta', 'docs/b.md': '# B\n\ngamma' },
      connection: { embedding: { provider: 'hash', dimensions: 8 } },
    });
    // CommonJS loads (lmdb is required on first use, kafkajs is CommonJS) do not pass the ESM
    // hook on Node 20: a preload lists require.cache and Node's own modules when the child exits.
    const preload = join(dir, 'loaded.cjs');
    const out = join(dir, 'loaded.json');
    writeFileSync(
      preload,
      `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify({ cjs: Object.keys(require.cache), builtin: process.moduleLoadList })));\n`,
    );
    const { result, modules } = await loadedModules(['sync', 'p.yaml', '--json'], dir, `--require ${preload}`);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).connections[0].streams.docs).toMatchObject({ records_read: 2, records_written: 2 });
    const loaded = JSON.parse(readFileSync(out, 'utf8')) as { cjs: string[]; builtin: string[] };
    const all = [...modules, ...loaded.cjs];
    expect(all.filter((u) => /[\\/]node_modules[\\/](kafkajs|lmdb|@aws-sdk|openai|prom-client|pg)[\\/]/.test(u))).toEqual([]);
    expect(all.filter((u) => /lmdb-lazy/.test(u)).length).toBeGreaterThan(0); // the trace sees the engine's modules
    if (Number(process.versions.node.split('.')[0]) < 21) expect(loaded.builtin.filter((m) => m.includes('undici'))).toEqual([]);
  });

  it('help and an unknown command still see every command', async () => {
    const dir = tempDir();
    const help = await loadedModules(['--help'], dir);
    expect(help.result.code).toBe(0);
    for (const command of ['sync', 'validate', 'reindex', 'verify', 'test-connector', 'dead-letters'])
      expect(help.result.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'));
    const unknown = await loadedModules(['synk', 'p.yaml'], dir);
    expect(unknown.result.code).toBe(2);
    expect(unknown.result.stderr).toContain('sync'); // commander's "Did you mean sync?"
  });
});
