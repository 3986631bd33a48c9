// The pgvector writer: buffers documents per stream (bounded by rows and bytes), applies each
// buffer in one transaction together with the connection state it covers (exactly once), and
// swaps overwrite generations in one transaction at STREAM_COMPLETE. Documents carry fingerprints
// (docs/fingerprints.md): unchanged ones are never sent (append_dedup) or arrive as KEEP (overwrite:
// copied server-side from the live table, and an all-KEEP generation writes nothing and keeps the
// live table); metadata-only changes update the stored rows without touching their vectors.
import type {
  Chunk,
  ConnectorContext,
  DocumentFingerprint,
  DestinationEvent,
  DestinationMessage,
  DestinationWriter,
  OpenOptions,
  SourceState,
} from '../../src/protocol/connector.ts';
import type { DestinationSyncMode } from '../../src/protocol/messages.ts';
import type pg from 'pg';
import { SluiceError, describeUnknown } from '../../src/protocol/errors.ts';
import { canonicalJson } from '../../src/protocol/identity.ts';
import { CommitQueue, pullOrWake } from '../../src/cdk/commits.ts';
import type { PgvectorConfig } from './config.ts';
import { copyBinary, type CopyValue } from './copy.ts';
import { KeepLog, idHashSql } from './keep-log.ts';
import {
  addFingerprintColumns,
  CHUNK_COLUMNS,
  chunkColumnsOf,
  FINGERPRINT_COLUMNS,
  documentFingerprintSql,
  hasAllFingerprintColumns,
  hasFingerprintColumns,
  storedFingerprint,
  MAX_INDEXED_DIMENSIONS,
  REQUIRED_COLUMNS,
  STATE_TABLE,
  buildVectorIndex,
  createChunkTable,
  documentIndexName,
  ensureExtension,
  coverDocumentIndex,
  ensureSchema,
  ensureStateTable,
  hasVectorIndex,
  indexDrift,
  inspectTable,
  type TableInfo,
  type VectorIndexInfo,
  readTableNote,
  writeTableNote,
  newGenerationName,
  primaryKeyName,
  vectorIndexName,
} from './schema.ts';
import { alteredTable, notATableOfKind, shapeProblemsOf, tableShapeProblems } from './shape.ts';
import { tableFacts } from './table-facts.ts';
import { openSession, pgError, takeSession, type Session, type StateRead } from './session.ts';
import { rememberTableColumns } from './spare.ts';
import { storeState, switchGenerations } from './generations.ts';
import { encodeBinaryArray, encodeVector, ident, qualified, tableNameFor } from './sql.ts';

/** The final state of one document within a buffer: later messages for it supersede earlier ones. */
interface PendingDocument {
  /** Delete the document's stored chunks with chunk_index >= this (0 = all) before upserting. */
  trimFrom?: number;
  chunks: Map<string, Chunk>;
  fingerprint?: DocumentFingerprint;
  /** Only metadata (and fingerprint) change: the stored text and vectors stay. */
  metadataOnly?: boolean;
  /** Overwrite: copy the document's live rows into the new generation. */
  keep?: boolean;
}

/** What one commit applies: per stream, the buffered documents and the counts they add up to. */
type Batch = Array<{
  target: StreamTarget;
  pending: Map<string, PendingDocument>;
  written: StreamTarget['written'];
  /** Overwrite: create the new generation first, with the documents kept so far. */
  materialize?: KeepLog;
}>;

/** `(a, b, …)`: the column list of an INSERT or COPY. */
const columnList = (columns: readonly string[]) => `(${columns.join(', ')})`;
/** Merges a chunk row into the table by id: every written column but id takes the new value. */
const upsertClause = (columns: readonly string[]) =>
  `ON CONFLICT (id) DO UPDATE SET ${columns
    .filter((c) => c !== 'id')
    .map((c) => `${c} = EXCLUDED.${c}`)
    .join(', ')}`;
/** Ids per statement when kept documents are copied from the live table. */
const KEEP_IDS_PER_STATEMENT = 5000;

interface StreamTarget {
  stream: string;
  mode: DestinationSyncMode;
  /** The table readers use. */
  table: string;
  /** The table rows go into now: `table`, or the new generation during an overwrite. */
  writeTable: string;
  /**
   * The chunk columns of `writeTable`: CHUNK_COLUMNS, or fewer in an older table the sync user may
   * not alter (see migrate): the columns it lacks are neither written nor read.
   */
  columns: readonly string[];
  /** The chunk columns of `table` (an overwrite copies kept rows and looks up fingerprints there). */
  liveColumns: readonly string[];
  /** Created empty by this writer: its vector index is built after the load. */
  fresh: boolean;
  vectorOid: number;
  pending: Map<string, PendingDocument>;
  written: { records: number; chunksWritten: number; chunksDeleted: number };
  swapped: boolean;
  /** The first bulk load may COPY straight into the (fresh) table until an id repeats. */
  directCopy: boolean;
  /** The table readers use held rows with fingerprint columns at open: fingerprints() asks it. */
  lookup: boolean;
  /**
   * Overwrite of an existing table while every message so far was a KEEP: the new generation is
   * not created yet (see keep-log.ts).
   */
  keepOnly?: KeepLog;
  /** Set when something other than KEEP arrived: the next commit creates the new generation. */
  materialize?: KeepLog;
  /** Reindex: the new generation is completely loaded and indexed, waiting for the switch of all streams. */
  loaded?: boolean;
}

const clean = (s: string) => (s.includes('\u0000') ? s.replace(/\u0000/g, '') : s);
/** PostgreSQL text and jsonb reject NUL characters; drop them rather than fail the sync. */
const metadataJson = (m: Record<string, unknown>) => JSON.stringify(m ?? {}, (_k, v: unknown) => (typeof v === 'string' ? clean(v) : v));

export async function openWriter(config: PgvectorConfig, ctx: ConnectorContext, options: OpenOptions): Promise<DestinationWriter> {
  // The session readState() left in this run (the index identity check), else a new one.
  const parked = await takeSession(config, ctx);
  const session = parked?.session ?? (await openSession(config, ctx));
  const writer = new PgvectorWriter(config, ctx, options, session, parked?.stateRead);
  try {
    await writer.prepare();
    return writer;
  } catch (err) {
    await writer.discardUnfinished();
    await session.close();
    throw pgError(err, `connection ${ctx.connection}, destination ${session.label}`);
  }
}

class PgvectorWriter implements DestinationWriter {
  private readonly targets = new Map<string, StreamTarget>();
  private vectorSchema = 'public';
  private useCopy = false;
  /** Streams whose table this open created or found empty (see DestinationWriter.streamsWithoutData). */
  private readonly createdEmpty: string[] = [];
  private stageReady = false;
  private bufferedRows = 0;
  private bufferedBytes = 0;
  /** The connection state the table holds (canonical JSON), as read at start or last committed. */
  private storedState: string | undefined;
  private closed = false;
  /** Reindex: the latest STATE, stored together with the switch at the end (./generations.ts). */
  private reindexState: Extract<DestinationMessage, { type: 'STATE' }> | undefined;

