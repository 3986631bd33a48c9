// Node 20 has no global `navigator` (Node 21+ has one). Without it, `pg` tells whether it runs in a
// Cloudflare Worker by building a `Response`, which loads Node's fetch implementation (undici):
// about 35 ms of a sync's start-up, for nothing. Code that may load pg for the first time (the
// command modules, connectors, the lazily loaded driver below) does so through withNodeNavigator:
// a navigator like Node 21+ has exists while it loads, and is removed again right after.
import { createRequire } from 'node:module';
import type * as Pg from 'pg';

export function withNodeNavigator<T>(load: () => T): T {
  if ('navigator' in globalThis) return load();
  Object.defineProperty(globalThis, 'navigator', {
    value: { userAgent: `Node.js/${process.versions.node.split('.')[0]}` },
    configurable: true,
    writable: true,
  });
  const remove = () => {
    delete (globalThis as { navigator?: unknown }).navigator;
  };
  let result: T;
  try {
    result = load();
  } catch (err) {
    remove();
    throw err;
  }
  if (result instanceof Promise) return result.finally(remove) as T;
  remove();
  return result;
}

let pg: typeof Pg | undefined;

/**
 * The `pg` driver, loaded on first use: stores kept in PostgreSQL (state, dead letters) need it, a
 * sync whose state is a file and whose connectors do not use PostgreSQL never loads it. The same
 * module instance as `import pg from 'pg'` elsewhere (one CommonJS cache).
 */
export function pgDriver(): typeof Pg {
  return (pg ??= withNodeNavigator(() => createRequire(import.meta.url)('pg') as typeof Pg));
}
