// The S3 source against a real S3 wire-protocol server (fauxqs on loopback, see
// test/servers/s3.global.ts), called directly with hand-built catalogs.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { join } from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ConnectorContext, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { documentId } from '../../src/protocol/identity.ts';
import { CDC_DELETED_AT, type AirbyteMessage, type ConfiguredCatalog } from '../../src/protocol/messages.ts';
import { TEST_CREDENTIALS, del, freshBucket, multipartUpload, put, testClient } from '../../test/fixtures/s3.ts';
import source from './index.ts';
import { S3ConfigSchema, type S3Config } from './config.ts';
import { createClient, rangeBuffer } from './client.ts';
import { parseRows } from './formats.ts';

const endpoint = inject('s3Endpoint');
const client = testClient(endpoint);
const dirs: string[] = [];

afterAll(async () => {
  client.destroy();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function config(bucket: string, extra: Record<string, unknown> = {}): S3Config {
  return S3ConfigSchema.parse({ bucket, endpoint, force_path_style: true, ...TEST_CREDENTIALS, ...extra });
}

interface Harness {
  ctx: ConnectorContext;
  warnings: string[];
}
async function harness(): Promise<Harness> {
  const workDir = await mkdtemp(join(tmpdir(), 'sluice-s3-'));
  dirs.push(workDir);
  const warnings: string[] = [];
  const logger = {
    debug() {},
    info() {},
    warn(obj: object | string, msg?: string) {
      warnings.push(typeof obj === 'string' ? obj : `${msg ?? ''} ${JSON.stringify(obj)}`);
    },
    error() {},
  };
  const ctx: ConnectorContext = {
    logger,
    baseDir: workDir,
    signal: new AbortController().signal,
    connection: 'test',
    follow: false,
    workDir,
  };
  return { ctx, warnings };
}

async function catalogFor(
  cfg: S3Config,
  h: Harness,
  mode: 'full_refresh' | 'incremental',
  primaryKey?: string[][],
): Promise<ConfiguredCatalog> {
  const discovered = await source.discover(cfg, h.ctx);
  return {
    streams: discovered.streams.map((stream) => ({
      stream,
      sync_mode: mode,
      destination_sync_mode: 'append_dedup' as const,
      primary_key: primaryKey ?? stream.source_defined_primary_key,
    })),
  };
}

interface Run {
  messages: AirbyteMessage[];
  records: Record<string, unknown>[];
  deletions: Record<string, unknown>[];
  state: SourceState;
}

async function run(cfg: S3Config, catalog: ConfiguredCatalog, h: Harness, state?: SourceState): Promise<Run> {
  const messages: AirbyteMessage[] = [];
  const next: SourceState = { streams: { ...(state?.streams ?? {}) } };
  for await (const m of source.read(cfg, catalog, state, h.ctx)) {
    messages.push(m);
    if (m.type === 'STATE' && m.state.stream) next.streams[m.state.stream.stream_descriptor.name] = m.state.stream.stream_state ?? {};
  }
  const recs = messages.filter((m) => m.type === 'RECORD').map((m) => (m as { record: { data: Record<string, unknown> } }).record.data);
  return {
    messages,
    records: recs.filter((d) => !d[CDC_DELETED_AT]),
    deletions: recs.filter((d) => d[CDC_DELETED_AT]),
    state: next,
  };
}

/** What an append_dedup destination would hold after applying runs in order. */
function applyTo(dest: Map<string, Record<string, unknown>>, r: Run, pk: string[][]) {
  for (const m of r.messages) {
    if (m.type !== 'RECORD') continue;
    const data = (m as { record: { data: Record<string, unknown> } }).record.data;
    const id = documentId(data, pk);
    if (data[CDC_DELETED_AT]) dest.delete(id);
    else dest.set(id, data);
  }
}

/** A full-GC function without needing --expose-gc on the worker's command line. */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

const completes = (r: Run) =>
  r.messages.filter((m) => m.type === 'TRACE' && m.trace.type === 'STREAM_STATUS' && m.trace.stream_status?.status === 'COMPLETE').length;

describe('source-s3', () => {
  it('reads every format: jsonl, csv, json array and object, parquet, text, markdown (plain and gzip)', async () => {
    const bucket = await freshBucket(client, 'formats');
    await put(client, bucket, 'data/a.jsonl', '{"id":1,"title":"one"}\n\n{"id":2,"title":"two"}\n');
    await put(client, bucket, 'data/b.csv', 'id,title\n3,"three, with comma"\n4,four\n');
    await put(
      client,
      bucket,
      'data/c.json',
      JSON.stringify([
        { id: 5, title: 'five', nested: { tags: ['x', ']', '{'] } },
        { id: 6, title: 'six "quoted"' },
      ]),
    );
    await put(client, bucket, 'data/d.json', JSON.stringify({ id: 7, title: 'seven' }));
    const parquet = parquetWriteBuffer({
      columnData: [
        { name: 'id', data: [8n, 9n, 10n], type: 'INT64' },
        { name: 'title', data: ['eight', 'nine', 'ten'], type: 'STRING' },
      ],
      rowGroupSize: 2,
    });
    await put(client, bucket, 'data/e.parquet', new Uint8Array(parquet));
    const { gzipSync } = await import('node:zlib');
    await put(client, bucket, 'data/f.jsonl.gz', gzipSync('{"id":11,"title":"eleven"}\n'));
    await put(client, bucket, 'docs/readme.txt', 'plain text body');
    await put(client, bucket, 'docs/guide.md', '# Guide\n\nSome *markdown*.');
    await put(client, bucket, 'docs/folder/', new Uint8Array(0));
    await put(client, bucket, 'docs/scan.pdf', new Uint8Array([0x25, 0x50, 0x44, 0x46, 0xff, 0xfe]));
    await put(client, bucket, 'docs/LICENSE', 'no extension: text');

    const cfg = config(bucket, {
      streams: [
        { name: 'rows', prefix: 'data/', primary_key: 'id' },
        { name: 'docs', prefix: 'docs/' },
      ],
    });
    const h = await harness();
    const catalog = await catalogFor(cfg, h, 'full_refresh');
    expect(catalog.streams.map((s) => [s.stream.name, s.primary_key])).toEqual([
      ['rows', [['id']]],
      ['docs', [['key']]],
    ]);
    const r = await run(cfg, catalog, h);
    const rows = r.records.filter((d) => '_s3_key' in d);
    const byId = new Map(rows.map((d) => [String(d.id), d]));
    expect([...byId.keys()].sort((a, b) => Number(a) - Number(b))).toEqual(['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11']);
    expect(byId.get('3')).toMatchObject({ title: 'three, with comma', _s3_key: 'data/b.csv', _s3_row: 0 });
    expect(byId.get('5')).toMatchObject({ nested: { tags: ['x', ']', '{'] }, _s3_key: 'data/c.json' });
    expect(byId.get('6')).toMatchObject({ title: 'six "quoted"', _s3_row: 1 });
    expect(byId.get('7')).toMatchObject({ title: 'seven', _s3_key: 'data/d.json' });
    expect(byId.get('9')).toMatchObject({ id: 9, title: 'nine', _s3_key: 'data/e.parquet', _s3_row: 1 });
    expect(byId.get('10')).toMatchObject({ id: 10, title: 'ten', _s3_row: 2 });
    expect(byId.get('11')).toMatchObject({ title: 'eleven', _s3_key: 'data/f.jsonl.gz' });

    const docs = r.records.filter((d) => 'content' in d);
    expect(docs.map((d) => d.key).sort()).toEqual(['docs/LICENSE', 'docs/guide.md', 'docs/readme.txt']);
    expect(h.warnings.join('\n')).toMatch(/format: auto does not read.*docs\/scan\.pdf/s);
    const md = docs.find((d) => d.key === 'docs/guide.md')!;
    expect(md).toMatchObject({ content: '# Guide\n\nSome *markdown*.', size: 25 });
    expect(typeof md.etag).toBe('string');
    expect(Date.parse(String(md.last_modified))).toBeGreaterThan(0);
    expect(completes(r)).toBe(2);
  });

  it('reads parquet one row group at a time through ranged GETs, never the whole file at once', async () => {
    const bucket = await freshBucket(client, 'pq');
    const n = 40_000;
    const parquet = parquetWriteBuffer({
      columnData: [
        { name: 'id', data: Array.from({ length: n }, (_, i) => i), type: 'INT32' },
        // Incompressible text, so the file is several MB and its row groups are real byte ranges.
        { name: 'text', data: Array.from({ length: n }, () => randomBytes(48).toString('hex')), type: 'STRING' },
      ],
      rowGroupSize: 10_000,
    });
    await put(client, bucket, 'big.parquet', new Uint8Array(parquet));
    const cfg = config(bucket);
    const s3 = createClient(cfg);
    const slices: number[] = [];
    const real = rangeBuffer(s3, bucket, 'big.parquet', parquet.byteLength);
    const src = {
      key: 'big.parquet',
      size: parquet.byteLength,
      open: () => Promise.reject(new Error('parquet must not be streamed whole')),
      ranged: () => ({
        byteLength: real.byteLength,
        slice: async (start: number, end?: number) => {
          slices.push((end ?? real.byteLength) - start);
          return real.slice(start, end);
        },
      }),
    };
    let count = 0;
    for await (const row of parseRows('parquet', src, cfg)) {
      expect((row as Record<string, unknown>).id).toBe(count);
      count++;
    }
    s3.destroy();
    expect(count).toBe(n);
    expect(slices.length).toBeGreaterThanOrEqual(4);
    expect(parquet.byteLength).toBeGreaterThan(3_000_000);
    expect(Math.max(...slices)).toBeLessThan(parquet.byteLength / 2);
  });

  it('streams a top-level JSON array element by element; only a single value is bounded', async () => {
    const bucket = await freshBucket(client, 'jsonarr');
    const elements = Array.from({ length: 500 }, (_, i) => ({ id: i, text: `element ${i} with "quotes", [brackets] and {braces}` }));
    await put(client, bucket, 'arr.json', JSON.stringify(elements, null, 1));
    await put(client, bucket, 'one.json', JSON.stringify({ id: 'big', text: 'y'.repeat(4000) }));
    // The array (~40 KB) is far bigger than the limit; each element is far smaller.
    const cfg = config(bucket, { primary_key: 'id', max_json_object_bytes: 1024, globs: ['arr.json'] });
    const h = await harness();
    const r = await run(cfg, await catalogFor(cfg, h, 'full_refresh'), h);
    expect(r.records.map(({ _s3_key, _s3_row, ...rest }) => rest)).toEqual(elements);
    const tooBig = config(bucket, { primary_key: 'id', max_json_object_bytes: 1024, globs: ['one.json'] });
    const err = await run(tooBig, await catalogFor(tooBig, h, 'full_refresh'), h).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).message).toContain('larger than 1024 bytes');
    expect((err as SluiceError).where).toContain('one.json');
  });

  it('an auto stream that starts empty takes the kind of the first objects that arrive', async () => {
    const bucket = await freshBucket(client, 'empty');
    const cfg = config(bucket, { prefix: 'in/' });
    const h = await harness();
    const empty = await run(cfg, await catalogFor(cfg, h, 'incremental'), h);
    expect(empty.records).toEqual([]);
    expect(completes(empty)).toBe(1);
    await put(client, bucket, 'in/a.jsonl', '{"n":1}\n{"n":2}\n');
    const catalog = await catalogFor(cfg, h, 'incremental');
    expect(catalog.streams[0].primary_key).toEqual([['_s3_key'], ['_s3_row']]);
    const next = await run(cfg, catalog, h, empty.state);
    expect(next.records.map((d) => d.n)).toEqual([1, 2]);
    expect(next.state.streams.in).toMatchObject({ family: 'structured' });
  });

  it('with --follow keeps polling: new objects and deletions arrive until the signal aborts', async () => {
    const bucket = await freshBucket(client, 'follow');
    await put(client, bucket, 'f/a.md', 'A');
    const cfg = config(bucket, { prefix: 'f/', poll_interval_seconds: 0.1 });
    const h = await harness();
    const controller = new AbortController();
    const ctx = { ...h.ctx, follow: true, signal: controller.signal };
    const catalog = await catalogFor(cfg, h, 'incremental');
    const seen: string[] = [];
    let completes = 0;
    let lastState: Record<string, unknown> | undefined;
    const reader = (async () => {
      for await (const m of source.read(cfg, catalog, undefined, ctx)) {
        if (m.type === 'RECORD') seen.push(`${m.record.data[CDC_DELETED_AT] ? 'deleted' : 'read'} ${m.record.data.key}`);
        if (m.type === 'TRACE' && m.trace.type === 'STREAM_STATUS') completes++;
        if (m.type === 'STATE') lastState = m.state.stream?.stream_state;
      }
    })();
    const until = async (what: string) => {
      for (let i = 0; i < 600 && !seen.includes(what); i++) await new Promise((r) => setTimeout(r, 50));
      expect(seen).toContain(what);
    };
    await until('read f/a.md');
    await put(client, bucket, 'f/b.md', 'B');
    await until('read f/b.md');
    await del(client, bucket, 'f/a.md');
    await until('deleted f/a.md');
    controller.abort();
    await reader; // ends on abort
    expect(seen.filter((x) => x === 'read f/a.md')).toHaveLength(1); // each poll reads only changes
    expect(completes).toBe(0);
    expect(lastState).toMatchObject({ snapshot_gen: expect.any(Number) });
  });

  it('hands unparseable rows to the engine with the object and line, and reports connection problems with a hint', async () => {
    const bucket = await freshBucket(client, 'bad');
    await put(client, bucket, 'x.jsonl', '{"id":1}\n{"id":2\n[3]\n{"id":4}\n');
    await put(client, bucket, 'y.csv', 'id,t\n5,a\n6,b,extra\n7,c\n');
    const cfg = config(bucket);
    const h = await harness();
    const r = await run(cfg, await catalogFor(cfg, h, 'full_refresh'), h);
    // The rows around the bad ones are read; each bad one comes in its place, with its text.
    const bad = r.messages.flatMap((m) => (m.type === 'TRACE' && m.trace.record_error ? [m.trace.record_error] : []));
    expect(bad).toEqual([
      expect.objectContaining({ position: 'object x.jsonl, line 2', message: expect.stringMatching(/invalid JSON/), raw: '{"id":2' }),
      expect.objectContaining({ position: 'object x.jsonl, line 3', message: expect.stringMatching(/expected a JSON object/), raw: '[3]' }),
      expect.objectContaining({ position: 'object y.csv, line 3', message: expect.stringMatching(/invalid CSV/), raw: '6,b,extra\n' }),
    ]);
    expect(r.records.map((d) => Number(d.id))).toEqual([1, 4, 5, 7]);
    // Rows keep their numbers: the one after the bad row is still row 2 of the object.
    expect(r.records.find((d) => Number(d.id) === 7)?._s3_row).toBe(2);

    expect(await source.check(cfg, h.ctx)).toMatchObject({ ok: true });
    const missing = await source.check(config('no-such-bucket-here'), h.ctx);
    expect(missing.ok).toBe(false);
    expect(missing.message).toMatch(/bucket/i);
    const unreachable = await source.check(config(bucket, { endpoint: 'http://127.0.0.1:9' }), h.ctx);
    expect(unreachable.ok).toBe(false);
    expect(unreachable.message).toContain('endpoint');
    expect(unreachable.message).not.toContain(TEST_CREDENTIALS.secret_access_key);
  });

  it('lists 2,000 objects across pages, in several bounded passes, then reads only what changed', { timeout: 180_000 }, async () => {
    const bucket = await freshBucket(client, 'many');
    const keys = Array.from({ length: 2000 }, (_, i) => `notes/n-${String(i).padStart(5, '0')}.txt`);
    for (let i = 0; i < keys.length; i += 100) await Promise.all(keys.slice(i, i + 100).map((k) => put(client, bucket, k, `body of ${k}`)));
    // 100 keys a page → 20 ListObjectsV2 pages; 700 pending objects a pass → 3 passes.
    const cfg = config(bucket, { prefix: 'notes/', page_size: 100, max_pending_objects: 700 });
    const h = await harness();
    const catalog = await catalogFor(cfg, h, 'incremental');
    expect(catalog.streams[0].stream.name).toBe('notes');
    const first = await run(cfg, catalog, h);
    expect(first.records.length).toBe(2000);
    expect(new Set(first.records.map((d) => d.key))).toEqual(new Set(keys));
    expect(first.records.find((d) => d.key === keys[1234])?.content).toBe(`body of ${keys[1234]}`);
    expect(completes(first)).toBe(1);
    // Cursor order: each STATE covers everything before it.
    const states = first.messages.filter((m) => m.type === 'STATE');
    expect(states.length).toBeGreaterThan(1);

    // Nothing changed: nothing read.
    const again = await run(cfg, catalog, h, first.state);
    expect(again.records).toEqual([]);
    expect(again.deletions).toEqual([]);

    await put(client, bucket, keys[10], 'changed body');
    await put(client, bucket, 'notes/new.txt', 'a new note');
    await put(client, bucket, 'elsewhere/ignored.txt', 'outside the prefix');
    const third = await run(cfg, catalog, h, again.state);
    expect(third.records.map((d) => [d.key, d.content]).sort()).toEqual([
      [keys[10], 'changed body'],
      ['notes/new.txt', 'a new note'],
    ]);
    expect(completes(third)).toBe(1);
  });

  it('reads an object that shows up late (LastModified before the cursor) because the listing diff sees it', async () => {
    const bucket = await freshBucket(client, 'late');
    await put(client, bucket, 'a.txt', 'a');
    const cfg = config(bucket);
    const h = await harness();
    const catalog = await catalogFor(cfg, h, 'incremental');
    const first = await run(cfg, catalog, h);
    expect(first.records.map((d) => d.key)).toEqual(['a.txt']);
    // As if a multipart upload started before the last run completed after it: pretend the cursor
    // is in the future, so the new object's LastModified is older than the cursor.
    const future = { last_modified: '2999-01-01T00:00:00.000Z', key: 'zzz' };
    expect(first.state.streams[bucket]).toMatchObject({ snapshot_cursor: first.state.streams[bucket].cursor });
    const state: SourceState = { streams: { [bucket]: { ...first.state.streams[bucket], cursor: future, snapshot_cursor: future } } };
    await put(client, bucket, 'b.txt', 'b');
    const second = await run(cfg, catalog, h, state);
    expect(second.records.map((d) => d.key)).toEqual(['b.txt']);
    const third = await run(cfg, catalog, h, second.state);
    expect(third.records).toEqual([]);
  });

  it('turns deleted objects and vanished rows into deletions, in incremental and full refresh', async () => {
    const bucket = await freshBucket(client, 'deletes');
    await put(client, bucket, 'docs/a.md', 'A');
    await put(client, bucket, 'docs/b.md', 'B');
    await put(client, bucket, 'rows/r1.jsonl', '{"id":"x1"}\n{"id":"x2"}\n{"id":"x3"}\n');
    await put(client, bucket, 'rows/r2.jsonl', '{"id":"y1"}\n{"id":"y2"}\n');
    await put(client, bucket, 'lines/l1.jsonl', '{"v":1}\n{"v":2}\n{"v":3}\n');
    const cfg = config(bucket, {
      streams: [
        { name: 'docs', prefix: 'docs/' },
        { name: 'keyed', prefix: 'rows/', primary_key: 'id' },
        { name: 'lines', prefix: 'lines/' },
      ],
    });
    const h = await harness();
    const catalog = await catalogFor(cfg, h, 'incremental');
    const pkOf = (name: string) => catalog.streams.find((s) => s.stream.name === name)!.primary_key!;
    expect(pkOf('lines')).toEqual([['_s3_key'], ['_s3_row']]);
    const dest = new Map<string, Map<string, Record<string, unknown>>>([
      ['docs', new Map()],
      ['keyed', new Map()],
      ['lines', new Map()],
    ]);
    const apply = (r: Run) => {
      for (const name of dest.keys()) {
        const only = { ...r, messages: r.messages.filter((m) => m.type === 'RECORD' && m.record.stream === name) };
        applyTo(dest.get(name)!, only, pkOf(name));
      }
    };
    const first = await run(cfg, catalog, h);
    apply(first);
    expect(dest.get('docs')!.size).toBe(2);
    expect(dest.get('keyed')!.size).toBe(5);
    expect(dest.get('lines')!.size).toBe(3);

    await del(client, bucket, 'docs/a.md');
    await del(client, bucket, 'rows/r2.jsonl');
    await put(client, bucket, 'rows/r1.jsonl', '{"id":"x1","v":2}\n{"id":"x3"}\n'); // x2 vanished
    await put(client, bucket, 'lines/l1.jsonl', '{"v":10}\n'); // rows 1 and 2 vanished
    const second = await run(cfg, catalog, h, first.state);
    apply(second);
    expect(second.deletions.filter((d) => 'key' in d).map((d) => d.key)).toEqual(['docs/a.md']);
    expect([...dest.get('docs')!.keys()]).toEqual(['docs/b.md']);
    expect([...dest.get('keyed')!.keys()].sort()).toEqual(['x1', 'x3']);
    expect(dest.get('keyed')!.get('x1')).toMatchObject({ v: 2 });
    expect([...dest.get('lines')!.values()].map((d) => d.v)).toEqual([10]);

    // Full refresh still reports objects deleted since the last run (append_dedup drops them).
    await del(client, bucket, 'docs/b.md');
    await del(client, bucket, 'lines/l1.jsonl');
    const full = await run(cfg, await catalogFor(cfg, h, 'full_refresh'), h, second.state);
    apply(full);
    expect(full.deletions.filter((d) => 'key' in d).map((d) => d.key)).toEqual(['docs/b.md']);
    expect(dest.get('docs')!.size).toBe(0);
    expect(dest.get('lines')!.size).toBe(0);
    expect([...dest.get('keyed')!.keys()].sort()).toEqual(['x1', 'x3']);
    // Replaying a run (crash before its state was committed) yields the same deletions again.
    const replay = await run(cfg, await catalogFor(cfg, h, 'full_refresh'), h, second.state);
    expect(replay.deletions.length).toBe(full.deletions.length);
  });

  it('after a run interrupted at a mid-run state, the re-run resumes and deletes what the interrupted run emitted', async () => {
    const bucket = await freshBucket(client, 'crash');
    const keys = Array.from({ length: 250 }, (_, i) => `k/${String(i).padStart(3, '0')}.txt`);
    for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => put(client, bucket, k, k)));
    const cfg = config(bucket, { prefix: 'k/' });
    const h = await harness();
    const catalog = await catalogFor(cfg, h, 'incremental');
    // The "crash": stop consuming at the first checkpoint, which is all the engine committed.
    const emitted: string[] = [];
    let checkpoint: Record<string, unknown> | undefined;
    for await (const m of source.read(cfg, catalog, undefined, h.ctx)) {
      if (m.type === 'RECORD') emitted.push(m.record.data.key as string);
      if (m.type === 'STATE') {
        checkpoint = m.state.stream!.stream_state;
        break;
      }
    }
    expect(emitted.length).toBeGreaterThan(0);
    expect(emitted.length).toBeLessThan(250);
    expect(checkpoint).toMatchObject({ partial_gens: [1] });
    expect(checkpoint).not.toHaveProperty('snapshot_gen');

    await del(client, bucket, emitted[0]); // emitted before the crash: must be deleted downstream
    await del(client, bucket, keys[249]); // never emitted, but listed: its deletion is a no-op downstream
    const resumed = await run(cfg, catalog, h, { streams: { k: checkpoint! } });
    expect(resumed.deletions.map((d) => d.key)).toEqual([emitted[0], keys[249]]);
    const reread = resumed.records.map((d) => d.key as string);
    expect(reread.filter((k) => emitted.includes(k))).toEqual([]); // no repeats
    expect(new Set([...emitted.slice(1), ...reread])).toEqual(new Set(keys.filter((k) => k !== emitted[0] && k !== keys[249])));
    expect(resumed.state.streams.k).toMatchObject({ snapshot_gen: expect.any(Number) });
    expect(resumed.state.streams.k).not.toHaveProperty('partial_gens');

    const after = await run(cfg, catalog, h, resumed.state);
    expect(after.records).toEqual([]);
    expect(after.deletions).toEqual([]);
  });

  it('deletes what a run emitted even if it died before any state was saved', async () => {
    const bucket = await freshBucket(client, 'nostate');
    const keys = Array.from({ length: 20 }, (_, i) => `d/${String(i).padStart(2, '0')}.md`);
    await Promise.all(keys.map((k) => put(client, bucket, k, k)));
    const cfg = config(bucket, { prefix: 'd/' });
    const h = await harness();
    const catalog = await catalogFor(cfg, h, 'incremental');
    const emitted: string[] = [];
    for await (const m of source.read(cfg, catalog, undefined, h.ctx)) {
      if (m.type === 'RECORD') emitted.push(m.record.data.key as string);
      // The destination may have committed these, but no state was saved (any STATE is dropped).
      if (emitted.length === 3) break;
    }
    await del(client, bucket, emitted[1]);
    const rerun = await run(cfg, catalog, h, undefined);
    expect(rerun.deletions.map((d) => d.key)).toEqual([emitted[1]]);
    expect(rerun.records.map((d) => d.key).sort()).toEqual(keys.filter((k) => k !== emitted[1]));
  });

  it('streams a 200 MB JSON Lines object with flat memory', { timeout: 180_000 }, async () => {
    const bucket = await freshBucket(client, 'big');
    const partBytes = 10 * 1024 * 1024; // fauxqs accepts bodies up to 11 MiB
    const parts = 20;
    const filler = 'x'.repeat(900);
    let nextId = 0;
    const makePart = (i: number) => {
      if (i >= parts) return undefined;
      const lines: string[] = [];
      let size = 0;
      while (size < partBytes) {
        const line = `{"id":${nextId++},"text":"${filler}"}\n`;
        lines.push(line);
        size += line.length;
      }
      return Buffer.from(lines.join(''));
    };
    const total = await multipartUpload(client, bucket, 'big/huge.jsonl', makePart);
    expect(total).toBeGreaterThan(200 * 1024 * 1024);
    const cfg = config(bucket, { prefix: 'big/' });
    const h = await harness();
    const catalog = await catalogFor(cfg, h, 'incremental');

    // Live memory after a full GC, sampled through the read: it must not follow the data.
    const gc = exposeGc();
    const live = () => {
      gc();
      const m = process.memoryUsage();
      return { heap: m.heapUsed, buffers: m.arrayBuffers, rss: m.rss };
    };
    const baseline = live();
    const samples: ReturnType<typeof live>[] = [];
    let count = 0;
    let lastId = -1;
    const started = Date.now();
    for await (const m of source.read(cfg, catalog, undefined, h.ctx)) {
      if (m.type !== 'RECORD') continue;
      const id = m.record.data.id as number;
      if (id !== lastId + 1) throw new Error(`row ${id} out of order after ${lastId}`);
      lastId = id;
      if (++count % 20_000 === 0) samples.push(live());
    }
    const seconds = (Date.now() - started) / 1000;
    await del(client, bucket, 'big/huge.jsonl'); // frees the server's copy for the rest of the run
    expect(count).toBe(nextId);
    expect(samples.length).toBeGreaterThanOrEqual(10);
    const mb = (n: number) => Math.round(n / 1024 / 1024);
    const growth = {
      heap: mb(Math.max(...samples.map((s) => s.heap)) - baseline.heap),
      buffers: mb(Math.max(...samples.map((s) => s.buffers)) - baseline.buffers),
      rss: mb(Math.max(...samples.map((s) => s.rss)) - baseline.rss),
    };
    console.log(`read ${mb(total)} MB, ${count} rows in ${seconds.toFixed(1)} s; peak growth over baseline (MB):`, growth);
    // The object is 200+ MB: holding it, or its rows, would add hundreds of MB.
    expect(growth.heap).toBeLessThan(16);
    expect(growth.buffers).toBeLessThan(16);
    expect(growth.rss).toBeLessThan(100);
    // Flat, not merely small: the last samples are no bigger than the first ones.
    const early = Math.max(...samples.slice(0, 3).map((s) => s.heap));
    const late = Math.max(...samples.slice(-3).map((s) => s.heap));
    expect(mb(late - early)).toBeLessThan(8);
  });
});
