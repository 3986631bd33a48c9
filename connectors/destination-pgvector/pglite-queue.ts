// PGLiteSocketServer serves every client connection from one PGlite session and schedules their
// protocol messages one at a time, keeping a connection's messages together only inside an SQL
// transaction (@electric-sql/pglite-socket 0.2.17; upstream issue electric-sql/pglite#1046). An
// extended-protocol query (Parse, Bind, Describe, Execute … Sync) is not a transaction, so two
// connections querying at once interleave: one's Parse replaces the other's unnamed statement
// ("unnamed prepared statement does not exist", or the other's rows). Its queue also stops for good
// after one failed message. No release fixes either, so the queue's scheduler is replaced here.

/** The parts of pglite-socket's (unexported) QueryQueueManager this relies on. */
interface QueuedMessage {
  handlerId: number;
  message: Uint8Array;
  resolve: (bytes: number) => void;
  reject: (err: unknown) => void;
  onData: (data: Uint8Array) => void;
}
interface QueryQueue {
  queue: QueuedMessage[];
  processing: boolean;
  lastHandlerId: number | null;
  db: {
    isInTransaction(): boolean;
    runExclusive<T>(fn: () => Promise<T>): Promise<T>;
    execProtocolRawStream(message: Uint8Array, opts: { onRawData: (data: Uint8Array) => void }): Promise<unknown>;
    exec(sql: string): Promise<unknown>;
  };
  processQueue(): Promise<void>;
  clearTransactionIfNeeded(handlerId: number): Promise<void>;
}

const SYNC = new Uint8Array([0x53, 0, 0, 0, 4]);

// Extended-protocol messages that leave the connection's query open until its Sync.
const OPENS_BATCH = new Set([
  0x50 /* Parse */, 0x42 /* Bind */, 0x44 /* Describe */, 0x45 /* Execute */, 0x43 /* Close */, 0x48 /* Flush */,
]);

/**
 * Makes `server` keep each connection's messages together from its first extended-protocol message
 * to its Sync (as well as inside transactions), and go on after a failed message.
 */
export function keepQueriesTogether(server: object): void {
  const q = (server as { queryQueue?: QueryQueue }).queryQueue;
  if (!q || !Array.isArray(q.queue) || typeof q.processQueue !== 'function' || typeof q.db?.runExclusive !== 'function') {
    throw new Error(
      '@electric-sql/pglite-socket changed: its query queue is not the one sluice schedules (connectors/destination-pgvector/pglite-queue.ts)',
    );
  }
  /** The connection whose extended-protocol query is open (its Sync not yet run). */
  let openBatch: number | null = null;
  q.processQueue = async function (this: QueryQueue) {
    if (this.processing || !this.queue.length) return;
    this.processing = true;
    try {
      while (this.queue.length) {
        const pinned = openBatch ?? (this.db.isInTransaction() ? this.lastHandlerId : null);
        let next: QueuedMessage | undefined;
        if (pinned !== null) {
          const i = this.queue.findIndex((m) => m.handlerId === pinned);
          if (i < 0) break; // that connection's next message comes; the others wait for it
          next = this.queue.splice(i, 1)[0];
        } else next = this.queue.shift()!;
        const item = next;
        let bytes = 0;
        try {
          await this.db.runExclusive(() =>
            this.db.execProtocolRawStream(item.message, {
              onRawData: (data) => {
                bytes += data.length;
                item.onData(data);
              },
            }),
          );
        } catch (err) {
          item.reject(err);
          continue;
        }
        this.lastHandlerId = item.handlerId;
        openBatch = OPENS_BATCH.has(item.message[0]) ? item.handlerId : null;
        item.resolve(bytes);
      }
    } finally {
      this.processing = false;
    }
  };
  // A connection that goes away mid-query (or mid-transaction) no longer holds the others up.
  const clearTransaction = q.clearTransactionIfNeeded.bind(q);
  q.clearTransactionIfNeeded = async (handlerId: number) => {
    if (openBatch === handlerId) {
      openBatch = null;
      // Its Sync: after an error the session skips every message until one comes.
      await q.db.runExclusive(() => q.db.execProtocolRawStream(SYNC, { onRawData: () => {} })).catch(() => {});
    }
    await clearTransaction(handlerId);
    await q.processQueue();
  };
}