  constructor(
    private readonly config: PgvectorConfig,
    private readonly ctx: ConnectorContext,
    private readonly options: OpenOptions,
    private readonly session: Session,
    /** The state Destination.readState read on this session moments ago (this run, under its lock). */
    private stateRead?: StateRead,
  ) {}

  private get client() {
    return this.session.client;
  }

  private where(stream?: string): string {
    return [`connection ${this.ctx.connection}`, stream ? `stream ${stream}` : '', `destination ${this.session.label}`]
      .filter(Boolean)
      .join(', ');
  }

  /** Everything that can fail before a write: extension, schema, tables, dimensions. */
  async prepare(): Promise<void> {
    const { config, options } = this;
    const dims = options.dimensions;
    if (config.write_method === 'copy' && this.session.isPglite) {
      throw new SluiceError('write_method: copy is not available on PGlite (it cannot take COPY FROM STDIN)', {
        kind: 'config',
        where: 'destination.write_method',
        hint: 'use write_method: auto or insert with PGlite',
      });
    }
    this.useCopy = config.write_method === 'copy' || (config.write_method === 'auto' && !this.session.isPglite);
    if (dims && dims > MAX_INDEXED_DIMENSIONS && config.index !== 'none') {
      throw new SluiceError(
        `pgvector cannot build a ${config.index} index on vectors of ${dims} dimensions (at most ${MAX_INDEXED_DIMENSIONS})`,
        {
          kind: 'config',
          where: 'destination.index',
          hint: `set index: none, or ask the embedding model for ${MAX_INDEXED_DIMENSIONS} dimensions or fewer (embedding.dimensions)`,
        },
      );
    }
    // readState looked the extension up on this session moments ago; created only if it was not there.
    this.vectorSchema = this.stateRead?.vectorSchema ?? (await ensureExtension(this.client, this.where()));
    // readState found the state table on this session moments ago (this run, under its lock): its
    // schema and it are there, and creating them again would only cost two round trips.
    if (!this.stateRead?.tableExisted) {
      await ensureSchema(this.client, config.schema);
      await ensureStateTable(this.client, config.schema);
    }

    const byTable = new Map<string, string>();
    for (const s of options.streams) {
      const table = tableNameFor(s.name, config.table);
      const clash = byTable.get(table);
      if (clash !== undefined) {
        throw new SluiceError(`streams ${clash} and ${s.name} would both write table ${config.schema}.${table}`, {
          kind: 'config',
          where: 'destination.table',
          hint: 'use a table template with {stream} or a map stream → table',
        });
      }
      byTable.set(table, s.name);
    }
    // Check every existing table before creating anything, so a mismatch leaves no trace.
    const infos = new Map<string, Awaited<ReturnType<typeof inspectTable>>>();
    const notes = new Map<string, Awaited<ReturnType<typeof readTableNote>>>();
    const vectorIndexes = new Map<string, VectorIndexInfo | undefined>();
    const plainDocumentIndexes = new Set<string>();
    for (const s of options.streams) {
      const table = tableNameFor(s.name, config.table);
      const facts = await tableFacts(this.client, config.schema, table);
      const info = facts.info;
      infos.set(s.name, info);
      if (!info.exists) continue;
      vectorIndexes.set(s.name, facts.vectorIndex);
      if (facts.documentIndex === 'plain') plainDocumentIndexes.add(s.name);
      // An overwrite replaces the table, so only what stops that (a view in its place) matters.
      const altered =
        s.destinationSyncMode === 'overwrite' ? [notATableOfKind(facts.relkind)].filter((p): p is string => !!p) : shapeProblemsOf(facts);
      if (altered.length) throw alteredTable(config.schema, table, altered, this.where(s.name));
      const missing = REQUIRED_COLUMNS.filter((c) => !info.columns.includes(c));
      if (missing.length) {
        throw new SluiceError(`table ${config.schema}.${table} exists but lacks the column(s) ${missing.join(', ')}`, {
          kind: 'destination',
          where: this.where(s.name),
          hint: 'point destination.table at another table; sluice tables have id, document_id, chunk_index, content, metadata, embedding',
        });
      }
      if (s.destinationSyncMode !== 'overwrite') {
        // Document ids come from the primary key: a changed key would leave every old document's
        // chunks behind under ids no new record ever names again.
        const note = facts.note;
        const key = (pk: string[][]) => `[${pk.map((p) => p.join('.')).join(', ')}]`;
        if (note && note !== 'foreign' && JSON.stringify(note.primary_key) !== JSON.stringify(s.primaryKey)) {
          throw new SluiceError(
            `stream ${s.name}: primary_key changed from ${key(note.primary_key)} to ${key(s.primaryKey)}, but table ${config.schema}.${table} holds documents keyed by the old one; syncing would leave their chunks behind`,
            {
              kind: 'config',
              where: this.where(s.name),
              hint: `re-key the table with one overwrite run (it replaces the table atomically): set destination_sync_mode: overwrite on stream ${s.name}, run sluice sync <pipeline> --full-refresh, then set it back; or keep primary_key ${key(note.primary_key)}`,
            },
          );
        }
        notes.set(s.name, note);
      }
      if (dims && info.dimensions !== undefined && info.dimensions !== dims && s.destinationSyncMode !== 'overwrite') {
        throw new SluiceError(
          `table ${config.schema}.${table} has ${info.dimensions} dimensions, embedding model${options.embedderName ? ` ${options.embedderName}` : ''} gives ${dims}`,
          {
            kind: 'destination',
            where: this.where(s.name),
            hint: 'write to another table (destination.table), or run the stream once in overwrite mode (full_refresh) to rebuild it with the new model',
          },
        );
      }
    }
    for (const s of options.streams) {
      const table = tableNameFor(s.name, config.table);
      const info = infos.get(s.name)!;
      const overwrite = s.destinationSyncMode === 'overwrite';
      let writeTable = table;
      let fresh = !info.exists;
      const liveHasRows = info.exists && (await hasRows(this.client, config.schema, table));
      // A table made before fingerprints were kept gets their columns in place (append modes; an
      // overwrite replaces it with a new generation that has them). One made before the embedder
      // tag or the source digest was kept gets those columns in any mode: an overwrite copies kept
      // rows from it. Where the user may not add them, the sync goes on without them (see migrate).
      let liveColumns = info.exists ? chunkColumnsOf(info) : CHUNK_COLUMNS;
      if (info.exists && (overwrite ? hasFingerprintColumns(info) : true) && !hasAllFingerprintColumns(info))
        liveColumns = await this.migrate(s.name, table, info);
      // Append modes list the table's documents (full refresh): its document index is made to cover
      // that. Not while the table lacks a fingerprint column: the index cannot include it yet (and
      // the user who may not add it may not rebuild the index either; migrate's warning says so).
      if (!overwrite && plainDocumentIndexes.has(s.name) && liveColumns.length === CHUNK_COLUMNS.length)
        await this.coverDocumentIndex(s.name, table);
      // An overwrite over a table of another shape (altered by hand) or vector size rebuilds it in
      // full: its rows are never carried over (KEEP) into the new generation.
      const lookup =
        liveHasRows &&
        (!overwrite ||
          (hasFingerprintColumns(info) &&
            (!dims || info.dimensions === undefined || info.dimensions === dims) &&
            !(await tableShapeProblems(this.client, config.schema, table)).length));
      let keepOnly: KeepLog | undefined;
      if (overwrite) {
        // A leftover generation from an interrupted overwrite is discarded: a full refresh starts over.
        writeTable = newGenerationName(table);
        if ((await inspectTable(this.client, config.schema, writeTable)).exists)
          await this.client.query(`DROP TABLE ${qualified(config.schema, writeTable)}`);
        fresh = true;
        // Over a table whose documents may come back unchanged (KEEP), the new generation is created
        // only once something else arrives: an unchanged overwrite writes nothing.
        if (lookup) keepOnly = new KeepLog(this.ctx.workDir);
      }
      if (fresh && !keepOnly) await this.createGeneration(writeTable, s.primaryKey);
      // Empty, not only new: a table created by a run that died before its first commit is empty too.
      if (!overwrite && !liveHasRows) this.createdEmpty.push(s.name);
      // Tables sluice made before it kept notes are adopted; a note someone else wrote is left alone.
      if (!fresh && notes.get(s.name) === undefined)
        await writeTableNote(this.client, config.schema, writeTable, { primary_key: s.primaryKey });
      if (!fresh) await this.applyIndexConfig(s.name, table, info.dimensions, vectorIndexes.get(s.name));
      const vectorOid = info.exists ? info.vectorOid! : (await inspectTable(this.client, config.schema, writeTable)).vectorOid!;
      // This run's listing of the table (append modes) starts from the columns found here.
      if (!overwrite && info.exists) rememberTableColumns(config, this.ctx, table, liveColumns);
      this.targets.set(s.name, {
        stream: s.name,
        mode: s.destinationSyncMode,
        table,
        writeTable,
        // An overwrite writes a new generation, which has every column.
        columns: overwrite ? CHUNK_COLUMNS : liveColumns,
        liveColumns,
        fresh,
        vectorOid,
        pending: new Map(),
        written: { records: 0, chunksWritten: 0, chunksDeleted: 0 },
        swapped: false,
        directCopy: fresh,
        lookup,
        keepOnly,
      });
    }
  }

