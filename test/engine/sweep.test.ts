// The end-of-read sweep (src/engine/sweep.ts) on its own: a destination whose documents() is a list
// in memory, so what the stage deletes, refuses and when it lists can be checked exactly — with
// its marks in memory and spilled to the scratch LMDB database.
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { sweepStage, type SweepOptions } from '../../src/engine/sweep.ts';
import { asBatches, eachOf } from '../../src/engine/flow.ts';
import type { DestinationMessage, DocumentFingerprint, StoredDocument } from '../../src/protocol/connector.ts';
import { UnchangedStage, listedFingerprint } from '../../src/engine/unchanged.ts';
import { testContext } from '../../src/testing/context.ts';

interface Fake {
  stored: string[];
  /** Listed with these fingerprints (the others without one). */
  fingerprints?: Record<string, DocumentFingerprint>;
  /** Set once the listing has given every document. */
  listed?: boolean;
  /** How far into the read (messages passed through) the listing was asked for. */
  listedAt?: number;
  passed: number;
  failListing?: Error;
  /** The listing waits for it before its first document. */
  gate?: Promise<void>;
  /** Also offer documentBatches(), in arrays of this many (documents() then fails the test if used). */
  batches?: number;
}

function options(fake: Fake, extra: Partial<SweepOptions> & { maxDeleteShare?: number } = {}) {
  const ctx = testContext();
  const stats = { docs: { records_deleted: 0, records_failed: 0 } };
  const opts: SweepOptions = {
    conn: {
      config: { name: 'c', destination: { type: 'fake' }, processing: { max_delete_share: extra.maxDeleteShare ?? 0.5 } },
      destination: {
        async *documents(): AsyncGenerator<StoredDocument> {
          if (fake.batches) throw new Error('documents() used although documentBatches() is there');
          fake.listedAt ??= fake.passed;
          await fake.gate;
          for (const id of fake.stored) {
            await new Promise((r) => setImmediate(r));
            if (fake.failListing) throw fake.failListing;
            const fingerprint = fake.fingerprints?.[id];
            yield { documentId: id, chunks: 1, ...(fingerprint ? { fingerprint } : {}) };
          }
          fake.listed = true;
        },
        ...(fake.batches
          ? {
              async *documentBatches(): AsyncGenerator<StoredDocument[]> {
                fake.listedAt ??= fake.passed;
                await fake.gate;
                for (let i = 0; i < fake.stored.length; i += fake.batches!) {
                  await new Promise((r) => setImmediate(r));
                  if (fake.failListing) throw fake.failListing;
                  yield fake.stored.slice(i, i + fake.batches!).map((id) => {
                    const fingerprint = fake.fingerprints?.[id];
                    return { documentId: id, chunks: 1, ...(fingerprint ? { fingerprint } : {}) };
                  });
                }
                fake.listed = true;
              },
            }
          : {}),
      },
      destinationConfig: {},
      index: 0,
    } as unknown as SweepOptions['conn'],
    ctx,
    catalog: {
      streams: [
        {
          stream: { name: 'docs', json_schema: {} },
          sync_mode: 'full_refresh',
          destination_sync_mode: 'append_dedup',
        },
      ],
    } as unknown as SweepOptions['catalog'],
    stats,
    signal: ctx.signal,
    logger: ctx.logger,
    sharded: false,
    listWhileReading: true,
    ...extra,
  };
  return { opts, stats, ctx };
}

async function run(fake: Fake, read: DestinationMessage[], opts: SweepOptions): Promise<DestinationMessage[]> {
  async function* input() {
    for (const m of read) {
      await new Promise((r) => setImmediate(r));
      yield m;
    }
  }
  const out: DestinationMessage[] = [];
  for await (const m of eachOf(sweepStage(asBatches(input()), opts))) {
    fake.passed++;
    out.push(m);
  }
  return out;
}

