// The pgvector writer: buffers documents per stream (bounded by rows and bytes), applies each
// buffer in one transaction together with the connection state it covers (exactly once), and
// swaps overwrite generations in one transaction at STREAM_COMPLETE.
import type {
  Chunk,
  ConnectorContext,
  DestinationEvent,
  DestinationMessage,
  DestinationWriter,
  OpenOptions,
  SourceState,
} from '../../src/protocol/connector.ts';
import type { DestinationSyncMode } from '../../src/protocol/messages.ts';
import type pg from 'pg';
import { SluiceError } from '../../src/protocol/errors.ts';
import { canonicalJson } from '../../src/protocol/identity.ts';
import { CommitQueue, pullOrWake } from '../../src/cdk/commits.ts';
import type { PgvectorConfig } from './config.ts';
import { copyBinary, type CopyValue } from './copy.ts';
import {
  MAX_INDEXED_DIMENSIONS,
  REQUIRED_COLUMNS,
  STATE_TABLE,
  buildVectorIndex,
  createChunkTable,
  documentIndexName,
  ensureExtension,
  ensureSchema,
  ensureStateTable,
  hasVectorIndex,
  indexDrift,
  inspectTable,
  readTableNote,
  vectorIndexOf,
  writeTableNote,
  newGenerationName,
  primaryKeyName,
  vectorIndexName,
} from './schema.ts';
import { alteredTable, notATable, tableShapeProblems } from './shape.ts';
import { openSession, pgError, type Session } from './session.ts';
import { encodeBinaryArray, encodeVector, ident, qualified, tableNameFor } from './sql.ts';

/** The final state of one document within a buffer: later messages for it supersede earlier ones. */
interface PendingDocument {
  /** Delete the document's stored chunks with chunk_index >= this (0 = all) before upserting. */
  trimFrom?: number;
  chunks: Map<string, Chunk>;
}

/** What one commit applies: per stream, the buffered documents and the counts they add up to. */
type Batch = Array<{ target: StreamTarget; pending: Map<string, PendingDocument>; written: StreamTarget['written'] }>;

interface StreamTarget {
  stream: string;
  mode: DestinationSyncMode;
  /** The table readers use. */
  table: string;
  /** The table rows go into now: `table`, or the new generation during an overwrite. */
  writeTable: string;
  /** Created empty by this writer: its vector index is built after the load. */
  fresh: boolean;
  vectorOid: number;
  pending: Map<string, PendingDocument>;
  written: { records: number; chunksWritten: number; chunksDeleted: number };
  swapped: boolean;
  /** The first bulk load may COPY straight into the (fresh) table until an id repeats. */
  directCopy: boolean;
}

const clean = (s: string) => (s.includes('\u0000') ? s.replace(/\u0000/g, '') : s);
/** PostgreSQL text and jsonb reject NUL characters; drop them rather than fail the sync. */
const metadataJson = (m: Record<string, unknown>) => JSON.stringify(m ?? {}, (_k, v: unknown) => (typeof v === 'string' ? clean(v) : v));