  private async createGeneration(writeTable: string, primaryKey: string[][]): Promise<void> {
    await createChunkTable(this.client, this.config.schema, writeTable, this.vectorSchema, this.options.dimensions);
    await writeTableNote(this.client, this.config.schema, writeTable, { primary_key: primaryKey });
  }

  /**
   * Adds the fingerprint columns to a table written before sluice kept them (its rows are kept as
   * they are), and returns the table's chunk columns. A sync user who does not own the table (a
   * common set-up: tables owned by a migration role, the sync user granted SELECT, INSERT, UPDATE,
   * DELETE) may not alter it: then a table that has fingerprint_content and fingerprint_metadata
   * is synced without the optional columns it lacks, with one warning naming the cost and the fix;
   * one without them (no fingerprints at all) cannot skip anything and stays an error.
   */
  private async migrate(stream: string, table: string, info: TableInfo): Promise<readonly string[]> {
    const { schema } = this.config;
    try {
      await addFingerprintColumns(this.client, schema, table);
    } catch (err) {
      const refused = (err as { code?: string }).code === '42501';
      if (refused && hasFingerprintColumns(info)) {
        this.warnMissingColumns(stream, table, info, err);
        return chunkColumnsOf(info);
      }
      if (refused) {
        throw new SluiceError(`cannot add the fingerprint columns to table ${schema}.${table}: ${describeUnknown(err)}`, {
          kind: 'destination',
          where: this.where(stream),
          cause: err,
          hint: `the table's owner (or a superuser) runs: ${addColumnsSql(schema, table, FINGERPRINT_COLUMNS)}; or sync as the owner`,
        });
      }
      throw pgError(err, this.where(stream), `cannot add the fingerprint columns to table ${schema}.${table}`);
    }
    this.ctx.logger.info(
      { stream, table: `${schema}.${table}` },
      hasFingerprintColumns(info)
        ? `added column(s) ${FINGERPRINT_COLUMNS.filter((c) => !info.columns.includes(c)).join(', ')} to ${schema}.${table}; its documents show no embedder tag or source digest until they are next written`
        : `added columns ${FINGERPRINT_COLUMNS.join(', ')} to ${schema}.${table}; its documents are rewritten once, the next time each is synced`,
    );
    return CHUNK_COLUMNS;
  }

  /** One warning per table and run: what the table lacks, what that costs, what its owner runs. */
  private warnMissingColumns(stream: string, table: string, info: TableInfo, err: unknown): void {
    const { schema } = this.config;
    const missing = FINGERPRINT_COLUMNS.filter((c) => !info.columns.includes(c));
    const costs = [
      missing.includes('fingerprint_source') &&
        "no source digests are stored, so every re-sync reads all of the stream's source rows in full (unchanged documents are still recognised by their fingerprints and neither re-embedded nor rewritten)",
      missing.includes('fingerprint_embedder') &&
        'no embedder tag is stored, so a change of embedding model is not recognised from the stored rows',
    ].filter(Boolean);
    const fix = addColumnsSql(schema, table, missing);
    this.ctx.logger.warn(
      { stream, table: `${schema}.${table}`, missing, err: describeUnknown(err), fix },
      `table ${schema}.${table} lacks column(s) ${missing.join(', ')} and this user may not add them (${describeUnknown(err)}); the sync goes on without them: ${costs.join('; ')}. To fix, the table's owner runs: ${fix}; the next sync run as the owner then also rebuilds the table's document index to include the new column(s) (until then listing its documents reads the table)`,
    );
  }

  /**
   * Rebuilds a document index made before it carried the fingerprint columns (see DOCUMENT_INDEX_KEYS).
   * Only a speed-up: when it cannot be done now (a long reader holds the table, the user does not own
   * it) the sync goes on with the plain index, and a later one tries again.
   */
  private async coverDocumentIndex(stream: string, table: string): Promise<void> {
    const { schema } = this.config;
    try {
      await coverDocumentIndex(this.client, schema, table);
    } catch (err) {
      this.ctx.logger.warn(
        { stream, table: `${schema}.${table}`, err: describeUnknown(err) },
        `could not rebuild index ${documentIndexName(table)} of ${schema}.${table} to include the fingerprint columns (${describeUnknown(err)}); the sync goes on with the plain index, and listing its documents reads the whole table until a later sync can rebuild it (it needs the table's owner and no long reader)`,
      );
      return;
    }
    this.ctx.logger.info(
      { stream, table: `${schema}.${table}`, index: documentIndexName(table) },
      `rebuilt index ${documentIndexName(table)} of ${schema}.${table} to include the fingerprint columns (once): listing its documents no longer reads the whole table`,
    );
  }

