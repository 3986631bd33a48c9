#!/usr/bin/env node
// The `sluice` command. An installed package runs its compiled JavaScript (dist/); a checkout of
// the repository (it has src/) runs the TypeScript sources through tsx, so `npm ci && npx sluice …`
// needs no build step and never runs a stale build. tsx is otherwise only used to load a user's
// TypeScript connector (src/engine/load-module.ts).
import { existsSync } from 'node:fs';
import module from 'node:module';
import { setFlagsFromString } from 'node:v8';

// Node 22.1+ caches compiled code on disk: a faster start from the second run on.
module.enableCompileCache?.();
// A sync streams, so its live heap stays small; on a machine with a lot of memory V8 otherwise
// grows the heap in large steps and lets garbage pile up to several times that (peak RSS grew
// with the corpus). Smaller steps mean more, cheaper collections. V8 reads this at each
// collection, so setting it now takes effect; the heap can still grow as far as it needs.
setFlagsFromString('--heap-growing-percent=60');

const root = new URL('../', import.meta.url);
const sources = new URL('src/cli/main.ts', root);
let entry = new URL('dist/src/cli/main.js', root);
if (existsSync(sources) && process.env.SLUICE_RUN_BUILD !== '1') {
  const { register } = await import('tsx/esm/api');
  register();
  // `sluice/cdk` imported by a connector in the checkout must be the sources the engine runs (one
  // SluiceError class, one set of module instances), not dist/: the "sluice-source" export condition.
  module.register(new URL('source-condition.mjs', import.meta.url));
  entry = sources;
}
const { main } = await import(entry.href);
await main(process.argv);
