// Loads a custom connector's module the way its own project means it, whatever that project is:
// .ts .mts .cts .js .mjs .cjs, ESM or CommonJS as the extension and the nearest package.json say
// ("type": "module", "commonjs", or no package.json at all), compiled tsc output in either system.
// In every case `sluice/cdk` inside the connector is the very module instance the engine runs
// (one SluiceError class, one zod): JavaScript is loaded natively, CommonJS reaches the ESM kit
// through require(esm), and TypeScript is compiled without loading a second copy of sluice.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import Module from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { MODULE_EXT } from '../runtime-paths.ts';

const TYPESCRIPT = /\.[cm]?ts$/i;

export function isTypeScript(file: string): boolean {
  return TYPESCRIPT.test(file);
}

/** "module" or "commonjs": what Node makes of a file with this name in this place. */
export function moduleSystemOf(file: string): 'module' | 'commonjs' {
  if (/\.m[jt]s$/i.test(file)) return 'module';
  if (/\.c[jt]s$/i.test(file)) return 'commonjs';
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        return (JSON.parse(readFileSync(pkg, 'utf8')) as { type?: string }).type === 'module' ? 'module' : 'commonjs';
      } catch {
        return 'commonjs';
      }
    }
    if (dirname(dir) === dir) return 'commonjs';
  }
}

let tsxRegistered = false;
let cjsHookInstalled = false;

/**
 * TypeScript in a CommonJS place (.cts; .ts under "type": "commonjs" or without package.json):
 * compiled to CommonJS with esbuild as tsc would, so `import` becomes `require` and the kit comes
 * through require(esm). (tsx's CommonJS mode would recompile sluice's own ESM files too, making a
 * second copy of the kit.) Other TypeScript files it requires go the same way.
 */
function installCommonJsTypeScript(): void {
  if (cjsHookInstalled) return;
  cjsHookInstalled = true;
  const require = createRequire(import.meta.url);
  const esbuild = require('esbuild') as typeof import('esbuild');
  const extensions = (Module as unknown as { _extensions: Record<string, (m: unknown, file: string) => void> })._extensions;
  const compile = (mod: unknown, file: string) => {
    const { code } = esbuild.transformSync(readFileSync(file, 'utf8'), {
      loader: 'ts',
      format: 'cjs',
      target: `node${process.versions.node.split('.')[0]}`,
      sourcefile: file,
      sourcemap: 'inline',
    });
    (mod as { _compile(code: string, file: string): void })._compile(code, file);
  };
  for (const ext of ['.ts', '.cts']) extensions[ext] ??= compile;
}

/** Imports a connector file (absolute path). */
export async function importConnectorFile(file: string): Promise<Record<string, unknown>> {
  const url = pathToFileURL(file).href;
  // When sluice runs its own TypeScript sources (a checkout; vitest), whatever runs them (tsx
  // registered by bin/sluice.js, or vite) already compiles TypeScript and maps `sluice/*` to them.
  if (!isTypeScript(file) || MODULE_EXT === '.ts') return (await import(url)) as Record<string, unknown>;
  if (moduleSystemOf(file) === 'commonjs') {
    installCommonJsTypeScript();
    const exports = createRequire(file)(file) as unknown;
    return { ...(exports as object), default: exports };
  }
  // ESM TypeScript: tsx's loader, registered for the process on first use. (A scoped tsImport()
  // would load its own copy of every ESM module beneath the connector, sluice/cdk included.)
  if (!tsxRegistered) {
    const { register } = await import('tsx/esm/api');
    register();
    tsxRegistered = true;
  }
  return (await import(url)) as Record<string, unknown>;
}

/** `name` or `@scope/name`, optionally followed by a subpath (`pkg/connector`). */
const PACKAGE_SPECIFIER = /^((?:@[\w.-]+\/)?[\w.-]+)(\/[\w./-]+)?$/;

export function isPackageSpecifier(specifier: string): boolean {
  return PACKAGE_SPECIFIER.test(specifier);
}

/** The directory of an installed package, looked up from `baseDir` the way Node walks node_modules. */
export function findInstalledPackage(specifier: string, baseDir: string): string | undefined {
  const name = PACKAGE_SPECIFIER.exec(specifier)?.[1];
  if (!name) return undefined;
  for (let dir = baseDir; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json')) && statSync(candidate).isDirectory()) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

const CONDITIONS = new Set(['node', 'import', 'default']);

/** A target of package.json `exports` under Node's `import` conditions (strings, arrays, nesting). */
function pickTarget(target: unknown): string | undefined {
  if (typeof target === 'string') return target;
  if (Array.isArray(target)) return target.map(pickTarget).find((t) => t !== undefined);
  if (target && typeof target === 'object') {
    for (const [condition, value] of Object.entries(target)) {
      if (!CONDITIONS.has(condition)) continue;
      const picked = pickTarget(value);
      if (picked !== undefined) return picked;
    }
  }
  return undefined;
}

/**
 * The file `import '<specifier>'` loads from `baseDir`: the package's `exports` under the `import`
 * condition (an ESM-only package works), subpath patterns included, else its `main`, else index.js.
 */
export function resolvePackageEntry(specifier: string, baseDir: string): string | undefined {
  const match = PACKAGE_SPECIFIER.exec(specifier);
  const dir = findInstalledPackage(specifier, baseDir);
  if (!match || !dir) return undefined;
  const subpath = `.${match[2] ?? ''}`;
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { exports?: unknown; main?: string };
  if (pkg.exports !== undefined) {
    const exp = pkg.exports;
    const map =
      typeof exp === 'object' && exp !== null && !Array.isArray(exp) && Object.keys(exp).some((k) => k.startsWith('.'))
        ? (exp as Record<string, unknown>)
        : { '.': exp };
    let target = subpath in map ? pickTarget(map[subpath]) : undefined;
    if (target === undefined) {
      for (const [key, value] of Object.entries(map)) {
        const star = key.indexOf('*');
        if (star < 0 || !subpath.startsWith(key.slice(0, star)) || !subpath.endsWith(key.slice(star + 1))) continue;
        const hole = subpath.slice(star, subpath.length - (key.length - star - 1));
        target = pickTarget(value)?.replaceAll('*', hole);
        if (target !== undefined) break;
      }
    }
    return target === undefined ? undefined : join(dir, target);
  }
  if (match[2]) return join(dir, match[2]);
  const main = join(dir, pkg.main ?? 'index.js');
  for (const candidate of [main, `${main}.js`, join(main, 'index.js')])
    if (existsSync(candidate) && statSync(candidate).isFile()) return candidate;
  return main;
}