  /**
   * Stored fingerprints of `documentIds` in the table readers use (for an overwrite: the live
   * generation). One indexed query; a table that was empty (or absent) at open needs none.
   */
  async fingerprints(stream: string, documentIds: string[]): Promise<Map<string, DocumentFingerprint>> {
    const t = this.target(stream);
    if (!t.lookup || !documentIds.length) return new Map();
    // One look-up at a time on the writer's connection (the engine asks for the next batch before
    // this one is answered): with the commits that share it, a query waits behind at most one
    // other, instead of piling up in pg's queue (pg warns about that, and pg@9 will refuse it).
    const turn = this.lookupTurn.then(() => this.lookUp(stream, t.table, t.liveColumns, documentIds));
    this.lookupTurn = turn.catch(() => undefined);
    return turn;
  }

  private lookupTurn: Promise<unknown> = Promise.resolve();

  private async lookUp(
    stream: string,
    table: string,
    columns: readonly string[],
    documentIds: string[],
  ): Promise<Map<string, DocumentFingerprint>> {
    const found = new Map<string, DocumentFingerprint>();
    try {
      // prepare() added the fingerprint columns a table lacked, unless the user may not (see migrate).
      const fingerprintSql = documentFingerprintSql(columns.includes('fingerprint_embedder'), columns.includes('fingerprint_source'));
      const { rows } = await this.client.query<{
        document_id: string;
        fingerprint_content: string | null;
        fingerprint_metadata: string | null;
        fingerprint_embedder: string | null;
        fingerprint_source: string | null;
      }>(
        `SELECT document_id, ${fingerprintSql} FROM ${qualified(this.config.schema, table)}
          WHERE document_id = ANY($1::text[]) GROUP BY document_id`,
        [documentIds],
      );
      for (const r of rows) {
        const fingerprint = storedFingerprint(r);
        if (fingerprint) found.set(r.document_id, fingerprint);
      }
      return found;
    } catch (err) {
      throw pgError(err, this.where(stream), `cannot read the stored fingerprints of ${this.config.schema}.${table}`);
    }
  }

  streamsWithoutData(): string[] {
    return [...this.createdEmpty];
  }

  /**
   * A changed `distance`, `index`, `hnsw` or `ivfflat` takes effect on an existing table: its vector
   * index is rebuilt (or dropped for index: none) before the run writes, so search and index agree.
   */
  private async applyIndexConfig(
    stream: string,
    table: string,
    dimensions: number | undefined,
    current: VectorIndexInfo | undefined,
  ): Promise<void> {
    const { config } = this;
    const drift = indexDrift(config, current);
    if (!drift || !current) return;
    const started = Date.now();
    await this.client.query(`DROP INDEX ${qualified(config.schema, current.name)}`);
    if (config.index !== 'none' && dimensions)
      await buildVectorIndex(this.client, config, config.schema, table, vectorIndexName(table), this.vectorSchema);
    this.ctx.logger.info(
      { stream, table: `${config.schema}.${table}`, change: drift, ms: Date.now() - started },
      `vector index of ${config.schema}.${table} ${config.index === 'none' ? 'dropped' : 'rebuilt'}: ${drift}`,
    );
  }

  async readState(): Promise<SourceState | undefined> {
    const read = this.stateRead;
    if (read) {
      // Once: a later call reads the table, as it always did. A copy, as a fresh read would be.
      this.stateRead = undefined;
      this.storedState = read.state ? canonicalJson(read.state) : undefined;
      return read.state ? structuredClone(read.state) : undefined;
    }
    try {
      const { rows } = await this.client.query<{ state: SourceState }>(
        `SELECT state FROM ${qualified(this.config.schema, STATE_TABLE)} WHERE connection = $1`,
        [this.ctx.connection],
      );
      this.storedState = rows[0] ? canonicalJson(rows[0].state) : undefined;
      return rows[0]?.state ?? undefined;
    } catch (err) {
      throw pgError(err, this.where(), 'cannot read the stored state');
    }
  }

  async *write(input: AsyncIterable<DestinationMessage>): AsyncIterable<DestinationEvent> {
    // Batches commit while the next ones are buffered: the server works on a COPY while this
    // process reads, chunks and embeds what follows. Commits run one at a time, in order, each in
    // its own transaction with exactly the state that covers it; at most two are pending.
    const commits = new CommitQueue<DestinationEvent>();
    const start = (state?: Extract<DestinationMessage, { type: 'STATE' }>) => {
      const batch = this.takeBatch();
      commits.push(() => this.commit(batch, state));
    };
    /** Commits what is buffered and waits for every commit (before a swap, an index build, the end). */
    const commitAll = () => {
      start();
      return commits.settle(0);
    };
    try {
      for await (const item of pullOrWake(input, () => commits.running())) {
        if (!item) {
          yield* commits.settle(commits.size - 1); // a commit ended while the input was quiet
          continue;
        }
        const msg = item.value;
        switch (msg.type) {
          case 'DOCUMENT':
          case 'DELETE':
          case 'KEEP': {
            if (this.mustCommitBefore(msg)) {
              yield* commits.settle(1);
              start();
            }
            this.buffer(msg);
            if (this.bufferedRows >= this.config.batch_rows || this.bufferedBytes >= this.config.batch_bytes) {
              yield* commits.settle(1);
              start();
            }
            break;
          }
          case 'STATE':
            yield* commits.settle(1);
            // A reindex commits no state before its switch: an interrupted one leaves the old state.
            if (this.options.reindex) this.reindexState = msg;
            start(this.options.reindex ? undefined : msg);
            break;
          case 'STREAM_COMPLETE': {
            const target = this.targets.get(msg.stream);
            if (this.options.reindex && target && !target.loaded) {
              yield* commitAll();
              await this.ensureVectorIndex(target, target.writeTable);
              target.loaded = true;
            } else if (target?.mode === 'overwrite' && !target.swapped) {
              yield* commitAll();
              if (target.keepOnly && (await this.keptEveryLiveDocument(target))) {
                this.keepLiveTable(target);
                break;
              }
              if (target.keepOnly) {
                // Some live documents were not kept: the new generation is the kept ones alone.
                target.materialize = target.keepOnly;
                target.keepOnly = undefined;
                yield* commitAll();
              }
              await this.swap(target);
            } else if (target?.fresh) {
              // The stream's first bulk load is in: index it now rather than row by row.
              yield* commitAll();
              await this.ensureVectorIndex(target);
              // And give the planner statistics now: without them, until autovacuum gets to the
              // table, the next run's listing of documents (keyset pages, GROUP BY document_id)
              // aggregates every remaining row per page instead of reading 1 000 off the index.
              // On PostgreSQL also VACUUM (the same pass autovacuum makes a minute or so later):
              // it sets the visibility map, without which the next run's listing, an index-only
              // scan, still visits every heap page (~1.6x its time at 50k documents); it costs
              // about what the ANALYZE alone did (which then reads pages the VACUUM has set hint
              // bits on). Not on PGlite (one session shared with the sync's other work). Best effort.
              const analyze = this.session.isPglite ? 'ANALYZE' : 'VACUUM (ANALYZE)';
              await this.client.query(`${analyze} ${qualified(this.config.schema, target.table)}`).catch((err) => {
                this.ctx.logger.warn({ stream: msg.stream, err: describeUnknown(err) }, `${analyze} after the first load failed`);
              });
              target.fresh = false;
            }
            break;
          }
        }
      }
      yield* commitAll();
      if (this.options.reindex) yield* this.switchAll();
      await this.finish();
    } catch (err) {
      // The run failed: the previous generation stays what readers see, and the half-loaded new
      // one is dropped (never left behind as <table>__sluice_new).
      await commits.drain();
      await this.discardUnfinished();
      throw err;
    } finally {
      // Input failed or the consumer stopped: let running commits end before the session closes.
      await commits.drain();
    }
  }

