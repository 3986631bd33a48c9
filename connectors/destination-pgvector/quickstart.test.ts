// The front door: examples/quickstart.yaml through the CLI, on a copy of the example (so a user's
// examples/.sluice is left alone): sync, a second sync that does nothing, then search.
import { execFile } from 'node:child_process';
import { cpSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { scratchDir } from '../../src/testing/context.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const run = async (...args: string[]) =>
  (await promisify(execFile)(process.execPath, ['bin/sluice.js', ...args], { cwd: ROOT, timeout: 240_000 })).stdout;

describe('examples/quickstart.yaml', () => {
  it('indexes the corpus into embedded pgvector, re-syncs as a no-op, and finds the right page', { timeout: 480_000 }, async () => {
    const dir = scratchDir('sluice-quickstart-');
    cpSync(join(ROOT, 'examples/quickstart.yaml'), join(dir, 'quickstart.yaml'));
    cpSync(join(ROOT, 'examples/corpus'), join(dir, 'corpus'), { recursive: true });
    const yaml = join(dir, 'quickstart.yaml');

    const first = JSON.parse(await run('sync', yaml, '--json'));
    expect(first.status).toBe('succeeded');
    const docs = first.connections[0].streams.docs;
    expect(docs.records_read).toBeGreaterThanOrEqual(20);
    expect(docs.chunks_written).toBeGreaterThanOrEqual(docs.records_read);

    const second = JSON.parse(await run('sync', yaml, '--json'));
    expect(second.status).toBe('succeeded');
    expect(second.connections[0].streams.docs).toMatchObject({
      records_read: 0,
      chunks_written: 0,
      chunks_deleted: 0,
      embedding_requests: 0,
      embedding_tokens: 0,
    });

    const found = JSON.parse(
      await run('search', yaml, 'old generation switch atomically overwrite readers empty table', '--top-k', '3', '--json'),
    );
    expect(found.hits).toHaveLength(3);
    expect(found.hits.map((h: { documentId: string }) => h.documentId)).toContain('overwrite.md');
  });
});
