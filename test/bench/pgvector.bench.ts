// pgvector end to end: files → chunks → `hash` embeddings → pgvector, for
//   - sluice (the CLI, `sluice sync --json`, a child process so its peak RSS is its own),
//   - LangChain.js PGVectorStore fed by the indexing API `index()` (PostgresRecordManager) and by
//     `addDocuments`, with the same hash embedder wrapped as a LangChain `Embeddings`,
//   - a raw COPY … FROM STDIN (FORMAT BINARY) of the very rows sluice wrote, into the same table
//     layout: the write limit.
// Issue #15's unchanged-documents comparison (sluice full_refresh + append_dedup vs LangChain index(),
// cleanup "full": first load, unchanged re-sync, 1 % changed) runs on the file corpus and on a
// PostgreSQL table as the source (the setting); SLUICE_BENCH_PGV_ONLY=fingerprints runs
// only those two, =fingerprints-pg only the PostgreSQL-source one.
// Target: SLUICE_BENCH_PG_URL (a PostgreSQL with pgvector) or else an in-memory PGlite + pgvector
// served on loopback. On PGlite its single WebAssembly session caps every contender, and the raw
// load goes in-process through COPY FROM '/dev/blob' (PGlite's socket cannot take COPY FROM STDIN).
//
// LangChain is loaded from the project if installed, else from .bench/langchain (git-ignored):
//   npm install --prefix .bench/langchain --legacy-peer-deps @langchain/community@1.1.29 @langchain/core@1.4.0
// (@langchain/community's optional peers conflict with the project's openai v6, so it is kept out
// of package.json; `npm ci` would refuse the lock file otherwise).
import { spawn } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { createEmbedder } from '../../src/embedding/index.ts';
import type { Embedder } from '../../src/embedding/types.ts';
import { copyBinary, copyHeader, copyTrailer, encodeCopyTuple, type CopyValue } from '../../connectors/destination-pgvector/copy.ts';
import { decodeVectorText, ident } from '../../connectors/destination-pgvector/sql.ts';
import pgvector from '../../connectors/destination-pgvector/index.ts';
import { PgvectorConfigSchema } from '../../connectors/destination-pgvector/config.ts';
import type { DestinationMessage } from '../../src/protocol/connector.ts';
import { builtCli, type BuiltCli } from './built-cli.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const WORK = join(ROOT, '.bench', 'pgvector');
const DOCS = Number(process.env.SLUICE_BENCH_PGV_DOCS ?? 10_000);
const RSS_DOCS = (process.env.SLUICE_BENCH_PGV_RSS_DOCS ?? `10000,100000`).split(',').map(Number).filter(Boolean);
const DIMENSIONS = 384;
/** A larger RSS run predicted (from the main run's throughput) to take longer than this is skipped. */
const RSS_BUDGET_SECONDS = Number(process.env.SLUICE_BENCH_PGV_RSS_BUDGET_S ?? 300);
const CHUNK_SIZE = 512;
const silent = { debug() {}, info() {}, warn() {}, error() {} };
/** How sluice runs: the built CLI, as installed (set in bench()). */
let cli: BuiltCli | undefined;

interface Target {
  url: string;
  kind: 'postgresql' | 'pglite';
  /** Loads pre-encoded binary COPY data into `table` (same layout as sluice's). */
  rawCopy(table: string, tuples: CopyValue[][]): Promise<void>;
  stop(): Promise<void>;
}

async function startTarget(): Promise<Target> {
  const url = process.env.SLUICE_BENCH_PG_URL;
  if (url) {
    return {
      url,
      kind: 'postgresql',
      async rawCopy(table, tuples) {
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        try {
          await c.query('BEGIN');
          await copyBinary(
            c,
            `COPY ${table} (id, document_id, chunk_index, content, metadata, embedding) FROM STDIN (FORMAT BINARY)`,
            tuples,
          );
          await c.query('COMMIT');
        } finally {
          await c.end();
        }
      },
      async stop() {},
    };
  }
  const [{ PGlite }, { vector }, { PGLiteSocketServer }] = await Promise.all([
    import('@electric-sql/pglite'),
    import('@electric-sql/pglite-pgvector'),
    import('@electric-sql/pglite-socket'),
  ]);
  const db = await PGlite.create({ extensions: { vector } });
  await db.exec('CREATE EXTENSION IF NOT EXISTS vector');
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 8 });
  await server.start();
  return {
    url: `postgres://postgres:postgres@${server.getServerConn()}/postgres?sslmode=disable`,
    kind: 'pglite',
    async rawCopy(table, tuples) {
      const parts = [copyHeader(), ...tuples.map(encodeCopyTuple), copyTrailer()];
      await db.query(
        `COPY ${table} (id, document_id, chunk_index, content, metadata, embedding) FROM '/dev/blob' WITH (FORMAT binary)`,
        [],
        {
          blob: new Blob(parts),
        },
      );
    },
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}

// ---- corpus ------------------------------------------------------------------------------------

const WORDS =
  'sluice vector index chunk embedding state checkpoint stream source destination record table postgres kafka file replay crash search overwrite'.split(
    ' ',
  );
/** Deterministic sentences of 12 words for document `i`, each call the next one. */
function sentencesOf(i: number): () => string {
  let seed = i * 2654435761;
  const word = () => {
    seed = (Math.imul(seed ^ (seed >>> 13), 1274126177) + 7) | 0;
    return WORDS[(seed >>> 0) % WORDS.length];
  };
  return () => Array.from({ length: 12 }, word).join(' ') + '.';
}