  /** Drops the new generation of every overwrite that did not switch (best effort: the run already failed). */
  async discardUnfinished(): Promise<void> {
    for (const t of this.targets.values()) {
      t.keepOnly?.dispose();
      t.materialize?.dispose();
      if (t.mode !== 'overwrite' || t.swapped || t.writeTable === t.table) continue;
      await this.client.query('ROLLBACK').catch(() => {});
      await this.client
        .query(`DROP TABLE IF EXISTS ${qualified(this.config.schema, t.writeTable)}`)
        .then(() =>
          this.ctx.logger.warn({ stream: t.stream }, 'overwrite failed; its new generation was dropped and the previous table kept'),
        )
        .catch((err) =>
          this.ctx.logger.warn({ stream: t.stream, err: (err as Error).message }, 'could not drop the unfinished overwrite table'),
        );
    }
  }

  private target(stream: string): StreamTarget {
    const t = this.targets.get(stream);
    if (!t) {
      throw new SluiceError(`received data for stream ${stream}, which was not opened`, { kind: 'internal', where: this.where(stream) });
    }
    return t;
  }

  /**
   * Append mode merges a document's messages within a buffer chunk by chunk; a metadata-only one
   * cannot merge with a full one (it has no vectors), so what is buffered is committed first.
   */
  private mustCommitBefore(msg: Extract<DestinationMessage, { type: 'DOCUMENT' | 'DELETE' | 'KEEP' }>): boolean {
    if (msg.type !== 'DOCUMENT') return false;
    const t = this.targets.get(msg.stream);
    const doc = t?.mode === 'append' ? t.pending.get(msg.documentId) : undefined;
    return !!doc && !!doc.metadataOnly !== !!msg.metadataOnly;
  }

  private buffer(msg: Extract<DestinationMessage, { type: 'DOCUMENT' | 'DELETE' | 'KEEP' }>): void {
    const t = this.target(msg.stream);
    if (t.swapped) {
      throw new SluiceError(`received data for stream ${msg.stream} after it completed`, {
        kind: 'internal',
        where: this.where(msg.stream),
      });
    }
    if (msg.type === 'KEEP') {
      // Outside overwrite an unchanged document is simply left as it is.
      if (t.mode !== 'overwrite') return;
      if (t.keepOnly) {
        t.keepOnly.add(msg.documentId);
        return;
      }
    } else if (t.keepOnly) {
      t.materialize = t.keepOnly;
      t.keepOnly = undefined;
    }
    let doc = t.pending.get(msg.documentId);
    if (msg.type === 'DELETE' || msg.type === 'KEEP') {
      if (doc) this.bufferedRows -= doc.chunks.size;
      t.pending.set(msg.documentId, { trimFrom: 0, chunks: new Map(), keep: msg.type === 'KEEP' });
      this.bufferedRows += 1;
      return;
    }
    const replace = t.mode !== 'append';
    if (!doc || replace) {
      if (doc) this.bufferedRows -= doc.chunks.size;
      doc = { trimFrom: replace ? msg.chunks.length : doc?.trimFrom, chunks: new Map() };
      t.pending.set(msg.documentId, doc);
    }
    doc.fingerprint = msg.fingerprint;
    doc.metadataOnly = !!msg.metadataOnly;
    for (const c of msg.chunks) {
      if (!msg.metadataOnly && this.options.dimensions && c.embedding && c.embedding.length !== this.options.dimensions) {
        throw new SluiceError(`chunk ${c.id} has ${c.embedding.length} dimensions, expected ${this.options.dimensions}`, {
          kind: 'embedding',
          where: this.where(msg.stream),
        });
      }
      if (!doc.chunks.has(c.id)) this.bufferedRows++;
      doc.chunks.set(c.id, c);
      this.bufferedBytes += c.content.length * 2 + (c.embedding ? c.embedding.length * 4 : 0) + 128;
    }
    t.written.records++;
  }

  /** Takes what is buffered (synchronously, so buffering can go on while it is committed). */
  private takeBatch(): Batch {
    const batch: Batch = [];
    for (const t of this.targets.values()) {
      if (!t.pending.size && !t.written.records && !t.materialize) continue;
      batch.push({ target: t, pending: t.pending, written: t.written, materialize: t.materialize });
      t.materialize = undefined;
      t.pending = new Map();
      t.written = { records: 0, chunksWritten: 0, chunksDeleted: 0 };
    }
    this.bufferedRows = 0;
    this.bufferedBytes = 0;
    return batch;
  }

  /** Applies a batch (and the state covering it) in one transaction, then reports it. */
  private async commit(batch: Batch, state?: Extract<DestinationMessage, { type: 'STATE' }>): Promise<DestinationEvent[]> {
    if (!batch.length && !state) return [];
    const stateJson = state ? canonicalJson(state.connection) : undefined;
    // Nothing to write and the table already holds this state (an unchanged re-run): a no-op
    // sync leaves the database untouched (no transaction, no WAL).
    if (!batch.length && state && stateJson === this.storedState) {
      return [{ type: 'STATE_COMMITTED', state: state.state, connection: state.connection }];
    }
    let current: StreamTarget | undefined;
    try {
      await this.client.query('BEGIN');
      for (const b of batch) {
        current = b.target;
        await this.apply(b);
      }
      current = undefined;
      if (state) {
        await this.client.query(
          `INSERT INTO ${qualified(this.config.schema, STATE_TABLE)} (connection, state, updated_at) VALUES ($1, $2::jsonb, now())
           ON CONFLICT (connection) DO UPDATE SET state = EXCLUDED.state, updated_at = now()`,
          [this.ctx.connection, JSON.stringify(state.connection)],
        );
      }
      await this.client.query('COMMIT');
      if (state) this.storedState = stateJson;
    } catch (err) {
      await this.client.query('ROLLBACK').catch(() => {});
      throw pgError(
        err,
        this.where(current?.stream),
        current ? `cannot write table ${this.config.schema}.${current.writeTable}` : 'cannot store the state',
      );
    }
    const events: DestinationEvent[] = [];
    for (const { target, written: w } of batch) {
      if (w.records || w.chunksWritten || w.chunksDeleted) events.push({ type: 'WRITTEN', stream: target.stream, ...w });
    }
    if (state) events.push({ type: 'STATE_COMMITTED', state: state.state, connection: state.connection });
    return events;
  }

