// Defects 8 and 9 of issue 14: inputs that used to crash ("looks like a bug in sluice") or were
// silently misread. Each runs the real CLI and expects one clear error, the right exit code and
// nothing written.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { startQdrantFixture } from '../fixtures/qdrant-server.ts';
import { STACK_LINE, runCli, tempDir, writeFiles, writePipeline } from '../helpers/cli.ts';

const BUG = /looks like a bug/;

function expectUserError(r: { code: number | null; stderr: string }, code: number, pattern: RegExp) {
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr).not.toMatch(BUG);
  expect(r.stderr).not.toMatch(STACK_LINE);
  expect(r.code).toBe(code);
}

/** A file source (2 markdown docs) into a jsonl file. */
function jsonlPipeline(dir: string, extra: Record<string, unknown> = {}) {
  writeFiles(dir, { 'docs/a.md': '# A\n\nalpha text', 'docs/b.md': '# B\n\nbeta text' });
  return writePipeline(dir, [
    {
      name: 'one',
      source: { type: 'file', config: { path: './docs', stream: 'docs' } },
      destination: { type: 'jsonl', config: { path: './out.jsonl' } },
      ...extra,
    },
    {
      name: 'two',
      source: { type: 'file', config: { path: './docs', stream: 'docs' } },
      destination: { type: 'jsonl', config: { path: './out2.jsonl' } },
    },
  ]);
}

describe('defect 8: crashes become normal errors', () => {
  it('a YAML alias bomb names the file and line', async () => {
    const dir = tempDir();
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 8; i++) {
      const prev = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      levels.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    writeFileSync(join(dir, 'bomb.yaml'), `version: 1\n${levels.join('\n')}\nconnections: []\n`);
    const r = await runCli(['validate', join(dir, 'bomb.yaml')]);
    expectUserError(r, 2, /bomb\.yaml:3: b\[0\]: YAML aliases expand too far/);
  });

  it('an undefined alias names the file and line', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'p.yaml'), 'version: 1\nconnections:\n  - name: x\n    source: *nope\n');
    const r = await runCli(['validate', join(dir, 'p.yaml')]);
    expectUserError(r, 2, /p\.yaml:4: connections\[0\]\.source: YAML alias \*nope refers to no anchor/);
  });

  it('spec --kind bogus', async () => {
    expectUserError(await runCli(['spec', 'postgres', '--kind', 'bogus']), 2, /--kind must be "source" or "destination", not "bogus"/);
  });

  it('init connector --dir <a file> writes nothing', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'afile'), 'keep me');
    const r = await runCli(['init', 'connector', 'x', '--dir', join(dir, 'afile')]);
    expectUserError(r, 2, /--dir .*afile is not a directory/);
    expect(readFileSync(join(dir, 'afile'), 'utf8')).toBe('keep me');
  });

  it('SLUICE_LOG_LEVEL=bogus', async () => {
    const dir = tempDir();
    const file = jsonlPipeline(dir);
    const r = await runCli(['sync', file, '-c', 'one'], { env: { SLUICE_LOG_LEVEL: 'bogus' } });
    expectUserError(r, 2, /SLUICE_LOG_LEVEL="bogus" is not a log level; expected one of: fatal, error, warn, info, debug/);
    expect(existsSync(join(dir, 'out.jsonl'))).toBe(false);
  });
});