function docText(i: number): string {
  const sentence = sentencesOf(i);
  return `# Document ${i}\n\n${Array.from({ length: 3 }, sentence).join(' ')}\n\n${Array.from({ length: 3 }, sentence).join(' ')}\n`;
}

/** The body of source row `i`: three paragraphs of four sentences, ~1 KB (the row size). */
function rowBody(i: number): string {
  const sentence = sentencesOf(i);
  return Array.from({ length: 3 }, () => Array.from({ length: 4 }, sentence).join(' ')).join('\n\n');
}

function corpus(n: number): string {
  const dir = join(WORK, `corpus-${n}`);
  if (existsSync(join(dir, '.complete'))) return dir;
  rmSync(dir, { recursive: true, force: true });
  for (let i = 0; i < n; i++) {
    const sub = join(dir, String(Math.floor(i / 1000)).padStart(3, '0'));
    if (i % 1000 === 0) mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `doc-${i}.md`), docText(i));
  }
  writeFileSync(join(dir, '.complete'), '');
  return dir;
}

function* corpusFiles(dir: string): Generator<{ path: string; text: string }> {
  for (const sub of readdirSync(dir)
    .filter((s) => !s.startsWith('.'))
    .sort()) {
    for (const f of readdirSync(join(dir, sub)).sort()) yield { path: `${sub}/${f}`, text: readFileSync(join(dir, sub, f), 'utf8') };
  }
}

// ---- sluice ------------------------------------------------------------------------------------

interface SluiceRun {
  seconds: number;
  wallSeconds: number;
  peakRssMb: number;
  chunks: number;
  records: number;
  /** Documents found unchanged by their fingerprint (neither chunked, embedded nor written). */
  unchanged: number;
}

/** What a sluice run reads: the connection's `source:` (a YAML flow mapping), its one stream and the text to embed. */
interface SluiceSource {
  yaml: string;
  stream: string;
  /** `processing.text_fields`; the source's default text when absent. */
  textFields?: string[];
}

/** The file source over a corpus directory: one stream `docs`, one document per file. */
function fileSource(corpusDir: string): SluiceSource {
  return { yaml: `{ type: file, config: { path: ${JSON.stringify(corpusDir)}, stream: docs, checkpoint_every: 2000 } }`, stream: 'docs' };
}

