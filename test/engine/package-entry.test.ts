// Which file `import '<package>'` loads, found the way Node does from the pipeline's directory:
// exports under the import condition (nested conditions, arrays, subpath patterns), else main.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { moduleSystemOf, resolvePackageEntry } from '../../src/engine/load-module.ts';
import { tempDir, writeFiles } from '../helpers/cli.ts';

describe('resolvePackageEntry', () => {
  const dir = tempDir('package-entry-');
  const pkg = (name: string, json: object) => ({ [`node_modules/${name}/package.json`]: JSON.stringify({ name, ...json }) });
  writeFiles(dir, {
    ...pkg('esm-only', { type: 'module', exports: { '.': { import: './lib/index.js' } } }),
    ...pkg('dual', { exports: { '.': { require: './cjs/index.cjs', node: { import: './esm/node.mjs', default: './esm/x.mjs' } } } }),
    ...pkg('sugar', { exports: './main.mjs' }),
    ...pkg('array', { exports: { '.': [{ browser: './b.js' }, './fallback.js'] } }),
    ...pkg('@acme/connectors', { exports: { './sources/*': { import: './dist/sources/*.js' }, './package.json': './package.json' } }),
    ...pkg('legacy', { main: 'lib/entry' }),
    'node_modules/legacy/lib/entry.js': 'module.exports = {};',
    ...pkg('require-only', { exports: { '.': { require: './index.cjs' } } }),
    'project/deep/package.json': JSON.stringify({ type: 'module' }),
    'cjs/package.json': JSON.stringify({ type: 'commonjs' }),
  });
  const from = join(dir, 'project/deep');
  const at = (p: string) => join(dir, 'node_modules', p);

  it('follows exports with the import condition, from a nested directory', () => {
    expect(resolvePackageEntry('esm-only', from)).toBe(at('esm-only/lib/index.js'));
    expect(resolvePackageEntry('dual', from)).toBe(at('dual/esm/node.mjs'));
    expect(resolvePackageEntry('sugar', from)).toBe(at('sugar/main.mjs'));
    expect(resolvePackageEntry('array', from)).toBe(at('array/fallback.js'));
    expect(resolvePackageEntry('@acme/connectors/sources/github', from)).toBe(at('@acme/connectors/dist/sources/github.js'));
  });

  it('falls back to main (with Node’s extension search) without exports; nothing for require-only or missing packages', () => {
    expect(resolvePackageEntry('legacy', from)).toBe(at('legacy/lib/entry.js'));
    expect(resolvePackageEntry('require-only', from)).toBeUndefined();
    expect(resolvePackageEntry('not-installed', from)).toBeUndefined();
  });

  it('tells the module system of a file as Node does', () => {
    expect(moduleSystemOf(join(dir, 'project/deep/a.ts'))).toBe('module');
    expect(moduleSystemOf(join(dir, 'project/deep/a.cts'))).toBe('commonjs');
    expect(moduleSystemOf(join(dir, 'cjs/a.ts'))).toBe('commonjs');
    expect(moduleSystemOf(join(dir, 'cjs/a.mts'))).toBe('module');
  });
});
