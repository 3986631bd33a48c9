// lmdb (a native addon, with msgpackr) takes ~40–90 ms to load, and most syncs never open a
// database: the sweep's and the unchanged stage's key sets stay in memory below their limits, and
// a local embedder has no cache. So it is loaded at the first open(), not when the CLI starts.
// Every user in the process goes through here, so there is one lmdb instance (its CommonJS build).
import { createRequire } from 'node:module';
import type * as Lmdb from 'lmdb';

let lmdb: typeof Lmdb | undefined;

/** lmdb's `open`, loading lmdb on the first call. */
export const open: typeof Lmdb.open = ((...args: Parameters<typeof Lmdb.open>) =>
  (lmdb ??= createRequire(import.meta.url)('lmdb') as typeof Lmdb).open(...args)) as typeof Lmdb.open;