describe('defect 9: smaller misreadings', () => {
  it('--connection "" is an error, not "run everything"', async () => {
    const dir = tempDir();
    const file = jsonlPipeline(dir);
    const r = await runCli(['sync', file, '--connection', '']);
    expectUserError(r, 2, /--connection was given an empty value/);
    expect(existsSync(join(dir, 'out.jsonl'))).toBe(false);
    expect(existsSync(join(dir, 'out2.jsonl'))).toBe(false);
  });

  for (const [what, content, pattern] of [
    ['a list', '[1,2,3]', /not a sluice state file: expected an object with "state", found a list/],
    ['truncated JSON', '{"version":1,"connection":"one","state":{"streams":{"docs":{"cur', /is not valid JSON/],
    ['a wrong shape', '{"version":1,"state":{"streams":[]}}', /"state\.streams" should be an object, found a list/],
  ] as const) {
    it(`a state file holding ${what} is a clear error; nothing is re-read or written`, async () => {
      const dir = tempDir();
      const file = jsonlPipeline(dir);
      mkdirSync(join(dir, '.sluice/state'), { recursive: true });
      writeFileSync(join(dir, '.sluice/state/one.json'), content);
      const r = await runCli(['sync', file, '-c', 'one']);
      expect(r.stderr).toMatch(pattern);
      expect(r.stderr).toMatch(/sluice state reset/);
      expect(r.stderr).not.toMatch(BUG);
      expect(r.code).not.toBe(0);
      expect(existsSync(join(dir, 'out.jsonl'))).toBe(false);
      expect(readFileSync(join(dir, '.sluice/state/one.json'), 'utf8')).toBe(content);
    });
  }

  it('a latin1 (non-UTF-8) file name is refused, not skipped or turned into "caf\\uFFFD"', async () => {
    const dir = tempDir();
    // A pipeline file saved as latin1: `table: café_docs` would become a table named "caf\uFFFD_docs".
    const latin1Yaml = `version: 1\nconnections:\n  - name: c\n    source: { type: file, config: { path: ./docs } }\n    destination: { type: jsonl, config: { path: ./caf\xe9_docs.jsonl } }\n`;
    writeFiles(dir, { 'docs/ok.md': '# ok\n\ntext' });
    writeFileSync(join(dir, 'latin1.yaml'), Buffer.from(latin1Yaml, 'latin1'));
    const r = await runCli(['sync', join(dir, 'latin1.yaml')]);
    expectUserError(r, 2, /latin1\.yaml:5: .*not valid UTF-8/);
    expect(readdirSync(dir).filter((f) => f.includes('docs.jsonl'))).toEqual([]);

    // A latin1 file inside a UTF-8 directory: was silently skipped every run.
    writeFileSync(Buffer.concat([Buffer.from(join(dir, 'docs') + '/'), Buffer.from('r\xe9sum\xe9.md', 'latin1')]), '# r\n\ntext');
    writeFileSync(
      join(dir, 'q.yaml'),
      stringify({
        version: 1,
        connections: [
          {
            name: 'c',
            source: { type: 'file', config: { path: './docs' } },
            destination: { type: 'jsonl', config: { path: './out.jsonl' } },
          },
        ],
      }),
    );
    const q = await runCli(['sync', join(dir, 'q.yaml')]);
    expect(q.stderr).toMatch(/1 file name is not valid UTF-8 and cannot be read: r\uFFFDsum\uFFFD\.md/);
    expect(q.stderr).toMatch(/convmv/);
    expect(q.code).not.toBe(0);
    expect(existsSync(join(dir, 'out.jsonl'))).toBe(false);
  });

  it('a URL password with %zz gives the same clear error for source and destination, without the password', async () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, 'p.yaml'),
      stringify({
        version: 1,
        connections: [
          {
            name: 'c',
            source: { type: 'postgres', config: { url: 'postgres://u:s3cr%zzet@127.0.0.1:1/db' } },
            destination: { type: 'pgvector', config: { url: 'postgres://u:s3cr%zzet@127.0.0.1:1/db' } },
            embedding: { provider: 'hash', dimensions: 8 },
          },
        ],
      }),
    );
    const r = await runCli(['validate', join(dir, 'p.yaml')]);
    expect(r.code).toBe(2);
    const lines = r.stderr.split('\n').filter((l) => l.includes('config.url'));
    expect(lines).toHaveLength(2);
    const message = (l: string) => l.replace(/^.*config\.url: /, '');
    expect(message(lines[0])).toMatch(/password in the URL is not valid percent-encoding/);
    expect(message(lines[0])).toBe(message(lines[1]));
    expect(r.stderr).not.toContain('s3cr');
    expect(r.stderr).not.toMatch(BUG);
  });

  it('--dry-run refuses the vector size mismatch the real run refuses, and counts chunks as the run does', async () => {
    const url = inject('pgliteUrl');
    const schema = `dry_${Date.now().toString(36)}`;
    const dir = tempDir();
    writeFiles(
      dir,
      Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`docs/d${i}.md`, `# Doc ${i}\n\n${'word '.repeat(60 + i * 40)}`])),
    );
    const write = (dimensions: number) =>
      writeFileSync(
        join(dir, 'p.yaml'),
        stringify({
          version: 1,
          connections: [
            {
              name: 'c',
              source: { type: 'file', config: { path: './docs', stream: 'docs' } },
              destination: { type: 'pgvector', config: { url, schema } },
              embedding: { provider: 'hash', dimensions },
              processing: { chunk_size: 40, chunk_overlap: 0 },
              streams: [{ name: 'docs', sync_mode: 'full_refresh', destination_sync_mode: 'append_dedup' }],
            },
          ],
        }),
      );
    write(16);
    const dry = await runCli(['sync', join(dir, 'p.yaml'), '--dry-run', '--json']);
    expect(dry.code).toBe(0);
    const planned = JSON.parse(dry.stdout).connections[0].streams.docs;
    const run = await runCli(['sync', join(dir, 'p.yaml'), '--json']);
    expect(run.code).toBe(0);
    const done = JSON.parse(run.stdout).connections[0].streams.docs;
    expect(done.chunks_written).toBeGreaterThan(5);
    expect(planned.chunks_to_write).toBe(done.chunks_written);
    expect(planned.embedding_cache_hits).toBe(done.embedding_cache_hits);

    write(8);
    // A changed embedder is first refused as a new index identity (exit 2, docs/embeddings.md)…
    expect((await runCli(['sync', join(dir, 'p.yaml'), '--dry-run'])).code).toBe(2);
    // …and once the connection's state (identity included) is reset, the table's vector size is.
    expect((await runCli(['state', 'reset', join(dir, 'p.yaml'), '--connection', 'c'])).code).toBe(0);
    const refused = await runCli(['sync', join(dir, 'p.yaml'), '--dry-run']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/table .*docs has 16 dimensions, embedding model hash .* gives 8/);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query(`SELECT count(*)::int AS n FROM "${schema}".docs`);
      expect(rows[0].n).toBe(done.chunks_written);
    } finally {
      await client.query(`DROP SCHEMA "${schema}" CASCADE`);
      await client.end();
    }
  });
});

