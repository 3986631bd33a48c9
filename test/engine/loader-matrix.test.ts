// Custom connectors load whatever their project is, with sluice installed as users get it (the
// build, not the sources): .ts .mts .cts .js .mjs .cjs; ESM or CommonJS; "type": "module",
// "commonjs" or no package.json; tsc output in either module system; an ESM-only npm package
// (only an `import` condition). In each, `sluice/cdk` is the engine's own module instance: a
// SluiceError thrown by the connector keeps its hint (the engine recognises the class).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO, tempDir, writeFiles } from '../helpers/cli.ts';
import { builtPackage, installInto, runInstalled } from '../helpers/package.ts';

const run = promisify(execFile);

const body = (name: string) => `{
  spec: { name: '${name}', title: '${name}', description: 'loader matrix', config: z.strictObject({ fail: z.boolean().default(false) }) },
  streams: [
    {
      name: 'items',
      schema: z.object({ id: z.number(), title: z.string() }),
      primaryKey: 'id',
      async *read({ config }) {
        if (config.fail) throw new SluiceError('failed on purpose', { kind: 'source', hint: 'thrown by ${name}' });
        yield { id: 1, title: '${name} one' };
        yield { id: 2, title: '${name} two' };
      },
    },
  ],
}`;
/** ESM syntax: .mjs, .js under "type": "module", and every TypeScript file (as people write it). */
const esm = (name: string) => `import { defineSource, SluiceError, z } from 'sluice/cdk';\nexport default defineSource(${body(name)});\n`;
/** CommonJS: .cjs, .js under "type": "commonjs" or without package.json. */
const cjs = (name: string) =>
  `const { defineSource, SluiceError, z } = require('sluice/cdk');\nmodule.exports = defineSource(${body(name)});\n`;

/** A TypeScript connector compiled with tsc under a strict user tsconfig. */
const typed = `import { defineSource, SluiceError, z, type Source } from 'sluice/cdk';
import type { SourceConformanceOptions } from 'sluice/testing';

const config = z.strictObject({ fail: z.boolean().default(false), label: z.string().optional() });
const Item = z.object({ id: z.number().int(), title: z.string() });

const source: Source<z.output<typeof config>> = defineSource({
  spec: { name: 'compiled', title: 'compiled', description: 'tsc output', config },
  streams: [
    {
      name: 'items',
      schema: Item,
      primaryKey: 'id',
      async *read({ config: c }) {
        if (c.fail) throw new SluiceError('failed on purpose', { kind: 'source', hint: 'thrown by compiled' });
        const items: z.output<typeof Item>[] = [{ id: 1, title: c.label ?? 'compiled one' }, { id: 2, title: 'compiled two' }];
        yield* items;
      },
    },
  ],
});
export const kit: SourceConformanceOptions = { config: { fail: false } };
export default source;
`;

const strictTsconfig = (module: string, outDir: string) =>
  JSON.stringify({
    compilerOptions: {
      strict: true,
      noUncheckedIndexedAccess: true,
      exactOptionalPropertyTypes: true,
      module,
      moduleResolution: module === 'preserve' ? 'bundler' : module,
      target: 'ES2022',
      skipLibCheck: false,
      types: ['node'],
      outDir,
      rootDir: 'src',
    },
    include: ['src'],
  });

const connectionName = (file: string) => `conn${file.replace(/[^\w]/g, '_')}`;

function pipeline(connectors: string[], failing: string): string {
  const conn = (file: string, fail = false) => `  - name: ${fail ? 'failing' : connectionName(file)}
    source: { type: ${file}, config: { fail: ${fail} } }
    destination: { type: jsonl, config: { path: ./out/${fail ? 'failing' : connectionName(file)}.jsonl } }
    processing: { text_fields: [title] }
`;
  return `version: 1\nconnections:\n${connectors.map((c) => conn(c)).join('')}${conn(failing, true)}`;
}

interface Summary {
  connections: {
    name: string;
    status: string;
    error?: { message: string; hint?: string };
    streams: Record<string, { records_written: number }>;
  }[];
}

async function syncAll(pkg: string, dir: string): Promise<Summary> {
  const r = await runInstalled(pkg, ['sync', 'pipeline.yaml', '--json'], dir);
  expect(r.stdout, r.stderr).toContain('"connections"');
  return JSON.parse(r.stdout) as Summary;
}

