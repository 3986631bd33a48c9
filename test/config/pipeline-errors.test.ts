// Every mistake a user can make in a pipeline file gets one clear message: file, line, YAML path,
// what was expected; a non-zero exit; no stack trace.
import { describe, expect, it, beforeAll } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, STACK_LINE, tempDir, writeFiles } from '../helpers/cli.ts';

// Inside the repo, so the custom connector resolves zod and runs as ESM like in a user's project.

let dir: string;
beforeAll(() => {
  dir = tempDir('config-errors-', true);
  writeFiles(dir, {
    'docs/a.md': '# A\n\nalpha',
    // A custom source with no cursor of its own: incremental streams must name a cursor_field.
    'no-cursor-source.ts': `
      import { z } from 'zod';
      export default {
        kind: 'source',
        spec: { name: 'no-cursor', config: z.strictObject({}) },
        capabilities: { syncModes: ['full_refresh', 'incremental'] },
        async check() { return { ok: true }; },
        async discover() { return { streams: [{ name: 'items', json_schema: { type: 'object' }, supported_sync_modes: ['full_refresh', 'incremental'] }] }; },
        async *read() {},
      };`,
  });
});

const conn = (over: { source?: string; destination?: string; extra?: string; streams?: string } = {}) => `version: 1
connections:
  - name: docs
    source: ${over.source ?? '{ type: file, config: { path: ./docs } }'}
    destination: ${over.destination ?? '{ type: jsonl, config: { path: ./out.jsonl } }'}
${over.extra ?? ''}    streams:
${over.streams ?? '      - { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup }'}
`;

const cases: Array<{ name: string; yaml: string; expect: RegExp[]; env?: Record<string, string> }> = [
  {
    name: 'misspelt destination_sync_mode value',
    yaml: conn({ streams: '      - name: docs\n        sync_mode: full_refresh\n        destination_sync_mode: overwrte' }),
    expect: [/:9: connections\[0\]\.streams\[0\]\.destination_sync_mode/, /did you mean "overwrite"/],
  },
  {
    name: 'unknown top-level key in a connection',
    yaml: conn().replace('    destination:', '    destinaton:'),
    expect: [/connections\[0\]\.destinaton/, /did you mean "destination"/],
  },
  {
    name: 'wrong type for chunk_size',
    yaml: conn({ extra: '    processing: { chunk_size: big }\n' }),
    expect: [/:6: connections\[0\]\.processing\.chunk_size/, /expected number/],
  },
  {
    name: 'missing environment variable',
    yaml: conn({ source: '{ type: file, config: { path: "${SLUICE_TEST_UNSET_DIR}" } }' }),
    expect: [/SLUICE_TEST_UNSET_DIR is not set/, /connections\[0\]\.source\.config\.path/],
  },
  {
    name: 'missing variable written unquoted inside a flow mapping',
    yaml: conn({ source: '{ type: file, config: { path: ${SLUICE_TEST_UNSET_DIR} } }' }),
    expect: [/:4: connections\[0\]\.source\.config\.path/, /SLUICE_TEST_UNSET_DIR is not set/],
  },
  {
    name: 'sync mode the source does not support',
    yaml: conn({ streams: '      - { name: docs, sync_mode: cdc, destination_sync_mode: append_dedup }' }),
    expect: [/connections\[0\]\.streams\[0\]\.sync_mode/, /does not support sync_mode "cdc"/],
  },
  {
    name: 'unknown sync mode',
    yaml: conn({ streams: '      - { name: docs, sync_mode: incremntal }' }),
    expect: [/streams\[0\]\.sync_mode/, /did you mean "incremental"/],
  },
  {
    name: 'incremental without cursor on a source without its own cursor',
    yaml: conn({
      source: '{ type: ./no-cursor-source.ts }',
      streams: '      - { name: items, sync_mode: incremental, destination_sync_mode: append }',
    }),
    expect: [/connections\[0\]\.streams\[0\]/, /needs a cursor_field/],
  },
  {
    name: 'wrong version',
    yaml: conn().replace('version: 1', 'version: 2'),
    expect: [/:1: version/, /expected one of: 1/],
  },
  {
    name: 'YAML syntax error',
    yaml: 'version: 1\nconnections:\n  - name: docs\n    source: { type: file, config: { path: ./docs }\n',
    expect: [/YAML syntax/, /p\.yaml:\d+/],
  },
  {
    name: 'unknown source type',
    yaml: conn({ source: '{ type: fle, config: { path: ./docs } }' }),
    expect: [/connections\[0\]\.source\.type/, /unknown source type "fle"/, /did you mean "file"/],
  },
  {
    name: 'unknown key inside connector config',
    yaml: conn({ source: '{ type: file, config: { pth: ./docs } }' }),
    expect: [/connections\[0\]\.source\.config\.pth/, /did you mean "path"/],
  },
  {
    name: 'no connections',
    yaml: 'version: 1\nstate: { type: file, path: .sluice/state }\n',
    expect: [/connections/, /missing required key/],
  },
  {
    name: 'duplicate connection name',
    yaml: conn() + conn().split('connections:\n')[1],
    expect: [/connections\[1\]\.name/, /duplicate connection name "docs"/],
  },
  {
    name: 'embedding provider typo',
    yaml: conn({ extra: '    embedding: { provider: openia }\n' }),
    expect: [/connections\[0\]\.embedding\.provider/, /did you mean "openai"/],
  },
  {
    name: 'stream primary key of the wrong shape',
    yaml: conn({ streams: '      - { name: docs, primary_key: { path: 1 } }' }),
    expect: [/connections\[0\]\.streams\[0\]\.primary_key/],
  },
];

