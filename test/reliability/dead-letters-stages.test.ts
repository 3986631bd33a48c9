// Dead letters of the stages outside the engine: records the source could not parse (a JSONL line
// that is not JSON, a CSV row with a field too many) and documents the destination refused
// (Pinecone's 40 KB metadata limit, enforced by the fixture). Through the CLI: with tolerance all
// they become letters (stage, stream, position or key, error, payload) while everything else is
// written once; the summary and metrics count them by stage; without tolerance the first one fails
// the run naming it; retry re-sends refused documents exactly once and leaves source letters.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPineconeFixture, type PineconeFixture } from '../fixtures/pinecone-server.ts';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import type { DeadLetter } from '../../src/engine/dead-letters.ts';
import { MAX_RAW_RECORD_CHARS } from '../../src/protocol/messages.ts';

const DIM = 16;
let fx: PineconeFixture;
beforeAll(async () => {
  fx = await startPineconeFixture();
});
afterAll(() => fx?.close());

const pipeline = (index: string, opts: { errors: string; metadata: string }) => `version: 1
connections:
  - name: items
    source: { type: file, config: { path: ./data, stream: items } }
    destination: { type: pinecone, config: { api_key: ${fx.apiKey}, index: ${index}, controller_host: "${fx.controllerUrl}", retry_initial_delay_ms: 5 } }
    embedding: { provider: hash, dimensions: ${DIM} }
    processing: { text_fields: [title], metadata_fields: ${opts.metadata} }
    streams: [ { name: items, primary_key: [[sku]], destination_sync_mode: append_dedup } ]
${opts.errors}`;

const HUGE_NOTES = 'n'.repeat(41 * 1024); // over Pinecone's 40 KB on its own: truncating content cannot help
const LONG_BAD_LINE = `{"sku": "S50", "title": ${'x'.repeat(MAX_RAW_RECORD_CHARS + 100)}`;

function jsonl(): string {
  const rows: string[] = [];
  for (let i = 0; i < 100; i++) {
    if (i === 50) rows.push(LONG_BAD_LINE);
    else if (i === 60) rows.push(JSON.stringify({ sku: `S${i}`, title: `item ${i}`, notes: HUGE_NOTES }));
    else rows.push(JSON.stringify({ sku: `S${i}`, title: `item ${i}`, notes: `note ${i}` }));
  }
  return rows.join('\n') + '\n';
}
const CSV = 'sku,title,notes\nC1,csv one,fine\nC2,csv two,has,one field too many\nC3,csv three,fine\n';

const cli = (dir: string, ...args: string[]) => runCli(args, { cwd: dir });
const ids = (index: string) => fx.ids(index, 'items').sort();
const upserts = (index: string) => fx.requests.filter((r) => r.index === index && r.path === '/vectors/upsert').length;