describe('defect 9: --dry-run on Qdrant', () => {
  it('refuses a collection of another vector size, as the run does, and creates nothing', async () => {
    const fx = await startQdrantFixture();
    try {
      const dir = tempDir();
      writeFiles(dir, { 'docs/a.md': '# A\n\nalpha', 'docs/b.md': '# B\n\nbeta' });
      const write = (dimensions: number, collection: string) =>
        writeFileSync(
          join(dir, 'p.yaml'),
          stringify({
            version: 1,
            connections: [
              {
                name: 'c',
                source: { type: 'file', config: { path: './docs', stream: 'docs' } },
                destination: { type: 'qdrant', config: { url: fx.url, collection } },
                embedding: { provider: 'hash', dimensions },
              },
            ],
          }),
        );
      write(16, 'docs');
      expect((await runCli(['sync', join(dir, 'p.yaml')])).code).toBe(0);
      write(8, 'docs');
      expect((await runCli(['sync', join(dir, 'p.yaml'), '--dry-run'])).code).toBe(2); // a new index identity
      expect((await runCli(['state', 'reset', join(dir, 'p.yaml'), '--connection', 'c'])).code).toBe(0);
      const refused = await runCli(['sync', join(dir, 'p.yaml'), '--dry-run']);
      expect(refused.stderr).toMatch(/Qdrant collection "docs" .* has vectors of size 16, but the embedder .* makes 8/);
      expect(refused.code).toBe(1);
      const run = await runCli(['sync', join(dir, 'p.yaml')]);
      expect(run.stderr).toMatch(/has vectors of size 16, but the embedder .* makes 8/);
      // A dry run against a collection that does not exist yet creates none.
      const collections = fx.collections.size;
      write(8, 'fresh');
      expect((await runCli(['sync', join(dir, 'p.yaml'), '--dry-run'])).code).toBe(0);
      expect(fx.collections.size).toBe(collections);
    } finally {
      await fx.close();
    }
  });
});
