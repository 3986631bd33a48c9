// Dry run (`sluice sync --dry-run`): which documents a real run would skip as unchanged. Nothing is
// opened for writing: the stored fingerprints come from the destination's read-only `documents()`
// listing, kept in a scratch LMDB database (memory does not grow with the index), and the dry run's
// own documents update that copy as a real run's writes would update the destination.
import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { RootDatabase } from 'lmdb';
import { open } from './lmdb-lazy.ts';
import type { LoadedConnection } from '../config/load.ts';
import type { ConnectorContext, DestinationMessage, DocumentFingerprint } from '../protocol/connector.ts';
import { withContext } from '../protocol/errors.ts';
import type { DestinationSyncMode } from '../protocol/messages.ts';

export type PlannedChange = 'unchanged' | 'metadata' | 'changed';

export class StoredFingerprints {
  private root: RootDatabase<string, string> | undefined;
  private readonly loaded = new Set<string>();
  private puts = 0;

  private constructor(
    private readonly conn: Pick<LoadedConnection, 'config' | 'destination' | 'destinationConfig'>,
    private readonly ctx: ConnectorContext,
    private readonly modes: ReadonlyMap<string, DestinationSyncMode>,
    private readonly dir: string,
  ) {}

  /** Undefined when the destination cannot list its documents. */
  static for(
    conn: Pick<LoadedConnection, 'config' | 'destination' | 'destinationConfig'>,
    ctx: ConnectorContext,
    modes: ReadonlyMap<string, DestinationSyncMode>,
  ): StoredFingerprints | undefined {
    if (!conn.destination.documents) return undefined;
    return new StoredFingerprints(conn, ctx, modes, join(ctx.workDir, `plan-${process.pid}-${randomBytes(4).toString('hex')}`));
  }

  private db(): RootDatabase<string, string> {
    // A scratch database: no durability needed.
    this.root ??= open<string, string>({ path: this.dir, noSync: true });
    return this.root;
  }

  private key(stream: string, id: string): string {
    return createHash('sha256').update(stream).update('\u0000').update(id).digest('base64');
  }

  private async load(stream: string) {
    if (this.loaded.has(stream)) return;
    this.loaded.add(stream);
    const db = this.db();
    try {
      for await (const d of this.conn.destination.documents!(this.conn.destinationConfig, this.ctx, stream)) {
        if (!d.fingerprint) continue;
        this.write(db.put(this.key(stream, d.documentId), `${d.fingerprint.content}:${d.fingerprint.metadata}`));
        if (++this.puts % 10_000 === 0) await db.committed;
      }
    } catch (err) {
      throw withContext(
        err,
        `connection ${this.conn.config.name}, destination ${this.conn.config.destination.type}, stream ${stream} (listing stored documents)`,
      );
    }
    await db.committed;
  }

  /**
   * What a real run would do with this document (`metadata`: same content, other metadata); updates
   * the copy as the run's write would (a write is visible to later documents within milliseconds:
   * this is an estimate).
   */
  async plan(m: Extract<DestinationMessage, { type: 'DOCUMENT' }>, fingerprint: DocumentFingerprint): Promise<PlannedChange> {
    await this.load(m.stream);
    const db = this.db();
    const key = this.key(m.stream, m.documentId);
    const stored = db.get(key);
    const now = `${fingerprint.content}:${fingerprint.metadata}`;
    if (stored === now) return 'unchanged';
    // Overwrite compares with the live generation, which the run does not change before its switch.
    if (this.modes.get(m.stream) !== 'overwrite') this.write(db.put(key, now));
    return stored?.startsWith(`${fingerprint.content}:`) ? 'metadata' : 'changed';
  }

  async deleted(m: Extract<DestinationMessage, { type: 'DELETE' }>): Promise<void> {
    if (this.modes.get(m.stream) === 'overwrite') return;
    await this.load(m.stream);
    this.write(this.db().remove(this.key(m.stream, m.documentId)));
  }

  private write(done: Promise<unknown>) {
    done.catch(() => undefined); // a scratch copy: a failed write only makes the estimate rougher
  }

  async close(): Promise<void> {
    await this.root?.close().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
