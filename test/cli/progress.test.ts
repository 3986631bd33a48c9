// Terminal progress of `sync`: rendered for an 80-column terminal, no line may wrap; the rate is
// the recent one; totals and an ETA appear when the source estimated its size; local embedders
// show no request counter.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { BIN, tempDir, writeFiles } from '../helpers/cli.ts';
import type { StreamStats } from '../../src/engine/sync.ts';
import { humanLogLine } from '../../src/cli/output.ts';
import { ProgressView, type LiveConnection } from '../../src/cli/progress.ts';

const stats = (over: Partial<StreamStats> = {}): StreamStats => ({
  status: 'running',
  records_read: 0,
  records_written: 0,
  records_deleted: 0,
  records_skipped: 0,
  chunks_written: 0,
  chunks_deleted: 0,
  embedding_requests: 0,
  embedding_tokens: 0,
  embedding_cache_hits: 0,
  duration_ms: 0,
  ...over,
});

describe('sync progress at 80 columns', () => {
  it('one line per stream, none wider than the terminal, counters kept when names are long', () => {
    const long = 'a-connection-whose-name-goes-on-and-on-and-on-for-quite-a-while';
    const live: LiveConnection[] = [
      {
        name: long,
        localEmbedder: false,
        streams: {
          docs: stats({ records_read: 1_234_567, chunks_written: 9_876_543, embedding_requests: 45_678, embedding_cache_hits: 1_000_000 }),
          another_stream_with_a_very_long_name_indeed_yes_really_long: stats({ records_read: 5, records_estimated: 10_000_000 }),
          done: stats({ status: 'succeeded', records_read: 3 }),
        },
      },
    ];
    const view = new ProgressView();
    view.sample(live, 0);
    live[0].streams.docs.records_read += 5_000;
    view.sample(live, 1_000);
    const lines = view.render(live, 80);
    expect(lines).toHaveLength(3);
    for (const line of lines) {
      expect([...line].length).toBeLessThanOrEqual(79);
      expect(line).not.toContain('\n');
    }
    expect(lines[0]).toMatch(/^a-conn.*….*\/docs: 1\.2M read · 5,000\/s · 9\.9M chunks · 45,678 embed req · 1M cached$/);
    expect(lines[1]).toMatch(/^a-conn.*….*_long: 5\/10M read · 0\/s · 0 chunks · 0 embed req · 0 cached$/);
    expect(lines[2]).toMatch(/done succeeded: 3 read · 0 chunks/);
  });

  it('the rate is over the last ~10 seconds, not the average since the start; ETA from the estimate', () => {
    const s = stats({ records_estimated: 10_000 });
    const live: LiveConnection[] = [{ name: 'c', localEmbedder: true, streams: { docs: s } }];
    const view = new ProgressView();
    // 60 s fast (100/s), then 20 s slow (10/s).
    for (let t = 0; t <= 60; t++) {
      s.records_read = t * 100;
      view.sample(live, t * 1000);
    }
    for (let t = 61; t <= 80; t++) {
      s.records_read = 6000 + (t - 60) * 10;
      view.sample(live, t * 1000);
    }
    expect(view.rate('c/docs')).toBeCloseTo(10, 0);
    const [line] = view.render(live, 80);
    // 10,000 - 6,200 left at 10/s: 380 s.
    expect(line).toBe('c/docs: 6,200/10,000 read · 10/s · ETA 6:20 · 0 chunks');
    expect(line).not.toMatch(/embed req/);
  });

  it('human log lines keep their key fields, where and hint', () => {
    expect(humanLogLine({ level: 30, time: 1, msg: 'built vector index', stream: 'docs', table: 'public.docs', ms: 20 })).toBe(
      'info: built vector index (stream docs, table public.docs, ms 20)\n',
    );
    expect(
      humanLogLine({ level: 50, msg: 'connection c failed: boom', connection: 'c', err: 'boom', where: 'stream docs', hint: 'retry' }),
    ).toBe('error: connection c failed: boom (connection c)\n  where: stream docs\n  hint: retry\n');
  });
});

describe('sync on a real terminal (a pty of 80 columns, via script(1))', () => {
  const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;
  function inPty(args: string[], cwd: string): Promise<string> {
    const command = `stty cols 80 rows 24; exec ${[process.execPath, BIN, ...args].map((a) => `'${a}'`).join(' ')}`;
    return new Promise((resolve, reject) => {
      const child = spawn('script', ['-qec', command, '/dev/null'], { cwd, env: { ...process.env, SLUICE_LOG_LEVEL: 'info' } });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.on('error', reject);
      child.on('close', () => resolve(out));
    });
  }

  it('progress lines never pass 80 columns; a failure is printed once', async () => {
    const dir = tempDir();
    writeFiles(
      dir,
      Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`docs/document-${i}.md`, `# ${i}\n\n${'text '.repeat(400)}`])),
    );
    const connection = (name: string, path: string) => ({
      name,
      source: { type: 'file', config: { path, stream: 'a_stream_with_a_name_long_enough_to_need_cutting_down' } },
      destination: { type: 'jsonl', config: { path: `./${name}.jsonl` } },
      embedding: { provider: 'hash', dimensions: 16 },
      processing: { chunk_size: 16, chunk_overlap: 0 },
    });
    writeFileSync(
      join(dir, 'p.yaml'),
      stringify({
        version: 1,
        connections: [connection('a-connection-with-a-rather-long-name-indeed', './docs'), connection('broken', './missing')],
      }),
    );
    const out = await inPty(['sync', 'p.yaml'], dir);
    const segments = out.split(/\r|\n/).map((s) => s.replace(ANSI, ''));
    // Progress lines (not log lines or the summary, which may wrap like any output).
    const progress = segments.filter((s) => /^a-conn\S*: [\d.,]+[KMB]?(\/[\d.,]+[KMB]?)? read/.test(s));
    expect(progress.length).toBeGreaterThan(0);
    for (const s of progress) expect([...s].length, s).toBeLessThanOrEqual(79);
    expect(out.match(/path not found/g)).toHaveLength(1);
    expect(out).toMatch(/embedded locally/);
    expect(out).not.toMatch(/embed req/);
  });
});