const doc = (id: string): DestinationMessage => ({ type: 'DOCUMENT', stream: 'docs', documentId: id, chunks: [], record: {} });
const deletes = (out: DestinationMessage[]) => out.filter((m) => m.type === 'DELETE').map((m) => (m as { documentId: string }).documentId);

// Ids that are keys as they are, and ids that are hashed (too long for a key; a lone surrogate).
const LONG = 'x'.repeat(5000);
const ODD = 'lone \uD800 surrogate';
const ODD_TOO = 'lone \uFFFD surrogate'; // what ODD would be stored as, were it not hashed

describe.each([
  ['in memory', undefined],
  ['spilled to the scratch database', 2],
])('sweep stage, marks %s', (_, inMemoryKeys) => {
  it('deletes exactly the stored documents the complete read did not produce, once, before STREAM_COMPLETE', async () => {
    const fake: Fake = { stored: ['a', 'b', 'c', 'd', 'e', 'f', LONG, ODD, ODD_TOO, 'gone-1', 'gone-2'], passed: 0 };
    const { opts, stats } = options(fake, { inMemoryKeys });
    const read = [
      doc('a'),
      doc('b'),
      { type: 'DELETE', stream: 'docs', documentId: 'c' } as DestinationMessage,
      doc('d'),
      doc('e'),
      doc('f'),
      doc(LONG),
      doc(ODD),
      doc('new'),
      { type: 'STREAM_COMPLETE', stream: 'docs' } as DestinationMessage,
    ];
    const out = await run(fake, read, opts);
    // Everything read passes through; the sweep's DELETEs come after it, right before the completion.
    expect(out.slice(0, read.length - 1)).toEqual(read.slice(0, -1));
    expect(deletes(out.slice(read.length - 1, -1)).sort()).toEqual(['gone-1', 'gone-2', ODD_TOO].sort());
    expect(out.length).toBe(read.length + 3);
    expect(out.at(-1)).toEqual({ type: 'STREAM_COMPLETE', stream: 'docs' });
    expect(stats.docs.records_deleted).toBe(3);
    // Listed while the stream was read (from its first document), not after it.
    expect(fake.listedAt).toBe(0);
    // The scratch database is gone.
    expect(readdirSync(opts.ctx.workDir).filter((f) => f.startsWith('sweep-'))).toEqual([]);
  });

  it("without listWhileReading (the dry run), lists at the stream's completion, with the same answer", async () => {
    const fake: Fake = { stored: ['a', 'b', 'gone'], passed: 0 };
    const { opts } = options(fake, { inMemoryKeys, listWhileReading: false });
    const out = await run(fake, [doc('a'), doc('b'), { type: 'STREAM_COMPLETE', stream: 'docs' }], opts);
    expect(fake.listedAt).toBe(2);
    expect(deletes(out)).toEqual(['gone']);
  });

  it('annotate: once the listing is complete, the first occurrence of each document carries its listed fingerprint', async () => {
    const fa = { content: 'ca', metadata: 'ma' };
    const fb = { content: 'cb', metadata: 'mb', embedder: 'hash/hash/8' };
    const fLong = { content: 'clong', metadata: 'ma' };
    const fake: Fake = { stored: ['a', 'b', 'c', LONG, ODD, 'gone'], fingerprints: { a: fa, b: fb, [LONG]: fLong, [ODD]: fa }, passed: 0 };
    // listingWaitMs 0: the first document does not wait for the listing (see the next test).
    const { opts } = options(fake, { inMemoryKeys, annotate: true, listingWaitMs: 0 });
    const early = doc('a');
    const later = [doc('b'), doc('c'), doc('a'), doc('new'), doc(LONG), doc(ODD), doc(ODD_TOO), doc('b')];
    async function* input(): AsyncGenerator<DestinationMessage> {
      yield early; // before the listing has started: looked up as before
      while (!fake.listed) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r)); // the listing's completion is seen
      yield* later;
      yield { type: 'STREAM_COMPLETE', stream: 'docs' };
    }
    const out: DestinationMessage[] = [];
    for await (const m of eachOf(sweepStage(asBatches(input()), opts))) out.push(m);
    const listed = (m: DestinationMessage) => (m.type === 'DOCUMENT' ? listedFingerprint(m) : 'n/a');
    expect(listed(early)).toBeUndefined();
    expect(later.map(listed)).toEqual([
      fb, // listed with its fingerprint
      null, // listed without one
      undefined, // 'a' again: its first occurrence came before the listing, so this one may follow this run's write of it
      null, // not listed: not stored
      fLong,
      fa,
      null, // an id that only looks like ODD once stored as UTF-8 is another document
      undefined, // 'b' again: not its first occurrence
    ]);
    expect(deletes(out)).toEqual(['gone']);
  });

  it("annotate: a stream's first document waits for the stream's listing (at most listingWaitMs), so none needs a look-up", async () => {
    const fa = { content: 'ca', metadata: 'm' };
    const slowListing = async (listingWaitMs: number | undefined, gateMs: number) => {
      const fake: Fake = {
        stored: ['a', 'b', 'gone'],
        fingerprints: { a: fa, b: fa },
        passed: 0,
        gate: new Promise((r) => setTimeout(r, gateMs)),
      };
      const { opts } = options(fake, { inMemoryKeys, annotate: true, listingWaitMs });
      const read = [doc('a'), doc('b'), doc('new')];
      let listedWhenRead: boolean | undefined;
      async function* input(): AsyncGenerator<DestinationMessage> {
        yield* read;
        yield { type: 'STREAM_COMPLETE', stream: 'docs' };
      }
      const out: DestinationMessage[] = [];
      for await (const m of eachOf(sweepStage(asBatches(input()), opts))) {
        listedWhenRead ??= fake.listed === true;
        out.push(m);
      }
      return { listedWhenRead, listed: read.map((m) => (m.type === 'DOCUMENT' ? listedFingerprint(m) : 'n/a')), out };
    };
    // The default wait covers a listing that takes 200 ms: every document carries its answer.
    const waited = await slowListing(undefined, 200);
    expect(waited.listedWhenRead).toBe(true);
    expect(waited.listed).toEqual([fa, fa, null]);
    expect(deletes(waited.out)).toEqual(['gone']);
    // A listing slower than the wait: the read goes on without it (looked up as before), and the sweep is the same.
    const started = Date.now();
    const impatient = await slowListing(50, 1_000);
    expect(impatient.listedWhenRead).toBe(false);
    expect(impatient.listed).toEqual([undefined, undefined, undefined]);
    expect(deletes(impatient.out)).toEqual(['gone']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000); // the sweep itself still waits for the whole listing
  });

  it('annotate: a document whose own fingerprint equals the listed one carries that object itself; any difference carries the listed value', async () => {
    const common = { content: 'c1', metadata: 'm', embedder: 'hash/hash/8' };
    const odd = { content: 'c4', metadata: 'other', embedder: 'hash/hash/8' };
    const fake: Fake = {
      stored: ['d1', 'd2', 'd3', 'd4', 'd5', 'd6'],
      fingerprints: {
        d1: common, // the first listed: its metadata and embedder are the stream's common ones
        d2: { ...common, content: 'c2' },
        d3: { ...common, content: 'c3' },
        d4: odd,
        d5: { ...common, content: 'c5' },
        d6: { ...common, content: 'c6' },
      },
      passed: 0,
      batches: 2,
    };
    const { opts } = options(fake, { inMemoryKeys, annotate: true });
    const withOwn = (id: string, fingerprint: DocumentFingerprint): DestinationMessage =>
      ({ ...doc(id), fingerprint }) as DestinationMessage;
    const read = [
      withOwn('d1', { ...common }), // equal (another object)
      withOwn('d2', { ...common, content: 'changed' }), // other content
      withOwn('d3', { ...common, content: 'c3', metadata: 'new' }), // other metadata
      withOwn('d4', { ...odd }), // equal, stored with uncommon metadata
      withOwn('d5', { content: 'c5', metadata: 'm', embedder: 'openai/x/8' }), // other embedder
      withOwn('d6', { content: 'c6', metadata: 'm' }), // no embedder
    ];
    async function* input(): AsyncGenerator<DestinationMessage> {
      while (!fake.listed) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r)); // the listing's completion is seen
      yield* read;
      yield { type: 'STREAM_COMPLETE', stream: 'docs' };
    }
    for await (const _ of eachOf(sweepStage(asBatches(input()), opts)));
    const listed = read.map((m) => (m.type === 'DOCUMENT' ? listedFingerprint(m) : 'n/a'));
    expect(listed).toEqual(fake.stored.map((id) => fake.fingerprints![id]));
    const own = (i: number) => (read[i] as { fingerprint?: DocumentFingerprint }).fingerprint;
    // In memory, an unchanged document gets no copy; on disk the listed value is read back.
    if (!inMemoryKeys) expect(listed[0]).toBe(own(0));
    for (const i of [1, 2, 4, 5]) expect(listed[i]).not.toBe(own(i));
  });

  it('lists ahead: from the start, one swept stream after the other in catalog order', async () => {
    const events: string[] = [];
    const fake: Fake = { stored: [], passed: 0 };
    const { opts } = options(fake, { inMemoryKeys, maxDeleteShare: 1 });
    const stream = (name: string, mode = 'append_dedup') => ({
      stream: { name, json_schema: {} },
      sync_mode: 'full_refresh',
      destination_sync_mode: mode,
    });
    opts.catalog = {
      streams: [stream('one'), stream('skipped', 'append'), stream('two'), stream('three')],
    } as unknown as SweepOptions['catalog'];
    opts.stats = { one: { records_deleted: 0 }, two: { records_deleted: 0 }, three: { records_deleted: 0 } };
    opts.conn = {
      ...opts.conn,
      destination: {
        async *documents(_c: unknown, _ctx: unknown, name: string): AsyncGenerator<StoredDocument> {
          events.push(`list ${name}`);
          for (let i = 0; i < 3; i++) {
            await new Promise((r) => setTimeout(r, 20));
            yield { documentId: `${name}-${i}`, chunks: 1 };
          }
          events.push(`listed ${name}`);
        },
      },
    } as unknown as SweepOptions['conn'];
    async function* input(): AsyncGenerator<DestinationMessage> {
      events.push('read starts');
      await new Promise((r) => setTimeout(r, 30)); // while 'one' is being listed
      // 'three' is read first: listed at once, without waiting for 'two'.
      yield { type: 'DOCUMENT', stream: 'three', documentId: 'three-0', chunks: [], record: {} };
      for (const name of ['one', 'two', 'three']) yield { type: 'STREAM_COMPLETE', stream: name };
    }
    const out: DestinationMessage[] = [];
    for await (const m of eachOf(sweepStage(asBatches(input()), opts))) out.push(m);
    expect(events.slice(0, 2)).toEqual(['list one', 'read starts']);
    expect(events.indexOf('list two')).toBeGreaterThan(events.indexOf('listed one'));
    expect(events.indexOf('list three')).toBeLessThan(events.indexOf('listed one'));
    expect(events.filter((e) => e.startsWith('list '))).toHaveLength(3); // each stream once; 'skipped' is not swept
    expect(deletes(out).sort()).toEqual(['one-0', 'one-1', 'one-2', 'three-1', 'three-2', 'two-0', 'two-1', 'two-2']);
  });

  it('without annotate, no document carries a listed fingerprint', async () => {
    const fake: Fake = { stored: ['a', 'b'], fingerprints: { a: { content: 'c', metadata: 'm' } }, passed: 0 };
    const { opts } = options(fake, { inMemoryKeys });
    async function* input(): AsyncGenerator<DestinationMessage> {
      yield doc('b');
      while (!fake.listed) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      yield doc('a');
      yield { type: 'STREAM_COMPLETE', stream: 'docs' };
    }
    const out: DestinationMessage[] = [];
    for await (const m of eachOf(sweepStage(asBatches(input()), opts))) out.push(m);
    expect(
      out.filter((m) => m.type === 'DOCUMENT').map((m) => listedFingerprint(m as Extract<DestinationMessage, { type: 'DOCUMENT' }>)),
    ).toEqual([undefined, undefined]);
  });

  it('dropUnchanged: documents dropped in the sweep leave the same output and counts as the unchanged stage deciding them all', async () => {
    // A read with unchanged, changed (content, metadata), repeated, deleted and new documents and
    // checkpoints between them, through the sweep and the unchanged stage, with and without the drop.
    const pass = async (seed: number, drop: boolean) => {
      let x = seed;
      const next = (n: number) => (x = (Math.imul(x ^ (x >>> 15), 2246822519) + 3266489917) >>> 0) % n;
      const stored = Array.from({ length: 30 }, (_, i) => `d${i}`);
      const fingerprints: Record<string, DocumentFingerprint> = {};
      for (const id of stored)
        if (next(8)) fingerprints[id] = { content: `c-${id}`, metadata: next(5) ? 'm' : 'rare', embedder: 'hash/hash/8' };
      const fake: Fake = { stored, fingerprints, passed: 0, batches: 7 };
      const { opts, stats: sweepStats } = options(fake, { inMemoryKeys, annotate: true, maxDeleteShare: 1 });
      const stats = sweepStats as typeof sweepStats & { docs: { records_unchanged?: number; records_metadata_updated?: number } };
      const unchanged = new UnchangedStage({
        writer: {
          fingerprints: async (_s, ids) => new Map(ids.flatMap((id) => (fingerprints[id] ? [[id, fingerprints[id]] as const] : []))),
        },
        modes: new Map([['docs', 'append_dedup' as const]]),
        stats,
        where: 'test',
      });
      let dropped = 0;
      if (drop)
        opts.dropUnchanged = (m, listed) => {
          const yes = unchanged.dropListedUnchanged(m, listed);
          if (yes) dropped++;
          return yes;
        };
      const read: DestinationMessage[] = [];
      for (let i = 0; i < 90; i++) {
        const id = `d${next(40)}`;
        const kind = next(10);
        const own = fingerprints[id] ?? { content: `c-${id}`, metadata: 'm', embedder: 'hash/hash/8' };
        if (kind === 0) read.push({ type: 'DELETE', stream: 'docs', documentId: id });
        else if (kind === 1) read.push({ type: 'STATE', state: { type: 'LEGACY', data: { i } }, connection: { streams: {} } });
        else {
          const fingerprint = kind === 2 ? { ...own, content: `new-${i}` } : kind === 3 ? { ...own, metadata: `m${i}` } : { ...own };
          read.push({ ...doc(id), fingerprint } as DestinationMessage);
        }
      }
      read.push({ type: 'STREAM_COMPLETE', stream: 'docs' });
      async function* input(): AsyncGenerator<DestinationMessage[]> {
        for (let i = 0, n = 0; i < read.length; i += n) yield read.slice(i, i + (n = 1 + next(9)));
      }
      const out: string[] = [];
      for await (const m of unchanged.runBatches(sweepStage(input(), opts)))
        out.push(
          m.type === 'STATE'
            ? 'STATE'
            : `${m.type} ${(m as { documentId?: string }).documentId ?? ''}${m.type === 'DOCUMENT' && m.metadataOnly ? ' metadata' : ''}`,
        );
      return { out, stats: { ...stats.docs }, dropped };
    };
    let dropped = 0;
    for (let seed = 1; seed <= 25; seed++) {
      const [all, early] = [await pass(seed, false), await pass(seed, true)];
      expect(early.out).toEqual(all.out);
      expect(early.stats).toEqual(all.stats);
      // In memory the unchanged ones are dropped early; on disk too (the listed value read back is equal).
      expect(early.dropped).toBeGreaterThan(0);
      expect(early.dropped).toBeLessThanOrEqual(all.stats.records_unchanged!);
      dropped += early.dropped;
    }
    expect(dropped).toBeGreaterThan(100);
  });

  it('refuses (and deletes nothing) past max_delete_share of the stored documents', async () => {
    const fake: Fake = { stored: ['a', 'b', 'c', 'd', 'e'], passed: 0 };
    const { opts } = options(fake, { inMemoryKeys });
    const err = await run(fake, [doc('a'), doc('b'), { type: 'STREAM_COMPLETE', stream: 'docs' }], opts).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain('no longer has 3 of the 5 stored documents (60%)');
    const ok = options({ ...fake, passed: 0 }, { inMemoryKeys, maxDeleteShare: 0.6 });
    const out = await run(fake, [doc('a'), doc('b'), { type: 'STREAM_COMPLETE', stream: 'docs' }], ok.opts);
    expect(deletes(out).sort()).toEqual(['c', 'd', 'e']);
  });

  it('a read that ends without STREAM_COMPLETE deletes nothing; a failed listing fails the stream naming it', async () => {
    const fake: Fake = { stored: ['a', 'b', 'c'], passed: 0 };
    const { opts } = options(fake, { inMemoryKeys });
    expect(deletes(await run(fake, [doc('a')], opts))).toEqual([]);

    const broken: Fake = { stored: ['a', 'b', 'c'], passed: 0, failListing: new Error('connection reset') };
    const b = options(broken, { inMemoryKeys });
    const err = await run(broken, [doc('a'), { type: 'STREAM_COMPLETE', stream: 'docs' }], b.opts).catch((e: Error) => e);
    expect((err as Error).message).toContain('connection reset');
    expect((err as { where?: string }).where).toContain('listing stored documents');
  });
});

