// A small custom destination implementing the fingerprint contract (docs/fingerprints.md) with the
// public kit only, for engine tests: every document of every stream in one JSON file (replaced
// atomically at each batch, so a SIGKILL leaves the last committed batch), and an operation log
// (one JSON line per batch) so tests can see exactly what the engine sent.
// Use it from a pipeline: `destination: { type: <relative path to this file>, config: { path: ./store.json } }`.
import { appendFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { defineDestination, z, type WriteOperation } from 'sluice/cdk';

export interface StoredChunkLine {
  id: string;
  content: string;
  contentHash: string;
  metadata: Record<string, unknown>;
  /** Vector present (embedded or carried over from the stored chunk). */
  vector: boolean;
}
export interface StoredDoc {
  fingerprint?: { content: string; metadata: string };
  chunks: StoredChunkLine[];
}
export interface StoreFile {
  /** stream → document id → document (the live generation). */
  live: Record<string, Record<string, StoredDoc>>;
  /** Overwrite streams being loaded: the new generation. */
  next: Record<string, Record<string, StoredDoc>>;
}
/** One line of the log: the operations of one batch. */
export interface LoggedOp {
  type: 'DOCUMENT' | 'DELETE' | 'KEEP';
  stream: string;
  documentId: string;
  metadataOnly?: boolean;
  chunks?: number;
  /** Chunks that arrived with a vector. */
  embedded?: number;
}

const Config = z.strictObject({
  path: z.string().min(1),
  /** Without it the destination keeps no fingerprints (a writer without fingerprints()). */
  fingerprints: z.boolean().default(true),
});

export function readStore(file: string): StoreFile {
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as StoreFile) : { live: {}, next: {} };
}

export function readLog(file: string): LoggedOp[][] {
  const log = `${file}.log`;
  return existsSync(log)
    ? readFileSync(log, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as LoggedOp[])
    : [];
}

function save(file: string, store: StoreFile) {
  writeFileSync(`${file}.tmp`, JSON.stringify(store));
  renameSync(`${file}.tmp`, file);
}

export default defineDestination({
  spec: { name: 'fingerprint-store', title: 'Fingerprint store (tests)', config: Config },
  async connect(config, ctx, options) {
    const file = resolve(ctx.baseDir, config.path);
    const modes = new Map(options.streams.map((s) => [s.name, s.destinationSyncMode]));
    const apply = (store: StoreFile, op: WriteOperation) => {
      const overwrite = modes.get(op.stream) === 'overwrite';
      const live = (store.live[op.stream] ??= {});
      const target = overwrite ? (store.next[op.stream] ??= {}) : live;
      if (op.type === 'DELETE') {
        delete target[op.documentId];
        return;
      }
      if (op.type === 'KEEP') {
        if (!live[op.documentId]) throw new Error(`KEEP of ${op.documentId}, which the live generation does not hold`);
        target[op.documentId] = live[op.documentId];
        return;
      }
      if (op.metadataOnly) {
        const old = live[op.documentId];
        if (!old || old.chunks.length !== op.chunks.length)
          throw new Error(`metadata-only update of ${op.documentId} does not match its stored chunks`);
        target[op.documentId] = {
          fingerprint: op.fingerprint,
          chunks: old.chunks.map((c, i) => ({ ...c, metadata: op.chunks[i].metadata })),
        };
        return;
      }
      target[op.documentId] = {
        ...(config.fingerprints && op.fingerprint ? { fingerprint: op.fingerprint } : {}),
        chunks: op.chunks.map((c) => ({
          id: c.id,
          content: c.content,
          contentHash: c.contentHash,
          metadata: c.metadata,
          vector: !!c.embedding,
        })),
      };
    };
    return {
      async writeBatch(ops) {
        const store = readStore(file);
        for (const op of ops) apply(store, op);
        const logged: LoggedOp[] = ops.map((op) => ({
          type: op.type,
          stream: op.stream,
          documentId: op.documentId,
          ...(op.type === 'DOCUMENT'
            ? { metadataOnly: !!op.metadataOnly, chunks: op.chunks.length, embedded: op.chunks.filter((c) => c.embedding).length }
            : {}),
        }));
        save(file, store);
        appendFileSync(`${file}.log`, JSON.stringify(logged) + '\n');
      },
      async completeStream(stream) {
        if (stream.destinationSyncMode !== 'overwrite') return;
        const store = readStore(file);
        store.live[stream.name] = store.next[stream.name] ?? {};
        delete store.next[stream.name];
        save(file, store);
      },
      ...(config.fingerprints
        ? {
            async fingerprints(stream: string, ids: string[]) {
              if (ids.length > 1000) throw new Error(`fingerprints() asked for ${ids.length} ids (at most 1,000)`);
              const live = readStore(file).live[stream] ?? {};
              appendFileSync(`${file}.lookups`, `${stream} ${ids.length}\n`);
              const found = new Map<string, { content: string; metadata: string }>();
              for (const id of ids) {
                const fp = live[id]?.fingerprint;
                if (fp) found.set(id, fp);
              }
              return found;
            },
          }
        : {}),
      async close() {},
    };
  },
  async *documents(config, ctx, stream) {
    const live = readStore(resolve(ctx.baseDir, config.path)).live[stream] ?? {};
    for (const [documentId, d] of Object.entries(live))
      yield { documentId, chunks: d.chunks.length, ...(d.fingerprint ? { fingerprint: d.fingerprint } : {}) };
  },
});
