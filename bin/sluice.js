#!/usr/bin/env node
// Runs the TypeScript sources directly (no build step), which also lets pipelines load
// custom connectors written in TypeScript.
import { setFlagsFromString } from 'node:v8';
import { register } from 'tsx/esm/api';

// A sync streams, so its live heap stays small; on a machine with a lot of memory V8 otherwise
// grows the heap in large steps and lets garbage pile up to several times that (peak RSS grew
// with the corpus). Smaller steps mean more, cheaper collections. V8 reads this at each
// collection, so setting it now takes effect; the heap can still grow as far as it needs.
setFlagsFromString('--heap-growing-percent=60');
register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