describe('dead letters of the source and destination stages', () => {
  it(
    'tolerance all: unparseable and refused records become letters, the rest is written once; retry re-sends refused documents exactly once',
    { timeout: 300_000 },
    async () => {
      const index = 'letters-all';
      await fx.createIndex(index, DIM);
      const dir = tempDir('dead-letters-stages-');
      const errors = '    errors: { tolerance: all, max_error_rate: 0.05 }\n';
      writeFiles(dir, {
        'p.yaml': pipeline(index, { errors, metadata: '[notes]' }),
        'data/a.jsonl': jsonl(),
        'data/b.csv': CSV,
      });
      const r = await cli(dir, 'sync', 'p.yaml', '--json', '--metrics-textfile', 'sluice.prom');
      expect(r.code, r.stderr).toBe(0);
      const summary = JSON.parse(r.stdout).connections[0];
      expect(summary.dead_letters).toBe(3);
      const stats = summary.streams.items;
      expect(stats).toMatchObject({ records_read: 103, records_failed: 3, failed_by_stage: { source: 2, destination: 1 } });
      expect(stats.records_written).toBe(100); // 103 read − 2 unparseable − 1 refused
      const prom = readFileSync(join(dir, 'sluice.prom'), 'utf8');
      expect(prom).toContain('sluice_dead_letters_total{pipeline="p",connection="items",stream="items",stage="source"} 2\n');
      expect(prom).toContain('sluice_dead_letters_total{pipeline="p",connection="items",stream="items",stage="destination"} 1\n');

      // Everything else is in Pinecone, once; nothing over the limit was ever sent.
      const expected = [
        ...Array.from({ length: 100 }, (_, i) => `S${i}#0`).filter((id) => id !== 'S50#0' && id !== 'S60#0'),
        'C1#0',
        'C3#0',
      ];
      expect(ids(index)).toEqual(expected.sort());
      expect(fx.requests.filter((q) => q.index === index && q.status >= 400)).toEqual([]);

      const listed = await cli(dir, 'dead-letters', 'list', 'p.yaml', '--json');
      expect(listed.code, listed.stderr).toBe(0);
      const letters = JSON.parse(listed.stdout).items as DeadLetter[];
      const byStage = (stage: string) => letters.filter((l) => l.stage === stage);
      expect(
        byStage('source')
          .map((l) => l.position)
          .sort(),
      ).toEqual(['file a.jsonl, line 51', 'file b.csv, line 3']);
      const line = byStage('source').find((l) => l.position === 'file a.jsonl, line 51')!;
      expect(line).toMatchObject({ connection: 'items', stream: 'items', attempts: 0, error: expect.stringMatching(/^invalid JSON/) });
      expect(line.key).toBeUndefined();
      // The raw text is kept, cut to a sane size with its length said.
      const raw = String(line.payload.raw);
      expect(raw.startsWith(LONG_BAD_LINE.slice(0, MAX_RAW_RECORD_CHARS))).toBe(true);
      expect(raw).toMatch(/… \[\d+ more characters\]$/);
      expect(raw.length).toBeLessThan(MAX_RAW_RECORD_CHARS + 64);
      const row = byStage('source').find((l) => l.position === 'file b.csv, line 3')!;
      expect(row.error).toMatch(/invalid CSV/);
      expect(row.payload.raw).toBe('C2,csv two,has,one field too many\n');
      const refused = byStage('destination');
      expect(refused).toHaveLength(1);
      expect(refused[0]).toMatchObject({ stream: 'items', key: 'S60', payload: { sku: 'S60', title: 'item 60', notes: HUGE_NOTES } });
      expect(refused[0].error).toMatch(/refused document S60: .*has \d+ bytes of metadata; Pinecone allows 40960/);
      const text = await cli(dir, 'dead-letters', 'list', 'p.yaml');
      expect(text.stdout).toMatch(/stage source {2}attempts 0 {2}at file b\.csv, line 3/);

      // Retried before the cause is fixed: refused again, the letter stays (one more attempt).
      const before = await cli(dir, 'dead-letters', 'retry', 'p.yaml', '--json');
      expect(before.code).toBe(1);
      expect(JSON.parse(before.stdout)[0]).toMatchObject({ retried: 1, succeeded: 0, failed: [{ key: 'S60' }] });
      expect(JSON.parse(before.stdout)[0].skipped).toHaveLength(2);
      expect(ids(index)).not.toContain('S60#0');

      // The cause fixed (no more 41 KB field in the metadata): written once, the letter goes.
      writeFiles(dir, { 'p.yaml': pipeline(index, { errors, metadata: '[sku]' }) });
      const fixed = await cli(dir, 'dead-letters', 'retry', 'p.yaml', '--json');
      expect(fixed.code, fixed.stderr).toBe(0);
      const result = JSON.parse(fixed.stdout)[0];
      expect(result).toMatchObject({ connection: 'items', retried: 1, succeeded: 1, failed: [] });
      expect(result.skipped.map((s: { position: string }) => s.position).sort()).toEqual(['file a.jsonl, line 51', 'file b.csv, line 3']);
      expect(result.skipped[0].reason).toMatch(/only the source can read it/);
      expect(fx.vector(index, 'items', 'S60#0')!.metadata).toMatchObject({ document_id: 'S60', sku: 'S60', content: 'item 60' });
      // Exactly once: another retry sends nothing to Pinecone.
      const sent = upserts(index);
      const again = await cli(dir, 'dead-letters', 'retry', 'p.yaml', '--json');
      expect(JSON.parse(again.stdout)[0]).toMatchObject({ retried: 0, succeeded: 0 });
      expect(upserts(index)).toBe(sent);

      // Source letters: the data is fixed at the source; the next sync reads the changed files, then they are purged.
      writeFiles(dir, {
        'data/a.jsonl': jsonl().replace(LONG_BAD_LINE, JSON.stringify({ sku: 'S50', title: 'item 50' })),
        'data/b.csv': CSV.replace('has,one field too many', 'fixed'),
      });
      const resync = await cli(dir, 'sync', 'p.yaml', '--json');
      expect(resync.code, resync.stderr).toBe(0);
      expect(JSON.parse(resync.stdout).connections[0].dead_letters).toBeUndefined();
      expect(ids(index)).toContain('S50#0');
      expect(ids(index)).toContain('C2#0');
      const purge = await cli(dir, 'dead-letters', 'purge', 'p.yaml', '--id', ...byStage('source').map((l) => l.id));
      expect(purge.stdout).toMatch(/items: purged 2 dead letter\(s\)/);
      expect(JSON.parse((await cli(dir, 'dead-letters', 'list', 'p.yaml', '--json')).stdout).items).toEqual([]);
    },
  );

  it(
    'tolerance none: an unparseable line fails the run naming file and line; a refused document fails it naming the document',
    {
      timeout: 240_000,
    },
    async () => {
      const index = 'letters-none';
      await fx.createIndex(index, DIM);
      const dir = tempDir('dead-letters-none-');
      writeFiles(dir, { 'p.yaml': pipeline(index, { errors: '', metadata: '[notes]' }), 'data/a.jsonl': jsonl() });
      const bad = await cli(dir, 'sync', 'p.yaml', '--json');
      expect(bad.code).toBe(1);
      const err = JSON.parse(bad.stdout).connections[0].error;
      expect(err.message).toMatch(/^invalid JSON/);
      expect(err.where).toBe('connection items, source file, stream items, file a.jsonl, line 51');
      expect(err.hint).toMatch(/errors\.tolerance: all/);

      // The line fixed: the next record the destination cannot take fails the run, naming it.
      writeFiles(dir, { 'data/a.jsonl': jsonl().replace(LONG_BAD_LINE, JSON.stringify({ sku: 'S50', title: 'item 50' })) });
      const refused = await cli(dir, 'sync', 'p.yaml', '--json');
      expect(refused.code).toBe(1);
      const e2 = JSON.parse(refused.stdout).connections[0].error;
      expect(e2.message).toMatch(/^the destination refused document S60: .*Pinecone allows 40960/);
      expect(e2.where).toMatch(/connection items, destination pinecone, stream items, document S60/);
      expect(ids(index)).not.toContain('S60#0');
    },
  );
});
