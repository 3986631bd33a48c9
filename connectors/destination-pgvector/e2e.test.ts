// End to end through the CLI: files → chunks → hash embeddings → pgvector (PGlite server, and native
// PostgreSQL + pgvector where COPY BINARY + merge is the write path), with the
// sync SIGKILLed at random points and re-run. The crashed-and-resumed table must equal the table a
// clean run produces — same chunk ids, contents and vectors, no duplicates, none missing — and the
// state stored in `_sluice_state` must match the clean run's.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeOnPgvectorBackends } from '../../test/helpers/pgvector-backends.ts';
import { qualified } from './sql.ts';

const ROOT = resolve(import.meta.dirname, '../..');
// Set by each backend's suite (PGlite, native PostgreSQL) before its test runs.
let url: string;
let admin: pg.Client;

function writePipeline(dir: string, file: string, schema: string, connection: string) {
  const yaml = `version: 1
connections:
  - name: ${connection}
    source:
      type: file
      config: { path: corpus, stream: docs, checkpoint_every: 4 }
    destination:
      type: pgvector
      config: { url: "${url}", schema: "${schema}", batch_rows: 25, insert_rows: 10 }
    embedding: { provider: hash, dimensions: 32 }
    processing: { chunk_size: 24, chunk_overlap: 0, chunk_unit: characters, splitter: recursive }
    streams:
      - { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup }
`;
  writeFileSync(join(dir, file), yaml);
  return join(dir, file);
}

function writeDoc(corpus: string, i: number, paragraphs: number, mtime: number) {
  const text = Array.from({ length: paragraphs }, (_, p) => `Doc ${i} paragraph ${p}.`).join('\n\n');
  const path = join(corpus, `doc-${String(i).padStart(3, '0')}.md`);
  writeFileSync(path, text);
  utimesSync(path, mtime, mtime);
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
}

/** Runs `sluice sync --json`; with `kill`, SIGKILLs it `delayMs` after its table appeared. */
function sync(yaml: string, schema: string, kill?: { delayMs: number }): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['bin/sluice.js', 'sync', yaml, '--json'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let timer: NodeJS.Timeout | undefined;
    if (kill) {
      // Start the clock once the sync is writing (its table exists), then kill at a random moment.
      let busy = false;
      const poll = setInterval(async () => {
        if (busy || timer) return;
        busy = true;
        const { rows } = await admin
          .query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [qualified(schema, 'docs')])
          .catch(() => ({ rows: [{ t: null }] }));
        busy = false;
        if (rows[0].t && !timer) {
          clearInterval(poll);
          timer = setTimeout(() => child.kill('SIGKILL'), kill.delayMs);
        }
      }, 15);
      child.on('exit', () => clearInterval(poll));
    }
    child.on('error', fail);
    child.on('exit', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (!kill && code !== 0) fail(new Error(`sync failed (${code}): ${stderr}\n${stdout}`));
      else done({ code, signal, stdout });
    });
  });
}

async function table(schema: string) {
  const { rows } = await admin.query<{
    id: string;
    document_id: string;
    chunk_index: number;
    content: string;
    metadata: unknown;
    embedding: string;
  }>(`SELECT id, document_id, chunk_index, content, metadata, embedding::text AS embedding FROM ${qualified(schema, 'docs')} ORDER BY id`);
  return rows;
}

async function storedState(schema: string, connection: string) {
  const { rows } = await admin.query(`SELECT state FROM ${qualified(schema, '_sluice_state')} WHERE connection = $1`, [connection]);
  return rows[0]?.state;
}

describeOnPgvectorBackends('sluice sync into pgvector, killed and resumed', (backend) => {
  beforeAll(async () => {
    url = backend.url;
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin.end();
  });

  it('ends with exactly the chunks and state of an uninterrupted run, after SIGKILLs at random points', { timeout: 600_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-pgv-e2e-'));
    const corpus = join(dir, 'corpus');
    mkdirSync(corpus);
    const base = Math.floor(Date.now() / 1000) - 10_000;
    for (let i = 0; i < 120; i++) writeDoc(corpus, i, 3 + (i % 6), base + i);
    const tag = Math.random().toString(36).slice(2, 8);
    const crashSchema = `e2e_crash_${tag}`;
    const cleanSchema = `e2e_clean_${tag}`;
    const crashYaml = writePipeline(dir, 'crash.yaml', crashSchema, 'crashy');
    const cleanYaml = writePipeline(dir, 'clean.yaml', cleanSchema, 'clean');

    const compare = async () => {
      await sync(cleanYaml, cleanSchema);
      await sync(crashYaml, crashSchema);
      const crashed = await table(crashSchema);
      const clean = await table(cleanSchema);
      expect(crashed.length).toBe(clean.length);
      expect(crashed).toEqual(clean);
      // each document's chunks are 0..n-1, with no gaps
      const byDoc = new Map<string, number[]>();
      for (const r of crashed) byDoc.set(r.document_id, [...(byDoc.get(r.document_id) ?? []), r.chunk_index]);
      for (const idx of byDoc.values()) expect(idx.sort((a, b) => a - b)).toEqual(idx.map((_, i) => i));
      expect(await storedState(crashSchema, 'crashy')).toEqual(await storedState(cleanSchema, 'clean'));
      return { rows: crashed.length, docs: byDoc.size };
    };

    let killed = 0;
    for (const delayMs of [0, 40 + Math.floor(Math.random() * 200), Math.floor(Math.random() * 600)]) {
      const run = await sync(crashYaml, crashSchema, { delayMs });
      if (run.signal === 'SIGKILL') killed++;
    }
    expect(killed).toBeGreaterThanOrEqual(2); // the kills landed mid-sync
    const first = await compare();
    expect(first.docs).toBe(120);

    // Change the corpus: shrink, grow, delete and add documents, then crash and resume again.
    const later = base + 5000;
    writeDoc(corpus, 5, 1, later); // shrinks
    writeDoc(corpus, 6, 12, later + 1); // grows
    rmSync(join(corpus, 'doc-007.md'));
    for (let i = 120; i < 160; i++) writeDoc(corpus, i, 4, later + i);
    for (const delayMs of [Math.floor(Math.random() * 150), Math.floor(Math.random() * 400)])
      await sync(crashYaml, crashSchema, { delayMs });
    const second = await compare();
    expect(second.docs).toBe(159);
    const doc5 = (await table(crashSchema)).filter((r) => r.document_id === 'doc-005.md');
    expect(doc5.map((r) => r.content)).toEqual(['Doc 5 paragraph 0.']);
  });
});