let pkg: string;
/** The user's `tsc -p .`; resolves to its output, fails the test with it. */
async function tsc(cwd: string): Promise<void> {
  const r = await run(process.execPath, [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', '.'], { cwd, timeout: 300_000 }).catch(
    (err: { stdout: string; stderr: string }) => err,
  );
  expect(`${r.stdout}${r.stderr}`).toBe('');
}

beforeAll(async () => {
  pkg = await builtPackage();
}, 600_000);

const projects = {
  module: {
    packageJson: { name: 'esm-project', version: '1.0.0', type: 'module' },
    files: { 'c/a.ts': esm, 'c/b.mts': esm, 'c/c.cts': esm, 'c/d.js': esm, 'c/e.mjs': esm, 'c/f.cjs': cjs },
    tsModule: 'node16',
  },
  commonjs: {
    packageJson: { name: 'cjs-project', version: '1.0.0', type: 'commonjs' },
    files: { 'c/a.ts': esm, 'c/b.mts': esm, 'c/c.cts': esm, 'c/d.js': cjs, 'c/e.mjs': esm, 'c/f.cjs': cjs },
    tsModule: 'nodenext',
  },
  none: {
    packageJson: undefined,
    files: { 'c/a.ts': esm, 'c/b.mts': esm, 'c/c.cts': esm, 'c/d.js': cjs, 'c/e.mjs': esm, 'c/f.cjs': cjs },
    tsModule: 'nodenext',
  },
} as const;

describe.each(Object.entries(projects))('custom connectors in a %s project', (kind, project) => {
  it('every file kind syncs, compiled tsc output too, and a SluiceError keeps its hint', async () => {
    const dir = tempDir(`loader-${kind}-`);
    installInto(dir, pkg, ['@types/node']);
    const files: Record<string, string> = { 'src/compiled.ts': typed };
    for (const [file, make] of Object.entries(project.files)) files[file] = make(file);
    if (project.packageJson) files['package.json'] = JSON.stringify(project.packageJson);
    files['tsconfig.json'] = strictTsconfig(project.tsModule, 'build');
    writeFiles(dir, files);
    // A strict user tsconfig type-checks sluice's .d.ts (skipLibCheck: false) and emits JS in the
    // project's module system.
    await tsc(dir);
    const compiled = readFileSync(join(dir, 'build/compiled.js'), 'utf8');
    expect(compiled).toMatch(project.packageJson?.type === 'module' ? /^import /m : /require\("sluice\/cdk"\)/);

    const connectors = [...Object.keys(project.files), 'build/compiled.js'].map((f) => `./${f}`);
    writeFiles(dir, { 'pipeline.yaml': pipeline(connectors, './c/a.ts') });
    const summary = await syncAll(pkg, dir);
    for (const c of summary.connections.filter((c) => c.name !== 'failing')) {
      expect({ name: c.name, status: c.status, error: c.error }).toEqual({ name: c.name, status: 'succeeded', error: undefined });
      expect(c.streams.items!.records_written).toBe(2);
    }
    expect(summary.connections.map((c) => c.name)).toHaveLength(connectors.length + 1);
    const failing = summary.connections.find((c) => c.name === 'failing')!;
    expect(failing.status).toBe('failed');
    expect(failing.error).toMatchObject({ message: expect.stringContaining('failed on purpose'), hint: 'thrown by c/a.ts' });
    const out = readFileSync(join(dir, 'out/conn__c_f_cjs.jsonl'), 'utf8');
    expect(out).toContain('c/f.cjs one');
  }, 600_000);
});

describe('connector packages', () => {
  it('an ESM-only package (only an `import` condition) resolves through its exports', async () => {
    const dir = tempDir('loader-npm-');
    installInto(dir, pkg);
    writeFiles(dir, {
      'package.json': JSON.stringify({ name: 'user-project', version: '1.0.0' }),
      'node_modules/sluice-source-esm-only/package.json': JSON.stringify({
        name: 'sluice-source-esm-only',
        version: '1.0.0',
        type: 'module',
        exports: { '.': { import: './lib/index.js' } },
      }),
      'node_modules/sluice-source-esm-only/lib/index.js': esm('esm-only'),
      'pipeline.yaml': `version: 1
connections:
  - name: npm
    source: { type: sluice-source-esm-only }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
    processing: { text_fields: [title] }
  - name: failing
    source: { type: sluice-source-esm-only, config: { fail: true } }
    destination: { type: jsonl, config: { path: ./failing.jsonl } }
    processing: { text_fields: [title] }
`,
    });
    const summary = await syncAll(pkg, dir);
    expect(summary.connections[0]).toMatchObject({ name: 'npm', status: 'succeeded', streams: { items: { records_written: 2 } } });
    expect(summary.connections[1]).toMatchObject({ status: 'failed', error: { hint: 'thrown by esm-only' } });

    writeFiles(dir, {
      'typo.yaml': `version: 1\nconnections:\n  - name: x\n    source: { type: sluice-source-esm-onyl }\n    destination: { type: jsonl, config: { path: ./o.jsonl } }\n`,
    });
    const bad = await runInstalled(pkg, ['validate', 'typo.yaml'], dir);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('typo.yaml:4: connections[0].source.type: unknown source type "sluice-source-esm-onyl"');
  }, 600_000);
});