  private async apply({ target: t, pending, written, materialize }: Batch[number]): Promise<void> {
    if (materialize) await this.materialize(t, materialize);
    if (!pending.size) return;
    const table = qualified(this.config.schema, t.writeTable);
    const trimDocs: string[] = [];
    const trimFrom: number[] = [];
    const chunks: FingerprintedChunk[] = [];
    const kept: string[] = [];
    const metadataOnly: FingerprintedChunk[] = [];
    for (const [documentId, doc] of pending) {
      if (doc.trimFrom !== undefined) {
        trimDocs.push(documentId);
        trimFrom.push(doc.trimFrom);
      }
      if (doc.keep) kept.push(documentId);
      const into = doc.metadataOnly ? metadataOnly : chunks;
      for (const c of doc.chunks.values()) into.push({ chunk: c, fingerprint: doc.fingerprint });
    }
    if (trimDocs.length) {
      const res = await this.client.query(
        `DELETE FROM ${table} AS t USING unnest($1::text[], $2::int[]) AS d(document_id, keep)
          WHERE t.document_id = d.document_id AND t.chunk_index >= d.keep`,
        [trimDocs, trimFrom],
      );
      written.chunksDeleted += res.rowCount ?? 0;
    }
    if (kept.length) await this.copyKept(t, kept);
    if (metadataOnly.length) await this.updateMetadata(t, table, metadataOnly);
    written.chunksWritten += metadataOnly.length;
    if (!chunks.length) return;
    if (this.useCopy) await this.upsertByCopy(t, table, chunks);
    else await this.upsertByInsert(t, table, chunks);
    written.chunksWritten += chunks.length;
  }

  /** PGlite path: multi-row INSERT ... SELECT FROM unnest(...), vectors sent as one binary array. */
  private async upsertByInsert(t: StreamTarget, table: string, chunks: FingerprintedChunk[]): Promise<void> {
    const { columns } = t;
    const vectorArray = `${ident(this.vectorSchema)}.vector[]`;
    const arrays = columns.map((c, i) => `$${i + 1}::${c === 'embedding' ? vectorArray : `${INSERT_TYPES[c]}[]`}`);
    const sql = `INSERT INTO ${table} ${columnList(columns)}
      SELECT * FROM unnest(${arrays.join(', ')})
      ${upsertClause(columns)}`;
    const step = this.config.insert_rows;
    for (let i = 0; i < chunks.length; i += step) {
      const part = chunks.slice(i, i + step);
      await this.client.query(
        sql,
        columns.map((c) => insertArray(c, part, t.vectorOid)),
      );
    }
  }

  /**
   * Overwrite: creates the new generation (in the commit's transaction) and copies into it the
   * documents kept while nothing else had arrived.
   */
  private async materialize(t: StreamTarget, kept: KeepLog): Promise<void> {
    const stream = this.options.streams.find((s) => s.name === t.stream)!;
    await this.createGeneration(t.writeTable, stream.primaryKey);
    try {
      for await (const ids of kept.batches(KEEP_IDS_PER_STATEMENT)) await this.copyKept(t, ids);
    } finally {
      kept.dispose();
    }
  }

  /** Overwrite: copies documents' live rows into the new generation as they are, inside the server. */
  private async copyKept(t: StreamTarget, documentIds: string[]): Promise<void> {
    const { schema } = this.config;
    // A column the live table lacks (see migrate) is NULL in the copy, as it would be after adding it.
    const values = t.columns.map((c) => (t.liveColumns.includes(c) ? c : `NULL::text AS ${c}`));
    await this.client.query(
      `INSERT INTO ${qualified(schema, t.writeTable)} ${columnList(t.columns)}
       SELECT ${values.join(', ')} FROM ${qualified(schema, t.table)} WHERE document_id = ANY($1::text[])
       ON CONFLICT (id) DO NOTHING`,
      [documentIds],
    );
    t.directCopy = false; // a COPY straight into the table could now meet these ids
  }

  /**
   * Metadata-only documents: their stored rows (append modes) or their live rows copied into the new
   * generation (overwrite) get the new metadata and fingerprint; text and vectors stay as stored.
   * Only rows whose content fingerprint is the one the engine compared against are touched; if any
   * is missing the document changed meanwhile, and the commit fails rather than mix two versions.
   */
  private async updateMetadata(t: StreamTarget, table: string, chunks: FingerprintedChunk[]): Promise<void> {
    const params = [
      chunks.map(({ chunk: c }) => c.id),
      chunks.map(({ chunk: c }) => metadataJson(c.metadata)),
      chunks.map((c) => c.fingerprint?.content ?? null),
      chunks.map((c) => c.fingerprint?.metadata ?? null),
      // Same content fingerprint ⇒ same embedder: its tag is set (or filled in) with the metadata.
      chunks.map((c) => c.fingerprint?.embedder ?? null),
      // A metadata-only document is often one whose source row was read again only for its new
      // digest (docs/fingerprints.md, "Source digests"): storing it is what lets the next run skip.
      chunks.map((c) => c.fingerprint?.source ?? null),
    ];
    const input = `unnest($1::text[], $2::jsonb[], $3::text[], $4::text[], $5::text[], $6::text[]) AS d(id, metadata, fingerprint_content, fingerprint_metadata, fingerprint_embedder, fingerprint_source)`;
    // Only the fingerprint columns the written table has (see migrate).
    const fingerprintColumns = FINGERPRINT_COLUMNS.filter((c) => t.columns.includes(c));
    const found =
      t.mode !== 'overwrite' && !t.columns.includes('fingerprint_source')
        ? await this.updateChangedMetadata(table, input, fingerprintColumns, params)
        : undefined;
    const res =
      found !== undefined
        ? { rowCount: found }
        : t.mode === 'overwrite'
          ? await this.client.query(
              `INSERT INTO ${table} ${columnList(t.columns)}
             SELECT l.id, l.document_id, l.chunk_index, l.content, d.metadata, l.embedding, ${fingerprintColumns.map((c) => `d.${c}`).join(', ')}
               FROM ${input} JOIN ${qualified(this.config.schema, t.table)} AS l
                 ON l.id = d.id AND l.fingerprint_content IS NOT DISTINCT FROM d.fingerprint_content
             ${upsertClause(t.columns)}`,
              params,
            )
          : await this.client.query(
              `UPDATE ${table} AS t SET metadata = d.metadata, ${fingerprintColumns.map((c) => `${c} = d.${c}`).join(', ')}
               FROM ${input}
              WHERE t.id = d.id AND t.fingerprint_content IS NOT DISTINCT FROM d.fingerprint_content`,
              params,
            );
    if ((res.rowCount ?? 0) !== chunks.length) {
      const docs = [...new Set(chunks.map(({ chunk: c }) => c.documentId))];
      throw new SluiceError(
        `a metadata-only update found ${res.rowCount ?? 0} of ${chunks.length} stored chunks of document(s) ${docs.slice(0, 5).join(', ')}${docs.length > 5 ? ', …' : ''} with the expected content; they changed meanwhile`,
        { kind: 'destination', where: this.where(t.stream), hint: 'run the sync again: changed documents are then rewritten in full' },
      );
    }
  }

