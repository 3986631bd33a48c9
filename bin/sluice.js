#!/usr/bin/env node
// Runs the TypeScript sources directly (no build step), which also lets pipelines load
// custom connectors written in TypeScript.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
