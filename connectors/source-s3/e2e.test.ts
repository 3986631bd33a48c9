// End to end through the real CLI (`sluice sync <yaml> --json`) from the fauxqs S3 server into
// the jsonl destination: changes and deletions land downstream, and a sync SIGKILLed mid-way and
// re-run ends with the same output as an uninterrupted one (nothing lost, nothing duplicated).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { STACK_LINE, runCli, startCli, tempDir, writeFiles } from '../../test/helpers/cli.ts';
import { TEST_CREDENTIALS, del, freshBucket, put, testClient } from '../../test/fixtures/s3.ts';

const endpoint = inject('s3Endpoint');
const client = testClient(endpoint);
afterAll(() => client.destroy());

function pipeline(dir: string, bucket: string): string {
  const source = (extra: string) => `
      type: s3
      config:
        bucket: ${bucket}
        endpoint: ${JSON.stringify(endpoint)}
        force_path_style: true
        access_key_id: ${TEST_CREDENTIALS.access_key_id}
        secret_access_key: ${TEST_CREDENTIALS.secret_access_key}
        page_size: 50
${extra}`;
  writeFiles(dir, {
    'pipeline.yaml': `version: 1
connections:
  - name: s3docs
    source:${source('        prefix: docs/\n        stream: docs')}
    destination:
      type: jsonl
      config: { path: docs.jsonl, include_embeddings: false, batch_records: 50 }
    processing:
      text_fields: [content]
      chunk_size: 1000
    streams:
      - name: docs
        sync_mode: incremental
        destination_sync_mode: append_dedup
  - name: s3rows
    source:${source('        prefix: rows/\n        stream: rows\n        primary_key: id')}
    destination:
      type: jsonl
      config: { path: rows.jsonl, include_embeddings: false }
    processing:
      text_fields: [body]
      chunk_size: 1000
    streams:
      - name: rows
        sync_mode: incremental
        destination_sync_mode: append_dedup
`,
  });
  return join(dir, 'pipeline.yaml');
}

/** document id → content, asserting no document appears twice. */
function output(file: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const c = JSON.parse(line) as { document_id: string; chunk_index: number; content: string };
    expect(c.chunk_index).toBe(0);
    expect(out.has(c.document_id), `duplicate ${c.document_id}`).toBe(false);
    out.set(c.document_id, c.content);
  }
  return out;
}

async function sync(file: string) {
  const r = await runCli(['sync', file, '--json']);
  expect(r.stderr).not.toMatch(STACK_LINE);
  expect(r.code, r.stderr + r.stdout).toBe(0);
  return JSON.parse(r.stdout) as { status: string };
}

describe('S3 source through the CLI', () => {
  it('syncs documents and rows, then changes and deletions, into jsonl', { timeout: 180_000 }, async () => {
    const bucket = await freshBucket(client, 'e2e');
    const dir = tempDir('sluice-s3-e2e-');
    const file = pipeline(dir, bucket);
    await put(client, bucket, 'docs/a.md', '# A\nalpha');
    await put(client, bucket, 'docs/b.md', '# B\nbravo');
    await put(client, bucket, 'docs/c.txt', 'charlie');
    await put(client, bucket, 'rows/1.jsonl', '{"id":1,"body":"one"}\n{"id":2,"body":"two"}\n');
    await put(client, bucket, 'rows/2.csv', 'id,body\n3,three\n4,four\n');

    expect((await sync(file)).status).toBe('succeeded');
    expect(output(join(dir, 'docs.jsonl'))).toEqual(
      new Map([
        ['docs/a.md', '# A\nalpha'],
        ['docs/b.md', '# B\nbravo'],
        ['docs/c.txt', 'charlie'],
      ]),
    );
    expect(output(join(dir, 'rows.jsonl'))).toEqual(
      new Map([
        ['1', 'one'],
        ['2', 'two'],
        ['3', 'three'],
        ['4', 'four'],
      ]),
    );

    await put(client, bucket, 'docs/a.md', '# A\nalpha, revised');
    await del(client, bucket, 'docs/b.md');
    await put(client, bucket, 'docs/d.md', 'delta');
    await del(client, bucket, 'rows/2.csv');
    await put(client, bucket, 'rows/1.jsonl', '{"id":1,"body":"one, revised"}\n');
    expect((await sync(file)).status).toBe('succeeded');
    expect(output(join(dir, 'docs.jsonl'))).toEqual(
      new Map([
        ['docs/a.md', '# A\nalpha, revised'],
        ['docs/c.txt', 'charlie'],
        ['docs/d.md', 'delta'],
      ]),
    );
    expect(output(join(dir, 'rows.jsonl'))).toEqual(new Map([['1', 'one, revised']]));
  });

  it('a sync SIGKILLed mid-way and re-run ends equal to the bucket, without duplicates', { timeout: 180_000 }, async () => {
    const bucket = await freshBucket(client, 'e2ekill');
    const dir = tempDir('sluice-s3-kill-');
    const file = pipeline(dir, bucket);
    const expected = new Map<string, string>();
    for (let i = 0; i < 300; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, (_, j) => {
          const key = `docs/n-${String(i + j).padStart(4, '0')}.md`;
          expected.set(key, `note ${i + j}`);
          return put(client, bucket, key, `note ${i + j}`);
        }),
      );
    }
    const out = join(dir, 'docs.jsonl');
    const started = Date.now();
    const { child, done } = startCli(['sync', file, '--connection', 's3docs', '--json']);
    // Kill once some output was committed, so the restart resumes from a mid-run state.
    while (Date.now() - started < 120_000 && !(existsSync(out) && statSync(out).size > 0)) await sleep(10);
    child.kill('SIGKILL');
    const killed = await done;
    const partial = output(out);
    expect(killed.signal === 'SIGKILL' || killed.code === 0).toBe(true);
    // Between kill and re-run, objects go away and change, including ones the killed run had
    // already delivered (whether or not its state was saved before the kill).
    const delivered = [...partial.keys()];
    const gone = [delivered[0], 'docs/n-0299.md'].filter((k): k is string => !!k);
    for (const k of gone) {
      await del(client, bucket, k);
      expected.delete(k);
    }
    const changed = delivered[1] ?? 'docs/n-0000.md';
    await put(client, bucket, changed, 'changed');
    expected.set(changed, 'changed');
    await sync(file);
    expect(partial.size).toBeLessThanOrEqual(300);
    expect(output(out)).toEqual(expected);
  });
});