  /**
   * updateMetadata in a table without fingerprint_source (see migrate): an unchanged document read
   * with a source digest arrives as metadata-only on every run, since its digest is never stored.
   * Rows that already hold what is sent are matched but not rewritten (no new row versions, no WAL).
   * Returns how many rows had the expected content (written or not).
   */
  private async updateChangedMetadata(table: string, input: string, fingerprintColumns: string[], params: unknown[]): Promise<number> {
    const stored = ['metadata', ...fingerprintColumns];
    const { rows } = await this.client.query<{ matched: number }>(
      `WITH d AS (SELECT * FROM ${input}),
            updated AS (
              UPDATE ${table} AS t SET ${stored.map((c) => `${c} = d.${c}`).join(', ')} FROM d
               WHERE t.id = d.id AND t.fingerprint_content IS NOT DISTINCT FROM d.fingerprint_content
                 AND ROW(${stored.map((c) => `t.${c}`).join(', ')}) IS DISTINCT FROM ROW(${stored.map((c) => `d.${c}`).join(', ')}))
       SELECT count(*)::int AS matched FROM ${table} AS t JOIN d ON t.id = d.id AND t.fingerprint_content IS NOT DISTINCT FROM d.fingerprint_content`,
      params,
    );
    return rows[0].matched;
  }

  /**
   * Overwrite where every message was a KEEP: true when the kept ids are exactly the live table's
   * document ids (same count, same sum of id hashes; see keep-log.ts). One read of document_id.
   */
  private async keptEveryLiveDocument(t: StreamTarget): Promise<boolean> {
    const kept = t.keepOnly!;
    try {
      const { rows } = await this.client.query<{ n: string; sum: string }>(
        `SELECT count(*) AS n, coalesce(sum(${idHashSql('document_id')}), 0)::text AS sum
           FROM (SELECT DISTINCT document_id FROM ${qualified(this.config.schema, t.table)}) AS d`,
      );
      return BigInt(rows[0].n) === BigInt(kept.count) && BigInt(rows[0].sum) === kept.sum;
    } catch (err) {
      throw pgError(err, this.where(t.stream), `cannot compare the kept documents with table ${this.config.schema}.${t.table}`);
    }
  }

  /** An overwrite that kept every live document: nothing was written, the live table stays. */
  private keepLiveTable(t: StreamTarget): void {
    const kept = t.keepOnly!;
    kept.dispose();
    t.keepOnly = undefined;
    t.swapped = true;
    t.writeTable = t.table;
    t.columns = t.liveColumns;
    t.fresh = false;
    this.ctx.logger.info(
      { stream: t.stream, table: `${this.config.schema}.${t.table}`, documents: kept.count },
      'overwrite: every document unchanged; the live table is kept, nothing written',
    );
  }

  /**
   * PostgreSQL path. During a table's first bulk load: COPY BINARY straight into it (the write
   * limit), inside a savepoint; a repeated chunk id (a document sent twice in one run) rolls the
   * savepoint back and switches to the general path: COPY BINARY into a session-private staging
   * table, then one merge.
   */
  private async upsertByCopy(t: StreamTarget, table: string, chunks: FingerprintedChunk[]): Promise<void> {
    const columns = columnList(t.columns);
    if (t.fresh && t.directCopy) {
      await this.client.query('SAVEPOINT sluice_direct_copy');
      try {
        await copyBinary(this.client, `COPY ${table} ${columns} FROM STDIN (FORMAT BINARY)`, chunkTuples(chunks, t.columns));
        await this.client.query('RELEASE SAVEPOINT sluice_direct_copy');
        return;
      } catch (err) {
        if ((err as { code?: string }).code !== '23505') throw err;
        await this.client.query('ROLLBACK TO SAVEPOINT sluice_direct_copy');
        t.directCopy = false;
        this.ctx.logger.debug({ stream: t.stream }, 'chunk ids repeat within the load; merging through a staging table');
      }
    }
    const stage = ident('sluice_stage');
    if (!this.stageReady) {
      await this.client.query(
        `CREATE TEMP TABLE IF NOT EXISTS ${stage} (id text, document_id text, chunk_index int, content text, metadata jsonb, embedding ${ident(this.vectorSchema)}.vector, fingerprint_content text, fingerprint_metadata text, fingerprint_embedder text, fingerprint_source text) ON COMMIT DELETE ROWS`,
      );
      this.stageReady = true;
    } else {
      await this.client.query(`TRUNCATE ${stage}`);
    }
    // The staging table has every column; those the target lacks (see migrate) stay NULL there and unread.
    await copyBinary(this.client, `COPY ${stage} ${columns} FROM STDIN (FORMAT BINARY)`, chunkTuples(chunks, t.columns));
    await this.client.query(`INSERT INTO ${table} ${columns} SELECT ${t.columns.join(', ')} FROM ${stage} ${upsertClause(t.columns)}`);
  }

  /** Builds the new generation's index, then replaces the live table in one transaction. */
  private async swap(t: StreamTarget): Promise<void> {
    const { schema } = this.config;
    try {
      const built = await buildVectorIndex(
        this.client,
        this.config,
        schema,
        t.writeTable,
        vectorIndexName(t.writeTable),
        this.vectorSchema,
      );
      await this.client.query('BEGIN');
      await this.client.query(`DROP TABLE IF EXISTS ${qualified(schema, t.table)}`);
      await this.client.query(`ALTER TABLE ${qualified(schema, t.writeTable)} RENAME TO ${ident(t.table)}`);
      await this.client.query(
        `ALTER INDEX ${qualified(schema, documentIndexName(t.writeTable))} RENAME TO ${ident(documentIndexName(t.table))}`,
      );
      if (built)
        await this.client.query(
          `ALTER INDEX ${qualified(schema, vectorIndexName(t.writeTable))} RENAME TO ${ident(vectorIndexName(t.table))}`,
        );
      // The primary key follows the table's name so the next generation can take the old one.
      await this.client.query(`ALTER INDEX ${qualified(schema, primaryKeyName(t.writeTable))} RENAME TO ${ident(primaryKeyName(t.table))}`);
      await this.client.query('COMMIT');
    } catch (err) {
      await this.client.query('ROLLBACK').catch(() => {});
      throw pgError(err, this.where(t.stream), `cannot switch table ${schema}.${t.table} to the new generation`);
    }
    t.swapped = true;
    t.writeTable = t.table;
    t.columns = t.liveColumns = CHUNK_COLUMNS;
    t.fresh = false;
    this.ctx.logger.info({ stream: t.stream, table: `${schema}.${t.table}` }, 'overwrite: switched to the new generation');
  }