describe('sluice validate: broken pipeline files', () => {
  it.each(cases)('$name', async (c) => {
    const file = join(dir, 'p.yaml');
    writeFileSync(file, c.yaml);
    const r = await runCli(['validate', file], { cwd: dir, env: { SLUICE_TEST_UNSET_DIR: '' } });
    const out = r.stdout + r.stderr;
    expect(r.code, out).not.toBe(0);
    for (const re of c.expect) expect(out).toMatch(re);
    expect(out).not.toMatch(STACK_LINE);
    // One problem, one message: the error block names a single YAML path.
    expect(out.match(/^\s+\S+\.yaml(:\d+)?: /gm)?.length ?? 1, out).toBe(1);
  });

  it('a valid file passes and names its connections', async () => {
    const file = join(dir, 'ok.yaml');
    writeFileSync(file, conn());
    const r = await runCli(['validate', file], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('valid (1 connection: docs)');
  });

  it('variables are substituted (unquoted, quoted, with defaults), numbers keep their type', async () => {
    const file = join(dir, 'vars.yaml');
    writeFileSync(
      file,
      conn({
        source: '{ type: file, config: { path: ${DOCS_DIR}, checkpoint_every: ${EVERY} } }',
        destination: '{ type: jsonl, config: { path: "${OUT_DIR:-./out}/x.jsonl" } }',
      }),
    );
    const r = await runCli(['validate', file], { cwd: dir, env: { DOCS_DIR: './docs', EVERY: '50' } });
    expect(r.code, r.stderr).toBe(0);
  });

  it('a missing pipeline file is a clear error', async () => {
    const r = await runCli(['sync', join(dir, 'nope.yaml')], { cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('pipeline file not found');
    expect(r.stderr).not.toMatch(STACK_LINE);
  });
});

describe('custom connectors by npm package name', () => {
  it('loads a source from an installed package, like a built-in', async () => {
    const dir = tempDir('npm-connector-', true);
    writeFiles(dir, {
      'node_modules/sluice-source-greetings/package.json': JSON.stringify({
        name: 'sluice-source-greetings',
        type: 'module',
        main: 'index.js',
      }),
      'node_modules/sluice-source-greetings/index.js': `
        import { z } from 'zod';
        export default {
          kind: 'source',
          spec: { name: 'greetings', config: z.strictObject({ count: z.number().int() }) },
          capabilities: { syncModes: ['full_refresh'] },
          async check() { return { ok: true }; },
          async discover() { return { streams: [{ name: 'hello', json_schema: { type: 'object' }, supported_sync_modes: ['full_refresh'], source_defined_primary_key: [['id']] }] }; },
          async *read(config) {
            for (let i = 0; i < config.count; i++) yield { type: 'RECORD', record: { stream: 'hello', data: { id: i, content: 'hello ' + i }, emitted_at: Date.now() } };
          },
        };`,
      'p.yaml': `version: 1
connections:
  - name: g
    source: { type: sluice-source-greetings, config: { count: 3 } }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
`,
    });
    const r = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).connections[0].streams.hello.records_written).toBe(3);
    // Its config is validated with its own schema, like a built-in's.
    writeFileSync(join(dir, 'bad.yaml'), readFileSync(join(dir, 'p.yaml'), 'utf8').replace('count: 3', 'count: three'));
    const bad = await runCli(['validate', 'bad.yaml'], { cwd: dir });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/connections\[0\]\.source\.config\.count: expected number/);
  });
});
