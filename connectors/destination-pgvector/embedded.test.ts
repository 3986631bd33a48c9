// Embedded mode: PGlite + pgvector in a directory, opened by sluice itself; one process at a time,
// and another process can open it after the first closed it.
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { SluiceError } from '../../src/protocol/errors.ts';
import destination from './index.ts';
import { PgvectorConfigSchema } from './config.ts';
import { chunkContent, deleteMessage, documentMessage, drain, stateMessage, testContext, vectorFor } from './testing.ts';
import { scratchDir } from '../../src/testing/context.ts';

const DIMS = 16;
const here = import.meta.dirname;

describe('embedded PGlite', () => {
  it(
    'round-trips through a directory relative to the pipeline file, locks it while open, and reopens in another process',
    { timeout: 240_000 },
    async () => {
      const baseDir = scratchDir('sluice-emb-');
      const cfg = PgvectorConfigSchema.parse({ embedded: '.sluice/pg' });
      const ctx = testContext('emb', baseDir);
      const streams = [{ name: 'docs', destinationSyncMode: 'append_dedup' as const, primaryKey: [['id']] }];

      const w = await destination.open(cfg, ctx, { streams, dimensions: DIMS });
      expect(existsSync(join(baseDir, '.sluice/pg/pgdata/PG_VERSION'))).toBe(true);
      // a second opener (even in this process) is told the database is busy
      const busy = await destination.open(cfg, ctx, { streams, dimensions: DIMS }).catch((e) => e);
      expect(busy).toBeInstanceOf(SluiceError);
      expect(busy.message).toMatch(/embedded database .* is in use by process \d+/);

      const events = await drain(w, [
        documentMessage('docs', 'a', 4, DIMS),
        documentMessage('docs', 'b', 2, DIMS),
        documentMessage('docs', 'gone', 2, DIMS),
        stateMessage('docs', 1),
        documentMessage('docs', 'a', 3, DIMS, 2),
        deleteMessage('docs', 'gone'),
        stateMessage('docs', 2),
      ]);
      expect(events.filter((e) => e.type === 'STATE_COMMITTED')).toHaveLength(2);
      await w.close();
      expect(existsSync(join(baseDir, '.sluice/pg/sluice.lock'))).toBe(false);

      // Another process opens the same directory and searches it.
      const script = join(baseDir, 'search.mts');
      writeFileSync(
        script,
        `import destination from ${JSON.stringify(resolve(here, 'index.ts'))};
       import { PgvectorConfigSchema } from ${JSON.stringify(resolve(here, 'config.ts'))};
       import { testContext, vectorFor, chunkContent } from ${JSON.stringify(resolve(here, 'testing.ts'))};
       const cfg = PgvectorConfigSchema.parse({ embedded: '.sluice/pg' });
       const ctx = testContext('emb', ${JSON.stringify(baseDir)});
       const w = await destination.open(cfg, ctx, { streams: [{ name: 'docs', destinationSyncMode: 'append_dedup', primaryKey: [['id']] }], dimensions: ${DIMS} });
       const state = await w.readState();
       await w.close();
       const hits = await destination.search(cfg, ctx, { vector: vectorFor(chunkContent('a', 1, 2), ${DIMS}), topK: 10, streams: ['docs'] });
       process.stdout.write(JSON.stringify({ state, hits }));`,
      );
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], {
        cwd: resolve(here, '../..'),
        timeout: 60_000,
      });
      const out = JSON.parse(stdout) as {
        state: unknown;
        hits: Array<{ documentId: string; chunkIndex: number; content: string; score: number }>;
      };
      expect(out.state).toEqual({ streams: { docs: { cursor: 2 } } });
      expect(out.hits.map((h) => `${h.documentId}#${h.chunkIndex}`).sort()).toEqual(['a#0', 'a#1', 'a#2', 'b#0', 'b#1']);
      expect(out.hits[0]).toMatchObject({ documentId: 'a', chunkIndex: 1, content: chunkContent('a', 1, 2) });
      expect(out.hits[0].score).toBeCloseTo(1, 5);

      // and this process can open it again after the child exited
      const hits = await destination.search!(cfg, ctx, { vector: vectorFor(chunkContent('b', 0, 1), DIMS), topK: 1, streams: ['docs'] });
      expect(hits[0]).toMatchObject({ documentId: 'b', chunkIndex: 0 });
    },
  );
});
