// Writes every built-in connector's config spec, and the pipeline file schema, as JSON Schema into
// specs/. With --check, fails (exit 1) if specs/ is stale, so CI catches a forgotten export.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableBuiltins, loadConnector } from '../src/engine/registry.ts';
import type { Connector } from '../src/protocol/connector.ts';
import { connectorSpecification } from '../src/protocol/spec.ts';
import { pipelineJsonSchema } from './pipeline-schema.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'specs');
const check = process.argv.includes('--check');

const wanted = new Map<string, string>();
const put = (name: string, value: unknown) => wanted.set(name, JSON.stringify(value, null, 2) + '\n');
const builtins = { source: new Map<string, Connector>(), destination: new Map<string, Connector>() };
for (const kind of ['source', 'destination'] as const) {
  for (const name of availableBuiltins(kind)) {
    const c = await loadConnector(kind, name, root);
    builtins[kind].set(name, c);
    put(`${kind}-${name}.spec.json`, connectorSpecification(c));
  }
}
put('pipeline.schema.json', pipelineJsonSchema(builtins));

if (check) {
  const stale: string[] = [];
  for (const [name, text] of wanted) {
    let current = '';
    try {
      current = readFileSync(join(dir, name), 'utf8');
    } catch {
      /* missing */
    }
    if (current !== text) stale.push(name);
  }
  const extra = readdirSync(dir).filter((f) => f.endsWith('.json') && !wanted.has(f));
  if (stale.length || extra.length) {
    console.error(`specs/ is stale: ${[...stale, ...extra.map((e) => `${e} (no such connector)`)].join(', ')}\nrun: npm run specs:export`);
    process.exit(1);
  }
  console.log(`specs/ is up to date (${wanted.size} files)`);
} else {
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.json') && !wanted.has(f))) rmSync(join(dir, f));
  for (const [name, text] of wanted) writeFileSync(join(dir, name), text);
  console.log(`wrote ${wanted.size} spec files to specs/`);
}