  /** Reindex, end of input: when every stream's new generation is loaded, all switch with the state in one transaction. */
  private async *switchAll(): AsyncGenerator<DestinationEvent> {
    const targets = [...this.targets.values()];
    if (!targets.every((t) => t.loaded)) return; // interrupted: finish() drops the new generations
    const { schema } = this.config;
    const state = this.reindexState;
    try {
      await this.client.query('BEGIN');
      await switchGenerations(
        this.client,
        schema,
        targets.map((t) => ({ live: t.table, loaded: t.writeTable })),
        this.options.reindex!.keepPrevious,
      );
      if (state) await storeState(this.client, schema, this.ctx.connection, state.connection);
      await this.client.query('COMMIT');
    } catch (err) {
      await this.client.query('ROLLBACK').catch(() => {});
      throw pgError(err, this.where(), 'cannot switch to the reindexed generation');
    }
    for (const t of targets) {
      t.swapped = true;
      t.writeTable = t.table;
      t.columns = t.liveColumns = CHUNK_COLUMNS;
      t.fresh = false;
    }
    this.ctx.logger.info({ tables: targets.map((t) => `${schema}.${t.table}`) }, 'reindex: switched every stream to the new generation');
    if (state) yield { type: 'STATE_COMMITTED', state: state.state, connection: state.connection };
  }

  /** End of input: vector indexes for tables loaded by this run; unfinished overwrites are dropped. */
  private async finish(): Promise<void> {
    const { schema } = this.config;
    for (const t of this.targets.values()) {
      try {
        if (t.mode === 'overwrite' && !t.swapped) {
          // The source never completed the stream: keep the old generation untouched.
          t.keepOnly?.dispose();
          if (!t.keepOnly) await this.client.query(`DROP TABLE IF EXISTS ${qualified(schema, t.writeTable)}`);
          this.ctx.logger.warn({ stream: t.stream }, 'overwrite not completed by the source; the previous table was kept');
          continue;
        }
        await this.ensureVectorIndex(t);
      } catch (err) {
        throw pgError(err, this.where(t.stream), `cannot build the vector index of ${schema}.${t.table}`);
      }
    }
  }

  private async ensureVectorIndex(t: StreamTarget, table = t.table): Promise<void> {
    const { schema } = this.config;
    if (this.config.index === 'none' || (await hasVectorIndex(this.client, schema, table))) return;
    const info = await inspectTable(this.client, schema, table);
    if (!info.dimensions) return; // an unsized vector column (no embedder) cannot be indexed
    const started = Date.now();
    await buildVectorIndex(this.client, this.config, schema, table, vectorIndexName(table), this.vectorSchema);
    this.ctx.logger.info({ stream: t.stream, index: this.config.index, ms: Date.now() - started }, 'built vector index');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.session.close();
  }
}

interface FingerprintedChunk {
  chunk: Chunk;
  fingerprint: DocumentFingerprint | undefined;
}

/**
 * COPY tuples in the order of `columns`: CHUNK_COLUMNS, or those without fingerprint_embedder or
 * fingerprint_source (a table the user may not alter, see migrate); every other column is always there.
 */
function* chunkTuples(chunks: FingerprintedChunk[], columns: readonly string[]): Generator<CopyValue[]> {
  const withEmbedder = columns.includes('fingerprint_embedder');
  const withSource = columns.includes('fingerprint_source');
  for (const { chunk: c, fingerprint } of chunks) {
    const tuple: CopyValue[] = [
      { kind: 'text', value: c.id },
      { kind: 'text', value: c.documentId },
      { kind: 'int4', value: c.chunkIndex },
      { kind: 'text', value: clean(c.content) },
      { kind: 'jsonb', value: metadataJson(c.metadata) },
      { kind: 'vector', value: c.embedding },
      { kind: 'textOrNull', value: fingerprint?.content },
      { kind: 'textOrNull', value: fingerprint?.metadata },
    ];
    if (withEmbedder) tuple.push({ kind: 'textOrNull', value: fingerprint?.embedder });
    if (withSource) tuple.push({ kind: 'textOrNull', value: fingerprint?.source });
    yield tuple;
  }
}

/** The array type of each column's parameter on the INSERT path (embedding: the vector type's array). */
const INSERT_TYPES: Record<string, string> = {
  id: 'text',
  document_id: 'text',
  chunk_index: 'int',
  content: 'text',
  metadata: 'jsonb',
  fingerprint_content: 'text',
  fingerprint_metadata: 'text',
  fingerprint_embedder: 'text',
  fingerprint_source: 'text',
};

/** One column's values for the INSERT … unnest path. */
function insertArray(column: string, part: FingerprintedChunk[], vectorOid: number): unknown {
  switch (column) {
    case 'id':
      return part.map(({ chunk: c }) => c.id);
    case 'document_id':
      return part.map(({ chunk: c }) => c.documentId);
    case 'chunk_index':
      return part.map(({ chunk: c }) => c.chunkIndex);
    case 'content':
      return part.map(({ chunk: c }) => clean(c.content));
    case 'metadata':
      return part.map(({ chunk: c }) => metadataJson(c.metadata));
    case 'embedding':
      return encodeBinaryArray(
        vectorOid,
        part.map(({ chunk: c }) => (c.embedding ? encodeVector(c.embedding) : null)),
      );
    case 'fingerprint_content':
      return part.map((c) => c.fingerprint?.content ?? null);
    case 'fingerprint_metadata':
      return part.map((c) => c.fingerprint?.metadata ?? null);
    case 'fingerprint_embedder':
      return part.map((c) => c.fingerprint?.embedder ?? null);
    case 'fingerprint_source':
      return part.map((c) => c.fingerprint?.source ?? null);
  }
  throw new SluiceError(`the writer has no value for column ${column}`, { kind: 'internal' });
}

/**
 * `ALTER TABLE … ADD COLUMN IF NOT EXISTS c text, …`: what a table's owner runs to add `columns`
 * (sluice's own lower-case column names, shown unquoted for people to read).
 */
const addColumnsSql = (schema: string, table: string, columns: readonly string[]) =>
  `ALTER TABLE ${qualified(schema, table)} ${columns.map((c) => `ADD COLUMN IF NOT EXISTS ${c} text`).join(', ')}`;

async function hasRows(client: pg.Client, schema: string, table: string): Promise<boolean> {
  const { rowCount } = await client.query(`SELECT 1 FROM ${qualified(schema, table)} LIMIT 1`);
  return !!rowCount;
}
