// Finds connectors: built-ins by name, custom ones by path (relative to the pipeline file) or npm
// package. Built-ins are loaded exactly like custom connectors: same contract, no shortcuts.
import { existsSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Destination, Source } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import { closest } from '../config/suggest.ts';
import { validateConnectorModule } from '../cdk/validate.ts';
import { CODE_ROOT, MODULE_EXT } from '../runtime-paths.ts';
import { withNodeNavigator } from '../runtime-navigator.ts';
import { findInstalledPackage, importConnectorFile, isPackageSpecifier, resolvePackageEntry } from './load-module.ts';

export const BUILTIN = {
  source: ['file', 'postgres', 'kafka', 's3', 'declarative', 'airbyte'],
  destination: ['jsonl', 'pgvector', 'qdrant', 'pinecone', 'airbyte'],
} as const;

export function builtinPath(kind: 'source' | 'destination', name: string): string {
  return join(CODE_ROOT, 'connectors', `${kind}-${name}`, `index${MODULE_EXT}`);
}

export function availableBuiltins(kind: 'source' | 'destination'): string[] {
  return BUILTIN[kind].filter((n) => existsSync(builtinPath(kind, n)));
}

/** No connector of that name (as opposed to one that exists but fails to load). */
export class UnknownConnectorError extends SluiceError {}

const cache = new Map<string, Promise<Source | Destination>>();

export function loadConnector(kind: 'source', type: string, baseDir: string): Promise<Source>;
export function loadConnector(kind: 'destination', type: string, baseDir: string): Promise<Destination>;
export function loadConnector(kind: 'source' | 'destination', type: string, baseDir: string): Promise<Source | Destination>;
export function loadConnector(kind: 'source' | 'destination', type: string, baseDir: string): Promise<Source | Destination> {
  const key = `${kind}:${baseDir}:${type}`;
  let p = cache.get(key);
  if (!p) {
    p = load(kind, type, baseDir);
    cache.set(key, p);
    p.catch(() => cache.delete(key));
  }
  return p;
}

async function load(kind: 'source' | 'destination', type: string, baseDir: string): Promise<Source | Destination> {
  let file: string;
  const builtin = (BUILTIN[kind] as readonly string[]).includes(type);
  if (builtin) {
    file = builtinPath(kind, type);
  } else if (type.startsWith('.') || isAbsolute(type)) {
    file = isAbsolute(type) ? type : resolve(baseDir, type);
    if (!existsSync(file))
      throw new SluiceError(`${kind} module not found: ${file}`, { kind: 'config', hint: 'paths are relative to the pipeline file' });
  } else if (isPackageSpecifier(type) && findInstalledPackage(type, baseDir)) {
    // An npm package, resolved from the pipeline's directory through its `exports` as `import` does.
    const entry = resolvePackageEntry(type, baseDir);
    if (!entry || !existsSync(entry))
      throw new SluiceError(`${kind} package "${type}" has no entry point for import (its package.json "exports" or "main")`, {
        kind: 'config',
      });
    file = entry;
  } else {
    const guess = closest(type, BUILTIN[kind]);
    throw new UnknownConnectorError(`unknown ${kind} type "${type}"`, {
      kind: 'config',
      hint: guess
        ? `did you mean "${guess}"?`
        : `built-in ${kind}s: ${BUILTIN[kind].join(', ')}; or a path like ./my-${kind}.ts, or an installed npm package`,
    });
  }
  let mod: Record<string, unknown>;
  try {
    // A built-in is sluice's own code: compiled with it (dist/), or run by whatever runs its sources.
    // A built-in may be the first to load pg: withNodeNavigator (../runtime-navigator.ts).
    mod = builtin
      ? ((await withNodeNavigator(() => import(pathToFileURL(file).href))) as Record<string, unknown>)
      : await importConnectorFile(file);
  } catch (err) {
    throw new SluiceError(`cannot load ${kind} "${type}" from ${file}: ${(err as Error).message}`, { kind: 'config' });
  }
  return validateConnectorModule(mod, file, kind);
}
