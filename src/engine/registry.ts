// Finds connectors: built-ins by name, custom ones by path (relative to the pipeline file) or npm
// package. Built-ins are loaded exactly like custom connectors: same contract, no shortcuts.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Destination, Source } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import { closest } from '../config/suggest.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BUILTIN = {
  source: ['file', 'postgres', 'kafka', 's3'],
  destination: ['jsonl', 'pgvector', 'qdrant', 'pinecone'],
} as const;

export function builtinPath(kind: 'source' | 'destination', name: string): string {
  return join(ROOT, 'connectors', `${kind}-${name}`, 'index.ts');
}

export function availableBuiltins(kind: 'source' | 'destination'): string[] {
  return BUILTIN[kind].filter((n) => existsSync(builtinPath(kind, n)));
}

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
    if (!existsSync(file)) throw new SluiceError(`${kind} module not found: ${file}`, { kind: 'config', hint: 'paths are relative to the pipeline file' });
  } else if (/^(@[\w.-]+\/)?[\w.-]+$/.test(type)) {
    try {
      file = createRequire(join(baseDir, 'noop.js')).resolve(type);
    } catch {
      const guess = closest(type, BUILTIN[kind]);
      throw new SluiceError(`unknown ${kind} type "${type}"`, {
        kind: 'config',
        hint: guess
          ? `did you mean "${guess}"?`
          : `built-in ${kind}s: ${BUILTIN[kind].join(', ')}; or a path like ./my-${kind}.ts, or an installed npm package`,
      });
    }
  } else {
    throw new SluiceError(`unknown ${kind} type "${type}"`, { kind: 'config', hint: `built-in ${kind}s: ${BUILTIN[kind].join(', ')}` });
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    throw new SluiceError(`cannot load ${kind} "${type}" from ${file}: ${(err as Error).message}`, { kind: 'config' });
  }
  return validateConnectorModule(mod, file, kind);
}

/** The default export (or a named `source`/`destination` export) must be a connector of the right kind. */
export function validateConnectorModule(mod: Record<string, unknown>, file: string, kind: 'source' | 'destination'): Source | Destination {
  const c = (mod.default ?? mod[kind]) as Record<string, any> | undefined;
  const missing: string[] = [];
  if (!c || typeof c !== 'object') throw new SluiceError(`${file}: no default export (expected a ${kind} made with define${kind === 'source' ? 'Source' : 'Destination'})`, { kind: 'config' });
  if (c.kind !== kind) missing.push(`kind: '${kind}'`);
  if (!c.spec || typeof c.spec !== 'object' || typeof c.spec.name !== 'string') missing.push('spec.name');
  else if (!c.spec.config || typeof (c.spec.config as { safeParse?: unknown }).safeParse !== 'function') missing.push('spec.config (a zod schema)');
  if (typeof c.check !== 'function') missing.push('check()');
  if (kind === 'source') {
    if (typeof c.discover !== 'function') missing.push('discover()');
    if (typeof c.read !== 'function') missing.push('read()');
    if (!c.capabilities || !Array.isArray(c.capabilities.syncModes)) missing.push('capabilities.syncModes');
  } else {
    if (typeof c.open !== 'function') missing.push('open()');
    if (!c.capabilities || !Array.isArray(c.capabilities.destinationSyncModes)) missing.push('capabilities.destinationSyncModes');
  }
  if (missing.length) throw new SluiceError(`${file}: the exported ${kind} is missing ${missing.join(', ')}`, { kind: 'config' });
  return c as unknown as Source | Destination;
}
