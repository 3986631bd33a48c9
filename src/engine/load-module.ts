// Loads a custom connector's module the way its own project means it, whatever that project is:
// TypeScript (.ts .mts .cts) through tsx, JavaScript (.js .mjs .cjs, e.g. tsc output) natively; ESM
// or CommonJS as its extension and nearest package.json say ("type": "module", "commonjs", or no
// package.json at all). Either way `sluice/cdk` inside it resolves to the same module instances the
// engine runs, so `instanceof SluiceError` and zod schemas work across the boundary.
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MODULE_EXT } from '../runtime-paths.ts';

const TYPESCRIPT = /\.[cm]?tsx?$/i;

export function isTypeScript(file: string): boolean {
  return TYPESCRIPT.test(file);
}

/** Imports a connector file (absolute path). */
export async function importConnectorFile(file: string): Promise<Record<string, unknown>> {
  const url = pathToFileURL(file).href;
  // When sluice runs its own TypeScript sources (a checkout; vitest), whatever runs them (tsx
  // registered by bin/sluice.js, or vite) already compiles TypeScript and maps `sluice/*` to the
  // sources; a second, scoped tsx would load a second copy of those sources.
  if (!isTypeScript(file) || MODULE_EXT === '.ts') return (await import(url)) as Record<string, unknown>;
  // tsx only for this file and what it imports (scoped, not registered for the whole process).
  const { tsImport } = await import('tsx/esm/api');
  return (await tsImport(url, import.meta.url)) as Record<string, unknown>;
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

/**
 * Imports an npm package as `import '<specifier>'` would from a file in `baseDir`: Node's own ESM
 * resolver picks the entry through the package's `exports` (`import` condition, then `default`;
 * an ESM-only package works), or its `main`. A TypeScript entry is loaded through tsx.
 */
export async function importConnectorPackage(specifier: string, baseDir: string): Promise<{ file: string; mod: Record<string, unknown> }> {
  const { tsImport } = await import('tsx/esm/api');
  let file = specifier;
  const mod = (await tsImport(specifier, {
    parentURL: pathToFileURL(join(baseDir, 'sluice-pipeline.js')).href,
    onImport: (url) => {
      if (file === specifier && url.startsWith('file:')) file = fileURLToPath(url.replace(/[?#].*$/, ''));
    },
  })) as Record<string, unknown>;
  return { file, mod };
}