export async function openWriter(config: PgvectorConfig, ctx: ConnectorContext, options: OpenOptions): Promise<DestinationWriter> {
  const session = await openSession(config, ctx);
  const writer = new PgvectorWriter(config, ctx, options, session);
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

  constructor(
    private readonly config: PgvectorConfig,
    private readonly ctx: ConnectorContext,
    private readonly options: OpenOptions,
    private readonly session: Session,
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
    this.vectorSchema = await ensureExtension(this.client, this.where());
    await ensureSchema(this.client, config.schema);
    await ensureStateTable(this.client, config.schema);

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
    for (const s of options.streams) {
      const table = tableNameFor(s.name, config.table);
      const info = await inspectTable(this.client, config.schema, table);
      infos.set(s.name, info);
      if (!info.exists) continue;
      // An overwrite replaces the table, so only what stops that (a view in its place) matters.
      const altered =
        s.destinationSyncMode === 'overwrite'
          ? [await notATable(this.client, config.schema, table)].filter((p): p is string => !!p)
          : await tableShapeProblems(this.client, config.schema, table);
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
        const note = await readTableNote(this.client, config.schema, table);
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
      let writeTable = table;
      let fresh = !info.exists;
      if (s.destinationSyncMode === 'overwrite') {
        // A leftover generation from an interrupted overwrite is discarded: a full refresh starts over.
        writeTable = newGenerationName(table);
        await this.client.query(`DROP TABLE IF EXISTS ${qualified(config.schema, writeTable)}`);
        fresh = true;
      }
      if (fresh) await createChunkTable(this.client, config.schema, writeTable, this.vectorSchema, dims);
      // Empty, not only new: a table created by a run that died before its first commit is empty too.
      if (s.destinationSyncMode !== 'overwrite' && (!info.exists || !(await hasRows(this.client, config.schema, table))))
        this.createdEmpty.push(s.name);
      // Tables sluice made before it kept notes are adopted; a note someone else wrote is left alone.
      if (fresh || notes.get(s.name) === undefined)
        await writeTableNote(this.client, config.schema, writeTable, { primary_key: s.primaryKey });
      if (!fresh) await this.applyIndexConfig(s.name, table, info.dimensions);
      const vectorOid = fresh ? (await inspectTable(this.client, config.schema, writeTable)).vectorOid! : info.vectorOid!;
      this.targets.set(s.name, {
        stream: s.name,
        mode: s.destinationSyncMode,
        table,
        writeTable,
        fresh,
        vectorOid,
        pending: new Map(),
        written: { records: 0, chunksWritten: 0, chunksDeleted: 0 },
        swapped: false,
        directCopy: fresh,
      });
    }
  }

  streamsWithoutData(): string[] {
    return [...this.createdEmpty];
  }

  /**
   * A changed `distance`, `index`, `hnsw` or `ivfflat` takes effect on an existing table: its vector
   * index is rebuilt (or dropped for index: none) before the run writes, so search and index agree.
   */
  private async applyIndexConfig(stream: string, table: string, dimensions: number | undefined): Promise<void> {
    const { config } = this;
    const current = await vectorIndexOf(this.client, config.schema, table);
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
          case 'DELETE': {
            this.buffer(msg);
            if (this.bufferedRows >= this.config.batch_rows || this.bufferedBytes >= this.config.batch_bytes) {
              yield* commits.settle(1);
              start();
            }
            break;
          }
          case 'STATE':
            yield* commits.settle(1);
            start(msg);
            break;
          case 'STREAM_COMPLETE': {
            const target = this.targets.get(msg.stream);
            if (target?.mode === 'overwrite' && !target.swapped) {
              yield* commitAll();
              await this.swap(target);
            } else if (target?.fresh) {
              // The stream's first bulk load is in: index it now rather than row by row.
              yield* commitAll();
              await this.ensureVectorIndex(target);
              target.fresh = false;
            }
            break;
          }
        }
      }
      yield* commitAll();
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

  private buffer(msg: Extract<DestinationMessage, { type: 'DOCUMENT' | 'DELETE' }>): void {
    const t = this.target(msg.stream);
    if (t.swapped) {
      throw new SluiceError(`received data for stream ${msg.stream} after it completed`, {
        kind: 'internal',
        where: this.where(msg.stream),
      });
    }
    let doc = t.pending.get(msg.documentId);
    if (msg.type === 'DELETE') {
      if (doc) this.bufferedRows -= doc.chunks.size;
      t.pending.set(msg.documentId, { trimFrom: 0, chunks: new Map() });
      this.bufferedRows += 1;
      return;
    }
    const replace = t.mode !== 'append';
    if (!doc || replace) {
      if (doc) this.bufferedRows -= doc.chunks.size;
      doc = { trimFrom: replace ? msg.chunks.length : doc?.trimFrom, chunks: new Map() };
      t.pending.set(msg.documentId, doc);
    }
    for (const c of msg.chunks) {
      if (this.options.dimensions && c.embedding && c.embedding.length !== this.options.dimensions) {
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
      if (!t.pending.size && !t.written.records) continue;
      batch.push({ target: t, pending: t.pending, written: t.written });
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

  private async apply({ target: t, pending, written }: Batch[number]): Promise<void> {
    if (!pending.size) return;
    const table = qualified(this.config.schema, t.writeTable);
    const trimDocs: string[] = [];
    const trimFrom: number[] = [];
    const chunks: Chunk[] = [];
    for (const [documentId, doc] of pending) {
      if (doc.trimFrom !== undefined) {
        trimDocs.push(documentId);
        trimFrom.push(doc.trimFrom);
      }
      for (const c of doc.chunks.values()) chunks.push(c);
    }
    if (trimDocs.length) {
      const res = await this.client.query(
        `DELETE FROM ${table} AS t USING unnest($1::text[], $2::int[]) AS d(document_id, keep)
          WHERE t.document_id = d.document_id AND t.chunk_index >= d.keep`,
        [trimDocs, trimFrom],
      );
      written.chunksDeleted += res.rowCount ?? 0;
    }
    if (!chunks.length) return;
    if (this.useCopy) await this.upsertByCopy(t, table, chunks);
    else await this.upsertByInsert(t, table, chunks);
    written.chunksWritten += chunks.length;
  }

  private static readonly UPSERT = `ON CONFLICT (id) DO UPDATE SET document_id = EXCLUDED.document_id, chunk_index = EXCLUDED.chunk_index,
      content = EXCLUDED.content, metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding`;

  /** PGlite path: multi-row INSERT ... SELECT FROM unnest(...), vectors sent as one binary array. */
  private async upsertByInsert(t: StreamTarget, table: string, chunks: Chunk[]): Promise<void> {
    const vectorArray = `${ident(this.vectorSchema)}.vector[]`;
    const sql = `INSERT INTO ${table} (id, document_id, chunk_index, content, metadata, embedding)
      SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::jsonb[], $6::${vectorArray})
      ${PgvectorWriter.UPSERT}`;
    const step = this.config.insert_rows;
    for (let i = 0; i < chunks.length; i += step) {
      const part = chunks.slice(i, i + step);
      await this.client.query(sql, [
        part.map((c) => c.id),
        part.map((c) => c.documentId),
        part.map((c) => c.chunkIndex),
        part.map((c) => clean(c.content)),
        part.map((c) => metadataJson(c.metadata)),
        encodeBinaryArray(
          t.vectorOid,
          part.map((c) => (c.embedding ? encodeVector(c.embedding) : null)),
        ),
      ]);
    }
  }

  /**
   * PostgreSQL path. During a table's first bulk load: COPY BINARY straight into it (the write
   * limit), inside a savepoint; a repeated chunk id (a document sent twice in one run) rolls the
   * savepoint back and switches to the general path: COPY BINARY into a session-private staging
   * table, then one merge.
   */
  private async upsertByCopy(t: StreamTarget, table: string, chunks: Chunk[]): Promise<void> {
    const columns = '(id, document_id, chunk_index, content, metadata, embedding)';
    if (t.fresh && t.directCopy) {
      await this.client.query('SAVEPOINT sluice_direct_copy');
      try {
        await copyBinary(this.client, `COPY ${table} ${columns} FROM STDIN (FORMAT BINARY)`, chunkTuples(chunks));
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
        `CREATE TEMP TABLE IF NOT EXISTS ${stage} (id text, document_id text, chunk_index int, content text, metadata jsonb, embedding ${ident(this.vectorSchema)}.vector) ON COMMIT DELETE ROWS`,
      );
      this.stageReady = true;
    } else {
      await this.client.query(`TRUNCATE ${stage}`);
    }
    await copyBinary(this.client, `COPY ${stage} ${columns} FROM STDIN (FORMAT BINARY)`, chunkTuples(chunks));
    await this.client.query(
      `INSERT INTO ${table} (id, document_id, chunk_index, content, metadata, embedding)
       SELECT id, document_id, chunk_index, content, metadata, embedding FROM ${stage} ${PgvectorWriter.UPSERT}`,
    );
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
    t.fresh = false;
    this.ctx.logger.info({ stream: t.stream, table: `${schema}.${t.table}` }, 'overwrite: switched to the new generation');
  }

  /** End of input: vector indexes for tables loaded by this run; unfinished overwrites are dropped. */
  private async finish(): Promise<void> {
    const { schema } = this.config;
    for (const t of this.targets.values()) {
      try {
        if (t.mode === 'overwrite' && !t.swapped) {
          // The source never completed the stream: keep the old generation untouched.
          await this.client.query(`DROP TABLE IF EXISTS ${qualified(schema, t.writeTable)}`);
          this.ctx.logger.warn({ stream: t.stream }, 'overwrite not completed by the source; the previous table was kept');
          continue;
        }
        await this.ensureVectorIndex(t);
      } catch (err) {
        throw pgError(err, this.where(t.stream), `cannot build the vector index of ${schema}.${t.table}`);
      }
    }
  }

  private async ensureVectorIndex(t: StreamTarget): Promise<void> {
    const { schema } = this.config;
    if (this.config.index === 'none' || (await hasVectorIndex(this.client, schema, t.table))) return;
    const info = await inspectTable(this.client, schema, t.table);
    if (!info.dimensions) return; // an unsized vector column (no embedder) cannot be indexed
    const started = Date.now();
    await buildVectorIndex(this.client, this.config, schema, t.table, vectorIndexName(t.table), this.vectorSchema);
    this.ctx.logger.info({ stream: t.stream, index: this.config.index, ms: Date.now() - started }, 'built vector index');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.session.close();
  }
}

function* chunkTuples(chunks: Chunk[]): Generator<CopyValue[]> {
  for (const c of chunks) {
    yield [
      { kind: 'text', value: c.id },
      { kind: 'text', value: c.documentId },
      { kind: 'int4', value: c.chunkIndex },
      { kind: 'text', value: clean(c.content) },
      { kind: 'jsonb', value: metadataJson(c.metadata) },
      { kind: 'vector', value: c.embedding },
    ];
  }
}

async function hasRows(client: pg.Client, schema: string, table: string): Promise<boolean> {
  const { rowCount } = await client.query(`SELECT 1 FROM ${qualified(schema, table)} LIMIT 1`);
  return !!rowCount;
}