describe('sweep stage: the listing in arrays, and counting what was listed and marked', () => {
  it('uses documentBatches() when the destination has it: the same deletions, fingerprints and errors', async () => {
    const fa = { content: 'ca', metadata: 'ma' };
    const fb = { content: 'cb', metadata: 'mb', embedder: 'hash/hash/8' };
    for (const inMemoryKeys of [undefined, 2]) {
      const fake: Fake = { stored: ['a', 'b', 'c', 'd', 'gone'], fingerprints: { a: fa, b: fb }, passed: 0, batches: 2 };
      const { opts, stats } = options(fake, { inMemoryKeys, annotate: true });
      const read = [doc('a'), doc('b'), doc('c'), doc('d'), doc('new')];
      async function* input(): AsyncGenerator<DestinationMessage> {
        while (!fake.listed) await new Promise((r) => setImmediate(r));
        await new Promise((r) => setImmediate(r));
        yield* read;
        yield { type: 'STREAM_COMPLETE', stream: 'docs' };
      }
      const out: DestinationMessage[] = [];
      for await (const m of eachOf(sweepStage(asBatches(input()), opts))) out.push(m);
      expect(deletes(out)).toEqual(['gone']);
      expect(stats.docs.records_deleted).toBe(1);
      expect(read.map((m) => listedFingerprint(m as Extract<DestinationMessage, { type: 'DOCUMENT' }>))).toEqual([
        fa,
        fb,
        null,
        null,
        null,
      ]);

      const broken: Fake = { stored: ['a', 'b', 'c'], passed: 0, batches: 2, failListing: new Error('connection reset') };
      const b = options(broken, { inMemoryKeys });
      const err = await run(broken, [doc('a'), { type: 'STREAM_COMPLETE', stream: 'docs' }], b.opts).catch((e: Error) => e);
      expect((err as Error).message).toContain('connection reset');
      expect((err as { where?: string }).where).toContain('listing stored documents');
    }
  });

  // Whatever the order of marks and listing, duplicates on either side, DELETE marks, documents this
  // run wrote that were not listed, and a map that moves to disk before, while or after the marks
  // arrive: the sweep deletes exactly the listed ids the read did not produce (and, when there are
  // none, nothing: the count lets it skip the walk, so a miscount would show as a missed deletion).
  const stored = ['a', 'b', 'c', 'b', 'd', 'e', 'f', 'g', 'h', LONG, ODD, 'gone-1', 'gone-2'];
  const reads: Record<string, DestinationMessage[]> = {
    'some gone': [
      doc('a'),
      doc('b'),
      doc('a'),
      { type: 'DELETE', stream: 'docs', documentId: 'c' },
      doc('d'),
      doc('new-1'),
      doc('e'),
      doc('f'),
      doc('new-1'),
      doc('g'),
      doc('h'),
      doc(LONG),
      doc(ODD_TOO),
      doc('new-2'),
      doc('h'),
    ],
    // One unmarked: a single miscount (a repeated mark or a repeated listing counted twice) would skip it.
    'one gone': [
      doc('a'),
      doc('b'),
      doc('c'),
      doc('a'),
      doc('d'),
      { type: 'DELETE', stream: 'docs', documentId: 'e' },
      doc('f'),
      doc('g'),
      doc('h'),
      doc(LONG),
      doc(ODD),
      doc('gone-1'),
      doc('new-1'),
    ],
    'none gone': [
      doc('h'),
      doc('a'),
      doc('b'),
      doc('b'),
      { type: 'DELETE', stream: 'docs', documentId: 'c' },
      doc('d'),
      doc('e'),
      doc('new-1'),
      doc('f'),
      doc('g'),
      doc(LONG),
      doc(ODD),
      doc('gone-1'),
      doc('gone-2'),
      doc('a'),
    ],
  };
  const orders = ['listing first', 'read first', 'interleaved'] as const;
  for (const [readName, read] of Object.entries(reads))
    for (const order of orders)
      it(`${readName}, ${order}: exactly the listed ids the read did not produce, in memory and on disk`, async () => {
        const produced = new Set(read.map((m) => (m as { documentId: string }).documentId));
        const want = [...new Set(stored)].filter((id) => !produced.has(id)).sort();
        for (const inMemoryKeys of [undefined, 1, 4, 8]) {
          for (const batches of [undefined, 3]) {
            let readDone!: () => void;
            const fake: Fake = {
              stored,
              passed: 0,
              batches,
              gate: order === 'read first' ? new Promise<void>((r) => (readDone = r)) : undefined,
            };
            // 'read first' holds the listing until the read is done: the read must not wait for it.
            const { opts, stats } = options(fake, {
              inMemoryKeys,
              annotate: true,
              maxDeleteShare: 1,
              listingWaitMs: order === 'read first' ? 0 : undefined,
            });
            async function* input(): AsyncGenerator<DestinationMessage> {
              if (order === 'listing first') while (!fake.listed) await new Promise((r) => setImmediate(r));
              for (const m of read) {
                if (order === 'interleaved') await new Promise((r) => setImmediate(r));
                yield m;
              }
              readDone?.();
              yield { type: 'STREAM_COMPLETE', stream: 'docs' };
            }
            const out: DestinationMessage[] = [];
            for await (const m of eachOf(sweepStage(asBatches(input()), opts))) out.push(m);
            // Everything read passes through as it is; the sweep's DELETEs come after it.
            expect(out.slice(0, read.length)).toEqual(read);
            expect(deletes(out.slice(read.length)).sort(), `inMemoryKeys ${inMemoryKeys}, batches ${batches}`).toEqual(want);
            expect(stats.docs.records_deleted).toBe(want.length);
          }
        }
      });
});
