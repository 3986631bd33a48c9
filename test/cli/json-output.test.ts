// --json on validate, check, state show and destination maintain (human output otherwise), and a
// JSON error object on stdout when a --json command fails.
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { fileToJsonlPipeline, runCli, tempDir } from '../helpers/cli.ts';

const pipeline = (dir: string, connection: Record<string, unknown> = {}): string =>
  fileToJsonlPipeline(dir, { files: { 'docs/a.md': '# A\n\nalpha text', 'docs/b.md': '# B\n\nbeta text' }, connection: connection });

describe('--json', () => {
  it('validate: human by default, an object with --json', async () => {
    const file = pipeline(tempDir());
    const human = await runCli(['validate', file]);
    expect(human.stdout).toMatch(/valid \(1 connection: c\)/);
    const json = await runCli(['validate', file, '--json']);
    expect(JSON.parse(json.stdout)).toEqual({
      status: 'valid',
      file,
      connections: [{ name: 'c', source: 'file', destination: 'jsonl' }],
    });
  });

  it('sync --json (and validate --json) on an invalid file print a JSON error object with each problem', async () => {
    const dir = tempDir();
    const file = pipeline(dir, { processing: { chunk_sise: 10 } });
    for (const cmd of ['sync', 'validate']) {
      const r = await runCli([cmd, file, '--json']);
      expect(r.code).toBe(2);
      const out = JSON.parse(r.stdout);
      expect(out).toMatchObject({ status: 'failed', exit_code: 2, error: { kind: 'config', message: 'invalid pipeline file', file } });
      expect(out.error.problems).toEqual([
        {
          line: expect.any(Number),
          path: 'connections[0].processing.chunk_sise',
          message: 'unknown key "chunk_sise" — did you mean "chunk_size"?',
        },
      ]);
      expect(r.stderr).toMatch(/unknown key "chunk_sise"/);
    }
    const missing = await runCli(['sync', join(dir, 'nope.yaml'), '--json']);
    expect(JSON.parse(missing.stdout).error).toMatchObject({ kind: 'config', message: expect.stringMatching(/pipeline file not found/) });
  });

  it('check --json', async () => {
    const r = await runCli(['check', pipeline(tempDir()), '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      { connection: 'c', source: expect.objectContaining({ ok: true }), destination: expect.objectContaining({ ok: true }) },
    ]);
  });

  it('state show: a readable listing by default, the state object with --json', async () => {
    const file = pipeline(tempDir());
    expect((await runCli(['state', 'show', file])).stdout).toBe('c: no saved state (the next sync starts from scratch)\n');
    expect((await runCli(['sync', file])).code).toBe(0);
    const human = await runCli(['state', 'show', file]);
    expect(human.stdout).toMatch(/^c: 1 stream with saved state\n  docs: \{.*"cursor"/);
    const json = JSON.parse((await runCli(['state', 'show', file, '--json'])).stdout);
    expect(Object.keys(json.c.streams)).toEqual(['docs']);
  });

  it('destination maintain: human by default (no JSON), JSON with --json', async () => {
    const url = inject('pgliteUrl');
    const schema = `maint_${Date.now().toString(36)}`;
    const file = pipeline(tempDir(), {
      destination: { type: 'pgvector', config: { url, schema } },
      embedding: { provider: 'hash', dimensions: 8 },
    });
    try {
      expect((await runCli(['sync', file])).code).toBe(0);
      const human = await runCli(['destination', 'maintain', file]);
      expect(human.code).toBe(0);
      expect(() => JSON.parse(human.stdout)).toThrow();
      expect(human.stdout).toMatch(new RegExp(`table: ${schema}\\.docs\\n\\s+rows: 2\\n`));
      expect(human.stdout).toMatch(/totalBytes: \d+(\.\d)? kB/);
      const json = JSON.parse((await runCli(['destination', 'maintain', file, '--json'])).stdout);
      expect(json.tables[0]).toMatchObject({ table: `${schema}.docs`, rows: 2, totalBytes: expect.any(Number) });
    } finally {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.end();
    }
  });
});
