// Dead letters and error budgets (`errors:` on a connection). With `tolerance: all`, a record that
// cannot be processed — no primary key, no text, refused by the embedding API with a 4xx that is
// not a rate limit — is stored with its stream, key, stage, error and payload, and the sync goes
// on; when more than `max_error_rate` of the records read failed, the run fails. A letter is stored
// durably before any later state can be committed, so a failed record is never skipped silently.
// `sluice dead-letters list|retry|purge` reads and re-processes them (see src/cli/commands).
import { randomUUID } from 'node:crypto';
import { access, appendFile, constants, mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type pg from 'pg';
import { pgDriver } from '../runtime-navigator.ts';
import type { ErrorsConfig } from '../config/errors.ts';
import { redact, registerUrlPassword } from '../config/secrets.ts';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import { atomicWrite } from '../state/index.ts';
import { KafkaDeadLetterStore } from './dead-letters-kafka.ts';

/**
 * Where the record failed: `source` (the source could not parse it: payload `{ raw }`), `key` (no
 * primary key), `text` (no text), `embed` (refused by the embedding API), `destination` (refused by
 * the destination, e.g. Pinecone's metadata limit).
 */
export type DeadLetterStage = 'source' | 'key' | 'text' | 'embed' | 'destination';

export interface DeadLetter {
  id: string;
  connection: string;
  stream: string;
  /** The record's document id, when it has one. */
  key?: string;
  stage: DeadLetterStage;
  /** Where the source read it (stage `source`), e.g. "file a.jsonl, line 7". */
  position?: string;
  error: string;
  /** The record as the source sent it (registered secrets redacted); stage `source`: `{ raw }`, its text. */
  payload: Record<string, unknown>;
  at: string;
  attempts: number;
}

export interface DeadLetterStore {
  add(letter: DeadLetter): Promise<void>;
  list(connection: string): Promise<DeadLetter[]>;
  /** Replaces letters by id (a failed retry), or removes them (`remove`). */
  update(connection: string, letters: DeadLetter[]): Promise<void>;
  remove(connection: string, ids: string[]): Promise<void>;
  /**
   * `sluice check`: can a sync store letters here? Says what it found; throws a config error saying
   * what is wrong. Writes nothing: a missing table or directory is only checked to be creatable (a
   * Kafka cluster that creates topics on first use may create the topic, as the first letter would).
   */
  check(): Promise<string>;
  close(): Promise<void>;
}

/** One JSON-lines file per connection; each letter is fsynced before the run goes on. */
export class FileDeadLetterStore implements DeadLetterStore {
  constructor(private readonly dir: string) {}

  private file(connection: string) {
    return join(this.dir, `${encodeURIComponent(connection)}.jsonl`);
  }

  async add(letter: DeadLetter): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const h = await open(this.file(letter.connection), 'a');
    try {
      await h.writeFile(JSON.stringify(letter) + '\n');
      await h.sync();
    } finally {
      await h.close();
    }
  }

  async list(connection: string): Promise<DeadLetter[]> {
    let text: string;
    try {
      text = await readFile(this.file(connection), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: DeadLetter[] = [];
    text.split('\n').forEach((line, i) => {
      if (!line.trim()) return;
      try {
        out.push(JSON.parse(line) as DeadLetter);
      } catch {
        // A line cut short by a crash mid-append is the only way to get here: it is skipped, not fatal.
        if (i < text.split('\n').length - 2)
          throw new SluiceError(`dead-letter file ${this.file(connection)} line ${i + 1} is not valid JSON`, { kind: 'config' });
      }
    });
    return out;
  }

  private async rewrite(connection: string, letters: DeadLetter[]) {
    await mkdir(this.dir, { recursive: true });
    await atomicWrite(this.file(connection), letters.map((l) => JSON.stringify(l) + '\n').join(''));
  }

  async update(connection: string, letters: DeadLetter[]): Promise<void> {
    const byId = new Map(letters.map((l) => [l.id, l]));
    await this.rewrite(
      connection,
      (await this.list(connection)).map((l) => byId.get(l.id) ?? l),
    );
  }

  async remove(connection: string, ids: string[]): Promise<void> {
    const gone = new Set(ids);
    await this.rewrite(
      connection,
      (await this.list(connection)).filter((l) => !gone.has(l.id)),
    );
  }

  async check(): Promise<string> {
    // The nearest existing directory must be writable: the store creates the rest at the first letter.
    let dir = this.dir;
    for (;;) {
      const found = await stat(dir).then(
        (s) => s,
        () => undefined,
      );
      if (found) {
        if (!found.isDirectory()) throw this.unusable(`${dir} is not a directory`);
        break;
      }
      if (dirname(dir) === dir) break;
      dir = dirname(dir);
    }
    await access(dir, constants.W_OK).catch(() => {
      throw this.unusable(`${dir} is not writable`);
    });
    return dir === this.dir ? `directory ${this.dir} is writable` : `directory ${this.dir} will be created at the first letter`;
  }

  private unusable(why: string) {
    return new SluiceError(`dead-letter directory ${this.dir} cannot be used: ${why}`, {
      kind: 'config',
      where: 'errors.dead_letter.path',
      hint: 'point errors.dead_letter.path at a writable directory (on Kubernetes: a mounted volume)',
    });
  }

  async close(): Promise<void> {}
}

const ident = (s: string) => `"${s.replace(/"/g, '""')}"`;

/** A table in PostgreSQL (created when missing). */
export class PostgresDeadLetterStore implements DeadLetterStore {
  private client?: pg.Client;
  private readonly table: string;
  constructor(private readonly cfg: Extract<ErrorsConfig['dead_letter'], { type: 'postgres' }>) {
    registerUrlPassword(cfg.url);
    this.table = `${ident(cfg.schema)}.${ident(cfg.table)}`;
  }

  private async db(): Promise<pg.Client> {
    if (this.client) return this.client;
    const c = new (pgDriver().Client)({ connectionString: this.cfg.url, application_name: 'sluice dead letters' });
    c.on('error', () => {});
    try {
      await c.connect();
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${ident(this.cfg.schema)}`);
      await c.query(
        `CREATE TABLE IF NOT EXISTS ${this.table} (
           id text PRIMARY KEY, connection text NOT NULL, stream text NOT NULL, key text, stage text NOT NULL,
           error text NOT NULL, payload jsonb NOT NULL, at timestamptz NOT NULL, attempts int NOT NULL, position text)`,
      );
      // Tables made before letters had a position.
      await c.query(`ALTER TABLE ${this.table} ADD COLUMN IF NOT EXISTS position text`);
    } catch (err) {
      await c.end().catch(() => {});
      throw new SluiceError(`cannot open the dead-letter table ${this.cfg.schema}.${this.cfg.table}: ${redact(describeUnknown(err))}`, {
        kind: 'config',
        where: 'errors.dead_letter',
        hint: 'check errors.dead_letter.url and that the user may create the table',
      });
    }
    this.client = c;
    return c;
  }

  async check(): Promise<string> {
    const name = `${this.cfg.schema}.${this.cfg.table}`;
    const c = new (pgDriver().Client)({ connectionString: this.cfg.url, application_name: 'sluice check' });
    c.on('error', () => {});
    const unusable = (why: string) =>
      new SluiceError(`dead-letter table ${name} cannot be used: ${why}`, {
        kind: 'config',
        where: 'errors.dead_letter',
        hint: 'check errors.dead_letter.url, and that the user may write the table (or create it)',
      });
    try {
      await c.connect();
      const { rows } = await c.query<{ exists: boolean; writable: boolean | null; creatable: boolean }>(
        `SELECT to_regclass($1) IS NOT NULL AS exists,
                CASE WHEN to_regclass($1) IS NOT NULL THEN (has_table_privilege(to_regclass($1), 'SELECT') AND has_table_privilege(to_regclass($1), 'INSERT')
                  AND has_table_privilege(to_regclass($1), 'UPDATE') AND has_table_privilege(to_regclass($1), 'DELETE')) END AS writable,
                CASE WHEN to_regnamespace($2) IS NOT NULL THEN has_schema_privilege($3, 'CREATE')
                     ELSE has_database_privilege(current_database(), 'CREATE') END AS creatable`,
        [this.table, ident(this.cfg.schema), this.cfg.schema],
      );
      const r = rows[0];
      if (r.exists && !r.writable) throw unusable('the user may not select, insert, update and delete its rows');
      if (!r.exists && !r.creatable) throw unusable(`it does not exist and the user may not create it`);
      return r.exists ? `table ${name} is writable` : `table ${name} will be created at the first letter`;
    } catch (err) {
      if (err instanceof SluiceError) throw err;
      throw unusable(redact(describeUnknown(err)));
    } finally {
      await c.end().catch(() => {});
    }
  }

  async add(l: DeadLetter): Promise<void> {
    await (
      await this.db()
    ).query(
      `INSERT INTO ${this.table} (id, connection, stream, key, stage, error, payload, at, attempts, position) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)`,
      [l.id, l.connection, l.stream, l.key ?? null, l.stage, l.error, JSON.stringify(l.payload), l.at, l.attempts, l.position ?? null],
    );
  }

  async list(connection: string): Promise<DeadLetter[]> {
    const { rows } = await (
      await this.db()
    ).query(
      `SELECT id, connection, stream, key, stage, position, error, payload, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at, attempts
         FROM ${this.table} WHERE connection = $1 ORDER BY at, id`,
      [connection],
    );
    return rows.map((r) => {
      const { position, ...rest } = r;
      return { ...rest, key: r.key ?? undefined, ...(position != null ? { position } : {}) } as DeadLetter;
    });
  }

  async update(_connection: string, letters: DeadLetter[]): Promise<void> {
    const c = await this.db();
    for (const l of letters) await c.query(`UPDATE ${this.table} SET error = $2, attempts = $3 WHERE id = $1`, [l.id, l.error, l.attempts]);
  }

  async remove(connection: string, ids: string[]): Promise<void> {
    await (await this.db()).query(`DELETE FROM ${this.table} WHERE connection = $1 AND id = ANY($2)`, [connection, ids]);
  }

  async close(): Promise<void> {
    await this.client?.end().catch(() => {});
  }
}

export function openDeadLetterStore(cfg: ErrorsConfig | undefined, stateDir: string, baseDir: string): DeadLetterStore {
  const dl = cfg?.dead_letter ?? { type: 'file' as const };
  if (dl.type === 'postgres') return new PostgresDeadLetterStore(dl);
  if (dl.type === 'kafka') return new KafkaDeadLetterStore(dl);
  return new FileDeadLetterStore(dl.path ? resolve(baseDir, dl.path) : join(stateDir, 'dead-letters'));
}

/** Counts failures against the budget and stores dead letters; with tolerance none, rethrows. */
export class ErrorBudget {
  failed = 0;
  private readonly keys = new Set<string>();
  constructor(
    private readonly connection: string,
    private readonly cfg: ErrorsConfig | undefined,
    private readonly store: DeadLetterStore | undefined,
  ) {}

  get tolerant(): boolean {
    return this.cfg?.tolerance === 'all' && !!this.store;
  }

  /** Stores the letter (durably) or, without tolerance, throws `err`. */
  async deadLetter(
    err: unknown,
    letter: { stream: string; key?: string; stage: DeadLetterStage; position?: string; payload: Record<string, unknown> },
    recordsRead: number,
  ): Promise<void> {
    if (!this.tolerant) throw err;
    const message = redact(err instanceof Error ? err.message : String(err));
    const payload = JSON.parse(redact(JSON.stringify(letter.payload))) as Record<string, unknown>;
    await this.store!.add({
      id: randomUUID(),
      connection: this.connection,
      ...letter,
      error: message,
      payload,
      at: new Date().toISOString(),
      attempts: 0,
    });
    this.failed++;
    if (letter.key !== undefined) this.keys.add(`${letter.stream}\u0000${letter.key}`);
    this.check(recordsRead, false);
  }

  /** Throws when more than max_error_rate of the records read failed (from 100 records on, or at the end). */
  check(recordsRead: number, atEnd: boolean): void {
    if (!this.failed || (!atEnd && recordsRead < 100)) return;
    const rate = this.cfg?.max_error_rate ?? 0;
    if (this.failed / Math.max(recordsRead, 1) <= rate) return;
    throw new SluiceError(
      `${this.failed} of ${recordsRead} records failed (${((100 * this.failed) / Math.max(recordsRead, 1)).toFixed(1)}%), more than errors.max_error_rate ${rate * 100}%`,
      {
        kind: 'source',
        where: `connection ${this.connection}`,
        hint: `see them with: sluice dead-letters list <pipeline> --connection ${this.connection}; fix the cause, then sluice dead-letters retry`,
      },
    );
  }
}