async function sluiceSync(
  target: Target,
  source: SluiceSource,
  schema: string,
  name: string,
  fresh: boolean,
  syncMode: 'incremental' | 'full_refresh' = 'incremental',
): Promise<SluiceRun> {
  const dir = join(WORK, `run-${name}`);
  if (fresh) rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const yaml = join(dir, 'pipeline.yaml');
  const textFields = source.textFields ? `text_fields: [${source.textFields.join(', ')}], ` : '';
  writeFileSync(
    yaml,
    `version: 1
connections:
  - name: bench
    source: ${source.yaml}
    destination: { type: pgvector, config: { url: ${JSON.stringify(target.url)}, schema: ${schema}, index: none } }
    embedding: { provider: hash, dimensions: ${DIMENSIONS} }
    processing: { ${textFields}chunk_size: ${CHUNK_SIZE}, chunk_overlap: 0 }
    streams:
      - { name: ${source.stream}, sync_mode: ${syncMode}, destination_sync_mode: append_dedup }
`,
  );
  const started = Date.now();
  const rssHook = `data:text/javascript,process.on("exit",()=>process.stderr.write("\\nSLUICE_MAXRSS_KB "+process.resourceUsage().maxRSS+"\\n"))`;
  const { stdout, stderr, code } = await new Promise<{ stdout: string; stderr: string; code: number | null }>((ok, fail) => {
    cli ??= builtCli(ROOT);
    const child = spawn(process.execPath, ['--import', rssHook, cli.entry, 'sync', yaml, '--json'], {
      cwd: ROOT,
      env: cli.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', fail);
    child.on('exit', (c) => ok({ stdout: out, stderr: err, code: c }));
  });
  const wallSeconds = (Date.now() - started) / 1000;
  if (code !== 0) throw new Error(`sluice sync failed (${code}): ${stderr.slice(-2000)}`);
  const summary = JSON.parse(stdout) as {
    duration_ms: number;
    connections: Array<{ streams: Record<string, { chunks_written: number; records_read: number; records_unchanged?: number }> }>;
  };
  const s = summary.connections[0].streams[source.stream];
  const rss = Number(/SLUICE_MAXRSS_KB (\d+)/.exec(stderr)?.[1] ?? NaN);
  return {
    seconds: summary.duration_ms / 1000,
    wallSeconds,
    peakRssMb: Math.round(rss / 1024),
    chunks: s.chunks_written,
    records: s.records_read,
    unchanged: s.records_unchanged ?? 0,
  };
}

// ---- LangChain ---------------------------------------------------------------------------------

interface LangChain {
  PGVectorStore: any;
  PostgresRecordManager: any;
  index: (args: any) => Promise<any>;
  Embeddings: any;
  Document: any;
  RecursiveCharacterTextSplitter: any;
  from: string;
}

function loadLangChain(): LangChain | string {
  const roots = [join(ROOT, 'package.json'), join(ROOT, '.bench', 'langchain', 'package.json')];
  const errors: string[] = [];
  for (const root of roots) {
    if (!existsSync(root)) continue;
    const req = createRequire(root);
    try {
      return {
        PGVectorStore: req('@langchain/community/vectorstores/pgvector').PGVectorStore,
        PostgresRecordManager: req('@langchain/community/indexes/postgres').PostgresRecordManager,
        index: req('@langchain/core/indexing').index,
        Embeddings: req('@langchain/core/embeddings').Embeddings,
        Document: req('@langchain/core/documents').Document,
        RecursiveCharacterTextSplitter: req('@langchain/textsplitters').RecursiveCharacterTextSplitter,
        from: root,
      };
    } catch (err) {
      errors.push(`${root}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return `LangChain not installed (${errors.join('; ') || 'no install found'}); install: npm install --prefix .bench/langchain --legacy-peer-deps @langchain/community@1.1.29 @langchain/core@1.4.0`;
}

function wrapEmbedder(lc: LangChain, embedder: Embedder) {
  class SluiceHashEmbeddings extends lc.Embeddings {
    constructor() {
      super({});
    }
    async embedDocuments(texts: string[]): Promise<number[][]> {
      const out: number[][] = [];
      for (let i = 0; i < texts.length; i += embedder.batchSize) {
        const { vectors } = await embedder.embed(texts.slice(i, i + embedder.batchSize));
        for (const v of vectors) out.push(Array.from(v));
      }
      return out;
    }
    async embedQuery(text: string): Promise<number[]> {
      return (await this.embedDocuments([text]))[0];
    }
  }
  return new SluiceHashEmbeddings();
}

async function langchainDocs(lc: LangChain, corpusDir: string) {
  // LangChain's own splitter, sized like sluice's chunks (512 tokens ≈ 2000 characters).
  const splitter = new lc.RecursiveCharacterTextSplitter({ chunkSize: CHUNK_SIZE * 4, chunkOverlap: 0 });
  const docs: any[] = [];
  for (const f of corpusFiles(corpusDir)) {
    for (const d of await splitter.createDocuments([f.text], [{ source: f.path }])) docs.push(d);
  }
  return docs;
}

async function langchainRun(lc: LangChain, target: Target, corpusDir: string, mode: 'index' | 'addDocuments', tag: string) {
  const embeddings = wrapEmbedder(lc, createEmbedder({ provider: 'hash', dimensions: DIMENSIONS }, { logger: silent }));
  const tableName = `lc_${mode}_${tag}`;
  const store = await lc.PGVectorStore.initialize(embeddings, {
    postgresConnectionOptions: { connectionString: target.url },
    tableName,
    dimensions: DIMENSIONS,
    distanceStrategy: 'cosine',
  });
  const result: Record<string, unknown> = {};
  try {
    if (mode === 'addDocuments') {
      const started = Date.now();
      const docs = await langchainDocs(lc, corpusDir);
      await store.addDocuments(docs);
      const seconds = (Date.now() - started) / 1000;
      Object.assign(result, { rows: docs.length, seconds, rowsPerSec: Math.round(docs.length / seconds) });
    } else {
      const recordManager = new lc.PostgresRecordManager(`pgvector/${tableName}`, {
        postgresConnectionOptions: { connectionString: target.url },
        tableName: `lc_records_${tag}`,
      });
      await recordManager.createSchema();
      const once = async () => {
        const started = Date.now();
        const docs = await langchainDocs(lc, corpusDir);
        const r = await lc.index({
          docsSource: docs,
          recordManager,
          vectorStore: store,
          options: { cleanup: 'incremental', sourceIdKey: 'source' },
        });
        return { seconds: (Date.now() - started) / 1000, rows: docs.length, r };
      };
      const first = await once();
      const rerun = await once();
      await recordManager.end?.();
      Object.assign(result, {
        rows: first.rows,
        seconds: first.seconds,
        rowsPerSec: Math.round(first.rows / first.seconds),
        indexResult: first.r,
        unchangedRerunSeconds: rerun.seconds,
        unchangedRerunResult: rerun.r,
      });
    }
  } finally {
    await store.end?.();
  }
  return result;
}

// ---- raw COPY BINARY ---------------------------------------------------------------------------

interface LoadedRow {
  id: string;
  document_id: string;
  chunk_index: number;
  content: string;
  metadata: Record<string, unknown>;
  embedding: string;
}

/** The rows a sluice run wrote into `<schema>.docs`, in document order (inputs for the other contenders). */
async function loadedRows(c: pg.Client, schema: string): Promise<LoadedRow[]> {
  const { rows } = await c.query<LoadedRow>(
    `SELECT id, document_id, chunk_index, content, metadata, embedding::text AS embedding FROM ${ident(schema)}.docs ORDER BY document_id, chunk_index`,
  );
  return rows;
}

async function rawCopyRun(target: Target, fromSchema: string, toSchema: string) {
  const c = new pg.Client({ connectionString: target.url });
  await c.connect();
  const rows = await loadedRows(c, fromSchema);
  const tuples: CopyValue[][] = rows.map((r) => [
    { kind: 'text', value: r.id },
    { kind: 'text', value: r.document_id },
    { kind: 'int4', value: r.chunk_index },
    { kind: 'text', value: r.content },
    { kind: 'jsonb', value: JSON.stringify(r.metadata) },
    { kind: 'vector', value: decodeVectorText(r.embedding) },
  ]);
  await c.query(`CREATE SCHEMA IF NOT EXISTS ${ident(toSchema)}`);
  await c.query(`CREATE TABLE ${ident(toSchema)}.docs (LIKE ${ident(fromSchema)}.docs INCLUDING ALL)`);
  await c.end();
  const started = Date.now();
  await target.rawCopy(`${ident(toSchema)}.docs`, tuples);
  const seconds = (Date.now() - started) / 1000;
  return { rows: tuples.length, seconds, rowsPerSec: Math.round(tuples.length / seconds) };
}

/** The destination alone: the rows sluice wrote, as DOCUMENT messages, through open()/write() in this process. */
async function writerOnlyRun(target: Target, fromSchema: string, toSchema: string) {
  const c = new pg.Client({ connectionString: target.url });
  await c.connect();
  const rows = await loadedRows(c, fromSchema);
  await c.end();
  const byDoc = new Map<string, DestinationMessage & { type: 'DOCUMENT' }>();
  for (const r of rows) {
    let m = byDoc.get(r.document_id);
    if (!m) byDoc.set(r.document_id, (m = { type: 'DOCUMENT', stream: 'docs', documentId: r.document_id, chunks: [], record: {} }));
    m.chunks.push({
      id: r.id,
      documentId: r.document_id,
      chunkIndex: r.chunk_index,
      content: r.content,
      contentHash: '',
      metadata: r.metadata,
      embedding: decodeVectorText(r.embedding),
    });
  }
  const config = PgvectorConfigSchema.parse({ url: target.url, schema: toSchema, index: 'none' });
  const ctx = {
    logger: silent,
    baseDir: WORK,
    signal: new AbortController().signal,
    connection: 'bench-writer',
    follow: false,
    workDir: WORK,
  };
  const writer = await pgvector.open(config, ctx, {
    streams: [{ name: 'docs', destinationSyncMode: 'append_dedup', primaryKey: [['path']] }],
    dimensions: DIMENSIONS,
  });
  const started = Date.now(); // like the raw load: the table exists, the clock covers the writes
  async function* input(): AsyncGenerator<DestinationMessage> {
    yield* byDoc.values();
    yield { type: 'STATE', state: { type: 'STREAM' }, connection: { streams: { docs: { done: true } } } };
  }
  for await (const _ of writer.write(input())) void _;
  const seconds = (Date.now() - started) / 1000;
  await writer.close();
  return {
    rows: rows.length,
    seconds,
    rowsPerSec: Math.round(rows.length / seconds),
    path:
      target.kind === 'pglite'
        ? 'batched INSERT … unnest (PGlite)'
        : 'first load: COPY BINARY straight into the new table, commit every batch_rows',
  };
}

async function hnswBuild(target: Target, schema: string) {
  const c = new pg.Client({ connectionString: target.url });
  await c.connect();
  const started = Date.now();
  await c.query(`CREATE INDEX ON ${ident(schema)}.docs USING hnsw (embedding vector_cosine_ops)`);
  const seconds = (Date.now() - started) / 1000;
  const n = Number((await c.query(`SELECT count(*) AS n FROM ${ident(schema)}.docs`)).rows[0].n);
  await c.end();
  return { rows: n, seconds, rowsPerSec: Math.round(n / seconds) };
}

// ---- skipping unchanged documents (issue #15): sluice vs LangChain index(), cleanup "full" ---------

/** Rows written to `tables` (n_tup_ins + n_tup_upd + n_tup_del, cumulative) and the WAL position. */
async function serverCounters(
  url: string,
  tables: string[],
): Promise<{ rows: number; byTable: Record<string, number>; lsn: string | null }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    // Statistics arrive when the writing backend flushes them (at its exit, or within a second):
    // read until two readings agree.
    let last = -1;
    let byTable: Record<string, number> = {};
    for (let i = 0; i < 20; i++) {
      await c.query('SELECT pg_stat_clear_snapshot()');
      const { rows } = await c.query<{ t: string; n: string | null }>(
        `SELECT t, (SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relid = to_regclass(t)) AS n FROM unnest($1::text[]) t`,
        [tables],
      );
      byTable = Object.fromEntries(rows.map((r) => [r.t, Number(r.n ?? 0)]));
      const n = rows.reduce((sum, r) => sum + Number(r.n ?? 0), 0);
      if (n === last) break;
      last = n;
      await new Promise((r) => setTimeout(r, 500));
    }
    const lsn = await c
      .query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')
      .then((r) => r.rows[0].l)
      .catch(() => null);
    return { rows: last, byTable, lsn };
  } finally {
    await c.end();
  }
}

async function walBytes(url: string, from: string | null, to: string | null): Promise<number | null> {
  if (!from || !to) return null;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return Number((await c.query<{ b: string }>('SELECT pg_wal_lsn_diff($2, $1) AS b', [from, to])).rows[0].b);
  } finally {
    await c.end();
  }
}

interface PhaseResult {
  seconds: number;
  /** Rows written to the contender's data tables (sluice: the chunk table; LangChain: vectors + records). */
  rowsWritten: number;
  /** The same per table, plus tables written besides the data (sluice: its state table). */
  rowsWrittenByTable: Record<string, number>;
  walBytes: number | null;
  [k: string]: unknown;
}

/** Runs `work` and measures what it wrote to `tables` on the server. */
async function measured(
  url: string,
  tables: string[],
  work: () => Promise<Record<string, unknown> & { seconds: number }>,
  alsoTables: string[] = [],
): Promise<PhaseResult> {
  const before = await serverCounters(url, [...tables, ...alsoTables]);
  const result = await work();
  const after = await serverCounters(url, [...tables, ...alsoTables]);
  const byTable = Object.fromEntries(Object.keys(after.byTable).map((t) => [t, after.byTable[t] - (before.byTable[t] ?? 0)]));
  return {
    ...result,
    rowsWritten: tables.reduce((n, t) => n + byTable[t], 0),
    rowsWrittenByTable: byTable,
    walBytes: await walBytes(url, before.lsn, after.lsn),
  };
}

/**
 * The least any contender can do for a full re-sync of this corpus: walk the directory, stat and
 * read every file (synchronously, in a tight loop: no pipeline, no hashing). Measured in the same
 * run, it bounds the speed-up over LangChain, whose clock includes reading the same files.
 */
function readFloorSeconds(dir: string): number {
  const started = performance.now();
  let bytes = 0;
  for (const sub of readdirSync(dir).filter((s) => !s.startsWith('.'))) {
    for (const f of readdirSync(join(dir, sub))) {
      const path = join(dir, sub, f);
      statSync(path);
      bytes += readFileSync(path).length;
    }
  }
  if (!bytes) throw new Error(`no files in ${dir}`);
  return (performance.now() - started) / 1000;
}

/** Changes 1 % of the corpus's documents (every 100th file gets another sentence). */
function changeOnePercent(dir: string): number {
  let i = 0;
  let changed = 0;
  for (const f of corpusFiles(dir)) {
    if (i++ % 100 === 0) {
      appendFileSync(join(dir, f.path), `\nThis document was revised: valve readings were recalibrated.\n`);
      changed++;
    }
  }
  return changed;
}

/** One side-by-side comparison: where the documents come from, for each contender, and how 1 % of them change. */
interface FingerprintSource {
  /** Names the comparison's destination schema, LangChain tables and sluice run directory. */
  key: string;
  what: string;
  sameWork: string;
  sluiceSource: SluiceSource;
  /** The table sluice writes the stream to, in its destination schema. */
  sluiceTable: string;
  /** LangChain's documents, read and split inside its clock. */
  langchainDocs(lc: LangChain): Promise<any[]>;
  /** Reading the source alone, nothing else: no contender that reads it can do the re-sync faster. */
  readFloorSeconds(): Promise<number>;
  /** The report's name for that floor. */
  floorKey: string;
  /** Changes 1 % of the documents; returns how many changed. */
  changeOnePercent(): Promise<number>;
}

/**
 * Same data, same server, one run: first load, unchanged full re-sync and 1 % changed re-sync, for
 * sluice (full_refresh + append_dedup: fingerprints skip unchanged documents, the end-of-read sweep
 * deletes what the source lost) and for LangChain index() with cleanup "full" (its equivalent).
 */
async function compareFingerprints(
  target: Target,
  lc: LangChain | string,
  tag: string,
  source: FingerprintSource,
): Promise<Record<string, unknown>> {
  const schema = `bench_${source.key}_${tag}`;
  const sluiceTables = [`${schema}.${source.sluiceTable}`];
  const sluice: Record<string, PhaseResult> = {};
  const langchain: Record<string, PhaseResult> = {};
  const sluicePhase = (name: string, fresh: boolean) =>
    measured(
      target.url,
      sluiceTables,
      async () => {
        const r = await sluiceSync(target, source.sluiceSource, schema, `${source.key}-${DOCS}`, fresh, 'full_refresh');
        return {
          seconds: r.seconds,
          wallSecondsIncludingStartup: r.wallSeconds,
          documents: r.records,
          documentsUnchanged: r.unchanged,
          chunksWritten: r.chunks,
          phase: name,
        };
      },
      [`${schema}._sluice_state`],
    );

  let lcPhase: ((name: string) => Promise<PhaseResult>) | undefined;
  if (typeof lc !== 'string') {
    const embeddings = wrapEmbedder(lc, createEmbedder({ provider: 'hash', dimensions: DIMENSIONS }, { logger: silent }));
    const tableName = `lc_${source.key}_${tag}`;
    const recordsTable = `lc_${source.key}_records_${tag}`;
    // A store and record manager per phase, closed after it: their connections end, so the
    // server's statistics for the phase are flushed before they are read (an idle backend may
    // hold them back for up to 10 s). Setting them up is inside the clock, as for sluice's start-up.
    lcPhase = (name) =>
      measured(target.url, [`public.${tableName}`, `public.${recordsTable}`], async () => {
        const started = Date.now();
        const store = await lc.PGVectorStore.initialize(embeddings, {
          postgresConnectionOptions: { connectionString: target.url },
          tableName,
          dimensions: DIMENSIONS,
          distanceStrategy: 'cosine',
        });
        const recordManager = new lc.PostgresRecordManager(`pgvector/${tableName}`, {
          postgresConnectionOptions: { connectionString: target.url },
          tableName: recordsTable,
        });
        try {
          await recordManager.createSchema();
          const docs = await source.langchainDocs(lc);
          const r = await lc.index({
            docsSource: docs,
            recordManager,
            vectorStore: store,
            options: { cleanup: 'full', sourceIdKey: 'source' },
          });
          return { seconds: (Date.now() - started) / 1000, documents: docs.length, indexResult: r, phase: name };
        } finally {
          await recordManager.end?.();
          await store.end?.();
        }
      });
  }
  sluice.firstLoad = await sluicePhase('first load', true);
  sluice.unchanged = await sluicePhase('unchanged full re-sync', false);
  const floor = await source.readFloorSeconds();
  if (lcPhase) {
    langchain.firstLoad = await lcPhase('first load');
    langchain.unchanged = await lcPhase('unchanged re-run');
  }
  const changed = await source.changeOnePercent();
  sluice.onePercentChanged = await sluicePhase(`${changed} documents changed`, false);
  if (lcPhase) langchain.onePercentChanged = await lcPhase(`${changed} documents changed`);

  const ratio = (a?: number, b?: number) => (a && b ? Number((a / b).toFixed(2)) : null);
  const speedup = {
    firstLoad: ratio(langchain.firstLoad?.seconds, sluice.firstLoad.seconds),
    unchanged: ratio(langchain.unchanged?.seconds, sluice.unchanged.seconds),
    unchangedWallIncludingStartup: ratio(langchain.unchanged?.seconds, sluice.unchanged.wallSecondsIncludingStartup as number),
    onePercentChanged: ratio(langchain.onePercentChanged?.seconds, sluice.onePercentChanged.seconds),
  };
  return {
    what: source.what,
    sluice,
    langchain: typeof lc === 'string' ? { notRun: lc } : langchain,
    langchainSecondsOverSluice: speedup,
    sameWork: source.sameWork,
    loadavgAtEnd: loadavg().map((l) => l.toFixed(1)),
    // Reading the source alone, right after sluice's unchanged run: no contender that reads it can
    // beat LangChain by more than LangChain's seconds over this.
    [source.floorKey]: floor,
    mostPossibleUnchangedSpeedup: ratio(langchain.unchanged?.seconds, floor),
    targets: {
      'unchanged re-sync >= 10x faster than LangChain': speedup.unchanged === null ? 'not measured' : speedup.unchanged >= 10,
      'unchanged re-sync >= 10x faster than LangChain, counting sluice CLI start-up':
        speedup.unchangedWallIncludingStartup === null ? 'not measured' : speedup.unchangedWallIncludingStartup >= 10,
      'unchanged re-sync writes 0 rows': sluice.unchanged.rowsWritten === 0,
      '1 % changed writes 1 % of the chunks':
        sluice.onePercentChanged.rowsWritten <= Math.ceil((sluice.firstLoad.chunksWritten as number) / 100) * 2,
    },
  };
}

/** The comparison on DOCS files (one chunk each), read by sluice's file source and by readFileSync. */
async function fingerprintRuns(target: Target, lc: LangChain | string, tag: string): Promise<Record<string, unknown>> {
  const dir = join(WORK, `fp-corpus-${DOCS}`);
  rmSync(dir, { recursive: true, force: true });
  cpSync(corpus(DOCS), dir, { recursive: true });
  try {
    return await compareFingerprints(target, lc, tag, {
      key: 'fp',
      // Both clocks include reading the 10k files (sluice: its file source; LangChain: readFileSync +
      // its splitter in langchainDocs) and setting up the store; neither includes starting Node.
      // sluice's wall time adds its CLI's start-up (a child process), LangChain runs in this process.
      what: `${DOCS} files, 1 chunk each, hash embedder (${DIMENSIONS} dims), no vector index; sluice: file source full_refresh + append_dedup; LangChain: index() + PostgresRecordManager, cleanup "full". rowsWritten = n_tup_ins + n_tup_upd + n_tup_del of the contender's data tables (sluice: the chunk table, with its _sluice_state checkpoints apart in rowsWrittenByTable; LangChain: vectors + record manager); walBytes = whole server`,
      sameWork:
        'both read and split the same files inside their clock, and look up / clean up against the same server; sluice seconds = the sync (CLI start-up apart), LangChain seconds = in-process',
      sluiceSource: fileSource(dir),
      sluiceTable: 'docs',
      langchainDocs: (lc) => langchainDocs(lc, dir),
      // Reading the files alone (walk + stat + read, nothing else).
      readFloorSeconds: async () => readFloorSeconds(dir),
      floorKey: 'readingTheFilesAloneSeconds',
      changeOnePercent: async () => changeOnePercent(dir),
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- the same comparison with a PostgreSQL table as the source (the setting) ------------

/** Creates `<schema>.docs(id, title, body)` with DOCS rows of ~1 KB, on the destination's server. */
async function createSourceTable(url: string, schema: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`CREATE SCHEMA ${ident(schema)}`);
    await c.query(`CREATE TABLE ${ident(schema)}.docs (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL)`);
    for (let from = 0; from < DOCS; from += 5000) {
      const ids = Array.from({ length: Math.min(5000, DOCS - from) }, (_, k) => from + k);
      await c.query(`INSERT INTO ${ident(schema)}.docs (id, title, body) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])`, [
        ids,
        ids.map((i) => `Document ${i}`),
        ids.map(rowBody),
      ]);
    }
    // A settled table, as a long-lived one is: statistics, visibility map and hint bits set, so
    // neither contender's first read pays for the load.
    await c.query(`VACUUM ANALYZE ${ident(schema)}.docs`);
  } finally {
    await c.end();
  }
}

/** The rows as LangChain reads them (one SELECT with `pg`): id, title and body in id order. */
async function selectSourceRows(url: string, schema: string): Promise<Array<{ id: string; title: string; body: string }>> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<{ id: string; title: string; body: string }>(`SELECT id, title, body FROM ${ident(schema)}.docs ORDER BY id`))
      .rows;
  } finally {
    await c.end();
  }
}

/**
 * The comparison on a PostgreSQL table of DOCS rows of ~1 KB (the figures are for 50 000),
 * read by sluice's postgres source and by one SELECT with `pg`: no files, so the floor is reading
 * the rows, not walking a directory.
 */
async function fingerprintPgRuns(target: Target, lc: LangChain | string, tag: string): Promise<Record<string, unknown>> {
  const sourceSchema = `bench_src_${tag}`;
  const stream = `${sourceSchema}.docs`;
  await createSourceTable(target.url, sourceSchema);
  try {
    return await compareFingerprints(target, lc, tag, {
      key: 'fpg',
      what: `${DOCS} rows of ~1 KB in ${stream}(id bigint primary key, title text, body text) on the destination's server, 1 chunk each, hash embedder (${DIMENSIONS} dims), no vector index; sluice: postgres source, full_refresh + append_dedup, text_fields [title, body]; LangChain: one SELECT … ORDER BY id with pg, a Document per row ("title\n\nbody", metadata.source = id), RecursiveCharacterTextSplitter, index() + PostgresRecordManager, cleanup "full". rowsWritten = n_tup_ins + n_tup_upd + n_tup_del of the contender's data tables (sluice: the chunk table, with its _sluice_state checkpoints apart in rowsWrittenByTable; LangChain: vectors + record manager); walBytes = whole server`,
      sameWork:
        'both read the same rows from the same server inside their clock, split them, and look up / clean up against that server; sluice seconds = the sync (CLI start-up apart), LangChain seconds = in-process',
      sluiceSource: {
        yaml: `{ type: postgres, config: { url: ${JSON.stringify(target.url)}, schemas: [${sourceSchema}], include: [docs] } }`,
        stream,
        textFields: ['title', 'body'],
      },
      // The pgvector destination's default table name for the stream (lower case, [^a-z0-9_] → _).
      sluiceTable: stream.replace(/[^a-z0-9_]/g, '_'),
      async langchainDocs(lc) {
        const splitter = new lc.RecursiveCharacterTextSplitter({ chunkSize: CHUNK_SIZE * 4, chunkOverlap: 0 });
        const docs: any[] = [];
        for (const r of await selectSourceRows(target.url, sourceSchema)) {
          for (const d of await splitter.createDocuments([`${r.title}\n\n${r.body}`], [{ source: String(r.id) }])) docs.push(d);
        }
        return docs;
      },
      // Connecting and running LangChain's SELECT, the rows into memory, nothing else; the best of
      // three, so the first one's warm-up (loading pg's code, cold buffers) does not raise the floor.
      async readFloorSeconds() {
        let best = Infinity;
        for (let k = 0; k < 3; k++) {
          const started = performance.now();
          const rows = await selectSourceRows(target.url, sourceSchema);
          best = Math.min(best, (performance.now() - started) / 1000);
          if (rows.length !== DOCS) throw new Error(`${stream} has ${rows.length} rows, expected ${DOCS}`);
        }
        return best;
      },
      floorKey: 'readingTheRowsAloneSeconds',
      async changeOnePercent() {
        const c = new pg.Client({ connectionString: target.url });
        await c.connect();
        try {
          const r = await c.query(
            `UPDATE ${ident(sourceSchema)}.docs SET body = body || ' This document was revised: valve readings were recalibrated.' WHERE id % 100 = 0`,
          );
          return r.rowCount ?? 0;
        } finally {
          await c.end();
        }
      },
    });
  } finally {
    const c = new pg.Client({ connectionString: target.url });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${ident(sourceSchema)} CASCADE`).finally(() => c.end());
  }
}

export default async function bench(): Promise<Record<string, unknown>> {
  mkdirSync(WORK, { recursive: true });
  cli = builtCli(ROOT);
  const target = await startTarget();
  const tag = Date.now().toString(36);
  const report: Record<string, unknown> = {
    target:
      target.kind === 'pglite'
        ? 'PGlite + pgvector (in-memory, socket server) — its single wasm session caps every contender; ratios say little'
        : 'PostgreSQL (SLUICE_BENCH_PG_URL)',
    documents: DOCS,
    dimensions: DIMENSIONS,
    sluiceCli: cli.how,
    node: process.version,
    loadavg: loadavg().map((l) => l.toFixed(1)),
  };
  try {
    // SLUICE_BENCH_PGV_ONLY=fingerprints: only the unchanged-documents comparisons (larger corpora),
    // on files and on a PostgreSQL table; =fingerprints-pg: only the PostgreSQL-table one (the issue's).
    const only = process.env.SLUICE_BENCH_PGV_ONLY;
    if (only === 'fingerprints' || only === 'fingerprints-pg') {
      const lc = loadLangChain();
      if (only === 'fingerprints') report.fingerprints = await fingerprintRuns(target, lc, tag);
      report.fingerprintsPostgresSource = await fingerprintPgRuns(target, lc, tag);
      return report;
    }
    const dir = corpus(DOCS);
    const sluiceSchema = `bench_sluice_${tag}`;
    const first = await sluiceSync(target, fileSource(dir), sluiceSchema, `main-${DOCS}`, true);
    const rerun = await sluiceSync(target, fileSource(dir), sluiceSchema, `main-${DOCS}`, false);
    const sluice = {
      rows: first.chunks,
      seconds: first.seconds,
      rowsPerSec: Math.round(first.chunks / first.seconds),
      wallSecondsIncludingStartup: first.wallSeconds,
      peakRssMb: first.peakRssMb,
      unchangedRerunSeconds: rerun.seconds,
      unchangedRerunWrites: rerun.chunks,
    };
    report.sluice = sluice;

    let raw: { rowsPerSec: number } | undefined;
    try {
      raw = await rawCopyRun(target, sluiceSchema, `bench_raw_${tag}`);
      report.rawCopyBinary = {
        ...raw,
        via: target.kind === 'pglite' ? "in-process COPY FROM '/dev/blob' (FORMAT binary)" : 'COPY FROM STDIN (FORMAT BINARY)',
      };
    } catch (err) {
      report.rawCopyBinary = { error: (err as Error).message };
    }
    let writerOnly: { rowsPerSec: number } | undefined;
    try {
      writerOnly = await writerOnlyRun(target, sluiceSchema, `bench_writer_${tag}`);
      report.sluiceDestinationOnly = writerOnly;
    } catch (err) {
      report.sluiceDestinationOnly = { error: (err as Error).message };
    }
    try {
      report.hnswBuildAfterLoad = await hnswBuild(target, sluiceSchema);
    } catch (err) {
      report.hnswBuildAfterLoad = { error: (err as Error).message };
    }

    const lc = loadLangChain();
    try {
      report.fingerprints = await fingerprintRuns(target, lc, tag);
    } catch (err) {
      report.fingerprints = { error: (err as Error).stack };
    }
    try {
      report.fingerprintsPostgresSource = await fingerprintPgRuns(target, lc, tag);
    } catch (err) {
      report.fingerprintsPostgresSource = { error: (err as Error).stack };
    }
    let lcIndex: { rowsPerSec?: number; unchangedRerunSeconds?: number } | undefined;
    if (typeof lc === 'string') {
      report.langchain = { notRun: lc };
    } else {
      try {
        lcIndex = await langchainRun(lc, target, dir, 'index', tag);
        report.langchainIndex = lcIndex;
      } catch (err) {
        report.langchainIndex = { error: (err as Error).message };
      }
      try {
        report.langchainAddDocuments = await langchainRun(lc, target, dir, 'addDocuments', tag);
      } catch (err) {
        report.langchainAddDocuments = { error: (err as Error).message };
      }
    }

    const ratio = (a?: number, b?: number) => (a && b ? Number((a / b).toFixed(2)) : null);
    const vsIndex = ratio(sluice.rowsPerSec, lcIndex?.rowsPerSec);
    const ofCopy = ratio(sluice.rowsPerSec, raw?.rowsPerSec);
    const rerunSpeedup = ratio(lcIndex?.unchangedRerunSeconds, sluice.unchangedRerunSeconds);
    report.ratios = {
      sluiceVsLangchainIndex: vsIndex,
      sluiceVsLangchainAddDocuments: ratio(
        sluice.rowsPerSec,
        (report.langchainAddDocuments as { rowsPerSec?: number } | undefined)?.rowsPerSec,
      ),
      sluiceShareOfRawCopy: ofCopy,
      destinationOnlyShareOfRawCopy: ratio(writerOnly?.rowsPerSec, raw?.rowsPerSec),
      unchangedRerunSpeedupVsLangchainIndex: rerunSpeedup,
    };

    const rss: Record<string, unknown> = {};
    for (const n of RSS_DOCS) {
      if (n === DOCS) {
        rss[n] = { peakRssMb: first.peakRssMb, rowsPerSec: sluice.rowsPerSec };
        continue;
      }
      const predicted = Math.round((n / DOCS) * first.seconds);
      if (predicted > RSS_BUDGET_SECONDS) {
        rss[n] = {
          skipped: `predicted ${predicted}s at the main run's ${sluice.rowsPerSec} rows/s exceeds the ${RSS_BUDGET_SECONDS}s budget (SLUICE_BENCH_PGV_RSS_BUDGET_S)`,
        };
        continue;
      }
      const run = await sluiceSync(target, fileSource(corpus(n)), `bench_rss_${n}_${tag}`, `rss-${n}`, true);
      rss[n] = { peakRssMb: run.peakRssMb, rows: run.chunks, seconds: run.seconds, rowsPerSec: Math.round(run.chunks / run.seconds) };
    }
    report.peakRssByDocuments = rss;
    const peaks = Object.values(rss)
      .map((r) => (r as { peakRssMb?: number }).peakRssMb)
      .filter((p): p is number => p !== undefined);
    report.targets = {
      note:
        target.kind === 'pglite'
          ? 'targets are defined for a real PostgreSQL server; on PGlite only the memory target is meaningful'
          : 'real PostgreSQL',
      '>= 6x LangChain index()': vsIndex === null ? 'not measured' : vsIndex >= 6,
      '>= 70% of raw COPY BINARY': ofCopy === null ? 'not measured' : ofCopy >= 0.7,
      'unchanged re-run >= 10x faster than LangChain': rerunSpeedup === null ? 'not measured' : rerunSpeedup >= 10,
      'peak RSS < 300 MB': peaks.every((p) => p < 300),
      'peak RSS flat (largest/smallest <= 1.5)': peaks.length > 1 ? Math.max(...peaks) / Math.min(...peaks) <= 1.5 : 'one size only',
    };
  } finally {
    await target.stop();
  }
  return report;
}

// Let `npx tsx test/bench/pgvector.bench.ts` run it alone.
if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  bench().then(
    (r) => console.log(JSON.stringify(r, null, 2)),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
