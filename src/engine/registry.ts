// Finds connectors: built-ins by name, custom ones by path (relative to the pipeline file) or npm
// package. Built-ins are loaded exactly like custom connectors: same contract, no shortcuts.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Destination, Source } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import { closest } from '../config/suggest.ts';
import { validateConnectorModule } from '../cdk/validate.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BUILTIN = {
  source: ['file', 'postgres', 'kafka', 's3', 'declarative', 'airbyte'],
  destination: ['jsonl', 'pgvector', 'qdrant', 'pinecone', 'airbyte'],
} as const;

export function builtinPath(kind: 'source' | 'destination', name: string): string {
  return join(ROOT, 'connectors', `${kind}-${name}`, 'index.ts');
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
  if ((BUILTIN[kind] as readonly string[]).includes(type)) {
    file = builtinPath(kind, type);
  } else if (type.startsWith('.') || isAbsolute(type)) {
    file = isAbsolute(type) ? type : resolve(baseDir, type);
    if (!existsSync(file))
      throw new SluiceError(`${kind} module not found: ${file}`, { kind: 'config', hint: 'paths are relative to the pipeline file' });
  } else if (/^(@[\w.-]+\/)?[\w.-]+$/.test(type)) {
    try {
      file = createRequire(join(baseDir, 'noop.js')).resolve(type);
    } catch {
      const guess = closest(type, BUILTIN[kind]);
      throw new UnknownConnectorError(`unknown ${kind} type "${type}"`, {
        kind: 'config',
        hint: guess
          ? `did you mean "${guess}"?`
          : `built-in ${kind}s: ${BUILTIN[kind].join(', ')}; or a path like ./my-${kind}.ts, or an installed npm package`,
      });
    }
  } else {
    throw new UnknownConnectorError(`unknown ${kind} type "${type}"`, {
      kind: 'config',
      hint: `built-in ${kind}s: ${BUILTIN[kind].join(', ')}`,
    });
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    throw new SluiceError(`cannot load ${kind} "${type}" from ${file}: ${(err as Error).message}`, { kind: 'config' });
  }
  return validateConnectorModule(mod, file, kind);
}
