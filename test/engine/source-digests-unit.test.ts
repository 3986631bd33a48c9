// Source digests in the engine's parts (docs/fingerprints.md, "Source digests"): the sweep's listing
// keeps each document's `source` (compactly in memory, in its JSON on disk) and answers
// DigestCheck.unchanged from it; the tag; the unchanged stage's decisions on `source`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Database, RootDatabase } from 'lmdb';
import { afterAll, describe, expect, it } from 'vitest';
import { open } from '../../src/engine/lmdb-lazy.ts';
import { SpillingMap, StreamMarks, SweptDigests, UNFETCHED, sweepStage, type SweepOptions } from '../../src/engine/sweep.ts';
import { Fingerprinter } from '../../src/engine/fingerprint.ts';
import { UnchangedStage, deferredDocument } from '../../src/engine/unchanged.ts';
import { asBatches, eachOf } from '../../src/engine/flow.ts';
import { documentId } from '../../src/protocol/identity.ts';
import type { DestinationMessage, DocumentFingerprint, StoredDocument } from '../../src/protocol/connector.ts';
import type { ConfiguredStream } from '../../src/protocol/messages.ts';
import { testContext } from '../../src/testing/context.ts';
import { createTextProcessor } from '../../src/text/index.ts';
import { ProcessingConfigSchema } from '../../src/text/config.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
/** SpillingMap's scratch database factory, as the sweep makes it. */
function onDisk() {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-digest-unit-'));
  dirs.push(dir);
  let root: RootDatabase | undefined;
  let n = 0;
  return () => {
    let d: Database<string, string> | undefined;
    return () => {
      root ??= open({ path: dir, noSync: true, maxDbs: 8 });
      return { root, db: (d ??= root.openDB<string, string>({ name: `k${n++}` })) };
    };
  };
}

/** A seeded generator (mulberry32), so a failure can be replayed. */
function random(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TAGS = ['aaaaaaaaaaaaaaaa:', 'bbbbbbbbbbbbbbbb:', 'abc:', ''];
const DIGESTS = ['d1', 'd2', 'x', '0123456789abcdef', 'fd1', 'ü😀', ''];

function randomFingerprint(r: () => number): DocumentFingerprint | null {
  if (r() < 0.05) return null;
  const f: DocumentFingerprint = { content: `c${Math.floor(r() * 5)}`, metadata: r() < 0.8 ? 'm1' : 'm2' };
  if (r() < 0.8) f.embedder = r() < 0.9 ? 'e1' : 'e2';
  const s = r();
  // Mostly the common tag, some another, some none, some without a colon at all.
  if (s < 0.6) f.source = TAGS[0] + DIGESTS[Math.floor(r() * DIGESTS.length)];
  else if (s < 0.75) f.source = TAGS[Math.floor(r() * TAGS.length)] + DIGESTS[Math.floor(r() * DIGESTS.length)];
  else if (s < 0.8) f.source = 'nocolon';
  return f;
}

describe('SpillingMap keeps source: in memory compactly, on disk in its JSON', () => {
  for (const inMemoryKeys of [1_000_000, 7])
    it(`gives back every fingerprint exactly and answers hasSource/countSources as the plain comparison (${inMemoryKeys === 7 ? 'spilled' : 'in memory'})`, () => {
      for (let seed = 1; seed <= 20; seed++) {
        const r = random(seed);
        const map = new SpillingMap(onDisk()(), inMemoryKeys);
        const want = new Map<string, DocumentFingerprint | null>();
        for (let i = 0; i < 40; i++) {
          const id = `id${Math.floor(r() * 30)}`; // some set twice: the last one counts
          const f = randomFingerprint(r);
          map.setNew(id, f);
          want.set(id, f);
        }
        expect(map.size).toBe(want.size);
        for (const [id, f] of want) expect(map.get(id)).toEqual(f);
        for (const prefix of TAGS) {
          expect(map.countSources(prefix)).toBe([...want.values()].filter((f) => f?.source?.startsWith(prefix)).length);
          if (map.spilled) continue;
          for (const [id, f] of want)
            for (const digest of DIGESTS) {
              const plain = f?.source === prefix + digest;
              expect(map.hasSource(map.slotOf(id)!, prefix, digest, map.isSourcePrefix(prefix)), `${seed} ${id} ${prefix}${digest}`).toBe(
                plain,
              );
            }
        }
        if (map.spilled) continue;
        // fingerprintAtOr: the listed fingerprint, the document's own object when all four parts are equal (and it is kept compact).
        for (const [id, f] of want) {
          const slot = map.slotOf(id)!;
          for (let k = 0; k < 6; k++) {
            const own = randomFingerprint(r) ?? { content: 'c0', metadata: 'm1' };
            const equal =
              f !== null &&
              f.content === own.content &&
              f.metadata === own.metadata &&
              f.embedder === own.embedder &&
              f.source === own.source;
            const got = map.fingerprintAtOr(slot, own);
            if (equal) expect(got).toEqual(own);
            else {
              expect(got).not.toBe(own);
              expect(got).toEqual(f);
            }
          }
        }
      }
    });
});

it('fingerprintAtOr gives the own object back for a compact listed fingerprint with the same source, a copy with another', () => {
  const map = new SpillingMap(onDisk()());
  map.setNew('a', { content: 'c', metadata: 'm', embedder: 'e', source: 't:1' });
  map.setNew('b', { content: 'c', metadata: 'm', embedder: 'e' });
  const own = { content: 'c', metadata: 'm', embedder: 'e', source: 't:1' };
  expect(map.fingerprintAtOr(map.slotOf('a')!, own)).toBe(own);
  expect(map.fingerprintAtOr(map.slotOf('a')!, { ...own, source: 't:2' })).toEqual(own);
  expect(map.fingerprintAtOr(map.slotOf('b')!, own)).toEqual({ content: 'c', metadata: 'm', embedder: 'e' });
});

describe('SpillingMap keeps what the light listing lists (setSourceNew): the source, the rest UNFETCHED', () => {
  for (const inMemoryKeys of [1_000_000, 7])
    it(`answers get/sourceOf/hasSource/countSources as the plain comparison, and a whole listing replaces it (${inMemoryKeys === 7 ? 'spilled' : 'in memory'})`, () => {
      for (let seed = 1; seed <= 40; seed++) {
        const r = random(seed);
        const map = new SpillingMap(onDisk()(), inMemoryKeys);
        // Some ids listed whole, some lightly (their source only, or none), in random order.
        const whole = new Map<string, DocumentFingerprint | null>();
        const light = new Map<string, string | undefined>();
        const n = 1 + Math.floor(r() * 25);
        for (let i = 0; i < n; i++) {
          const id = `id${Math.floor(r() * 30)}`;
          if (whole.has(id) || light.has(id)) continue;
          if (r() < 0.5) {
            const f = randomFingerprint(r);
            map.setNew(id, f);
            whole.set(id, f);
          } else {
            const src = randomFingerprint(r)?.source;
            expect(map.setSourceNew(id, src)).toBe(true);
            light.set(id, src);
          }
        }
        expect(map.size).toBe(whole.size + light.size);
        for (const [id, f] of whole) {
          expect(map.get(id)).toEqual(f);
          expect(map.sourceOf(id)).toBe(f?.source);
        }
        for (const [id, src] of light) {
          expect(map.get(id)).toBe(UNFETCHED);
          expect(map.sourceOf(id)).toBe(src);
        }
        expect(map.get('nope')).toBeUndefined();
        expect(map.sourceOf('nope')).toBeUndefined();
        const sources = [...[...whole.values()].map((f) => f?.source), ...light.values()];
        for (const prefix of TAGS) {
          expect(map.countSources(prefix)).toBe(sources.filter((x) => x?.startsWith(prefix)).length);
          if (!map.spilled)
            for (const [id, src] of [...light, ...[...whole].map(([i, f]) => [i, f?.source] as const)])
              for (const digest of DIGESTS)
                expect(map.hasSource(map.slotOf(id)!, prefix, digest, map.isSourcePrefix(prefix)), `${seed} ${id} ${prefix}${digest}`).toBe(
                  src === prefix + digest,
                );
        }
        // The whole listing that follows sets every id again: then it holds whole fingerprints only.
        const relisted = new Map<string, DocumentFingerprint | null>();
        for (const id of [...whole.keys(), ...light.keys()]) {
          const f = randomFingerprint(r);
          expect(map.setNew(id, f)).toBe(false);
          relisted.set(id, f);
        }
        expect(map.size).toBe(relisted.size);
        for (const [id, f] of relisted) expect(map.get(id)).toEqual(f);
        for (const prefix of TAGS)
          expect(map.countSources(prefix)).toBe([...relisted.values()].filter((f) => f?.source?.startsWith(prefix)).length);
      }
    });
});

describe('StreamMarks with the light listing', () => {
  for (const inMemoryKeys of [1_000_000, 2])
    it(`marks a lightly listed id by its source; its first occurrence is UNFETCHED, never null (${inMemoryKeys === 2 ? 'spilled' : 'in memory'})`, () => {
      const marks = new StreamMarks(onDisk(), inMemoryKeys);
      const T = 'tttttttttttttttt:';
      marks.listSource('a', `${T}da`);
      marks.listSource('b', `${T}db`);
      marks.listSource('c', undefined);
      marks.mark('n', true); // produced by the read before the listing listed it
      marks.listSource('n', `${T}dn`);
      const common = marks.stored.isSourcePrefix(T);
      expect(marks.markIfSource('a', T, 'dX', common)).toBe(false);
      expect(marks.markIfSource('c', T, 'da', common)).toBe(false);
      expect(marks.markIfSource('a', T, 'da', common)).toBe(true);
      expect(marks.markIfSource('a', T, 'da', common)).toBe(false);
      // Read in full: the listing knows it is stored but not its fingerprint (looked up).
      expect(marks.mark('b', true)).toBe(UNFETCHED);
      expect(marks.mark('b', true)).not.toBe(UNFETCHED); // a repeat
      expect(marks.mark('zz', true)).toBeUndefined(); // not listed: not stored
      expect([...marks.unmarked()].sort()).toEqual(['c']);
      expect(marks.mark('c', true)).toBe(UNFETCHED);
      expect(marks.allMarked).toBe(true);
    });
});

describe('StreamMarks.markIfSource', () => {
  for (const inMemoryKeys of [1_000_000, 2])
    it(`marks a listed, unmarked id whose source matches, once; the sweep then keeps it (${inMemoryKeys === 2 ? 'spilled' : 'in memory'})`, () => {
      const marks = new StreamMarks(onDisk(), inMemoryKeys);
      const T = 'tttttttttttttttt:';
      marks.list('a', { content: 'c', metadata: 'm', source: `${T}da` });
      marks.list('b', { content: 'c', metadata: 'm', source: `${T}db` });
      marks.list('c', { content: 'c', metadata: 'm' });
      marks.list('d', { content: 'c', metadata: 'm', source: `${T}dd` });
      const common = marks.stored.isSourcePrefix(T);
      expect(marks.markIfSource('a', T, 'dX', common)).toBe(false); // another digest
      expect(marks.markIfSource('a', 'uuuuuuuuuuuuuuuu:', 'da', false)).toBe(false); // another tag
      expect(marks.markIfSource('c', T, 'da', common)).toBe(false); // stored without one
      expect(marks.markIfSource('zz', T, 'da', common)).toBe(false); // not listed
      expect(marks.markIfSource('a', T, 'da', common)).toBe(true);
      expect(marks.markIfSource('a', T, 'da', common)).toBe(false); // asked again: already marked
      marks.mark('b', false); // produced by the read
      expect(marks.markIfSource('b', T, 'db', common)).toBe(false);
      expect(marks.allMarked).toBe(false);
      expect([...marks.unmarked()].sort()).toEqual(['c', 'd']);
      expect(marks.markIfSource('d', T, 'dd', common)).toBe(true);
      marks.mark('c', false);
      expect(marks.allMarked).toBe(true);
      expect([...marks.unmarked()]).toEqual([]);
    });
});

const stream = (name: string, mode: 'append_dedup' | 'overwrite', pk: string[][] = [['id']]): ConfiguredStream =>
  ({ stream: { name, json_schema: {} }, sync_mode: 'full_refresh', destination_sync_mode: mode, primary_key: pk }) as ConfiguredStream;

describe('SweptDigests (ctx.storedDigests) on the sweep stage', () => {
  const processor = createTextProcessor(ProcessingConfigSchema.parse({ text_fields: ['body'] }));

  function setUp(stored: Record<string, StoredDocument[]>, opts: { failListing?: boolean; catalog?: ConfiguredStream[] } = {}) {
    const ctx = testContext();
    const catalog = {
      streams: opts.catalog ?? [
        stream('docs', 'append_dedup'),
        stream('pairs', 'append_dedup', [['a'], ['b']]),
        stream('kept', 'overwrite'),
      ],
    };
    const stats: Record<string, { records_read: number; records_unchanged?: number; records_deleted: number }> = {};
    for (const s of catalog.streams) stats[s.stream.name] = { records_read: 0, records_unchanged: 0, records_deleted: 0 };
    const conn = {
      config: { name: 'c', destination: { type: 'fake' }, processing: { max_delete_share: 1 } },
      destination: {
        async *documents(_c: unknown, _x: unknown, name: string): AsyncGenerator<StoredDocument> {
          await new Promise((r) => setImmediate(r));
          if (opts.failListing) throw new Error('listing broke');
          yield* stored[name] ?? [];
        },
      },
      destinationConfig: {},
      index: 0,
    } as unknown as SweepOptions['conn'];
    const fingerprinter = new Fingerprinter(processor, undefined, { sourceType: 'fake-source' });
    const digests = new SweptDigests({ conn, catalog: catalog as SweepOptions['catalog'], sharded: false, fingerprinter, stats });
    const tagOf = (name: string) => fingerprinter.sourceTag(catalog.streams.find((s) => s.stream.name === name)!);
    const sweepOpts: SweepOptions = {
      conn,
      ctx,
      catalog: catalog as SweepOptions['catalog'],
      stats,
      signal: ctx.signal,
      logger: ctx.logger,
      sharded: false,
      listWhileReading: true,
      digests,
    };
    return { digests, stats, tagOf, sweepOpts };
  }

  /** Runs the stage over `read` (the source side calls `during` before the stream's documents pass). */
  async function run(sweepOpts: SweepOptions, read: DestinationMessage[], during: () => Promise<void>) {
    async function* input(): AsyncGenerator<DestinationMessage> {
      await during();
      yield* read;
    }
    const out: DestinationMessage[] = [];
    for await (const m of eachOf(sweepStage(asBatches(input()), sweepOpts))) out.push(m);
    return out;
  }

  const doc = (id: string, source?: string): StoredDocument => ({
    documentId: id,
    chunks: 1,
    fingerprint: { content: 'c', metadata: 'm', ...(source ? { source } : {}) },
  });

  it('skipping from half the listed documents with this tag on; unchanged marks, counts, and keeps them from the sweep', async () => {
    const { digests, stats, tagOf, sweepOpts } = setUp({});
    const t = `${tagOf('docs')}:`;
    // Four listed: two with this tag (half: skipping), one with another tag, one without.
    const stored = [doc('1', `${t}d1`), doc('2', `${t}d2`), doc('3', 'ffffffffffffffff:d3'), doc('4')];
    (sweepOpts.conn.destination as { documents: unknown }).documents = async function* () {
      yield* stored;
    };
    let answers: boolean[] = [];
    const out = await run(sweepOpts, [{ type: 'STREAM_COMPLETE', stream: 'docs' }], async () => {
      const check = (await digests.forStream('docs'))!;
      expect(check.skipping).toBe(true);
      answers = [
        check.unchanged({ id: 1 }, 'd1'),
        check.unchanged({ id: '1' }, 'd1'), // the same id again: asked once only
        check.unchanged({ id: 2 }, 'other'),
        check.unchanged({ id: 3 }, 'd3'), // another tag
        check.unchanged({ id: 4 }, 'd4'), // stored without a source
        check.unchanged({ id: 9 }, 'd1'), // not stored
        check.unchanged({ nope: 1 }, 'd1'), // no key: the full read reports it
      ];
    });
    expect(answers).toEqual([true, false, false, false, false, false, false]);
    expect(stats.docs).toMatchObject({ records_read: 1, records_unchanged: 1 });
    // 1 was marked by the check; the rest were neither emitted nor accepted: swept.
    expect(
      out
        .filter((m) => m.type === 'DELETE')
        .map((m) => (m as { documentId: string }).documentId)
        .sort(),
    ).toEqual(['2', '3', '4']);
  });

  it('fewer than half with this tag, or nothing listed: not skipping', async () => {
    for (const [stored, want] of [
      [[doc('1', 'x:d1'), doc('2')], false],
      [[], false],
      [[doc('1', 'TAG:d1'), doc('2', 'TAG:d2'), doc('3')], true],
      [[doc('1', 'TAG:d1'), doc('2'), doc('3')], false],
    ] as const) {
      const { digests, tagOf, sweepOpts } = setUp({});
      const list = stored.map((d) =>
        d.fingerprint?.source ? { ...d, fingerprint: { ...d.fingerprint, source: d.fingerprint.source.replace('TAG', tagOf('docs')) } } : d,
      );
      (sweepOpts.conn.destination as { documents: unknown }).documents = async function* () {
        yield* list;
      };
      let skipping: boolean | undefined;
      await run(sweepOpts, [], async () => {
        skipping = (await digests.forStream('docs'))?.skipping;
      });
      expect(skipping).toBe(want);
    }
  });

  it('a composite key gives the id toDocument makes', async () => {
    const { digests, tagOf, sweepOpts } = setUp({});
    const key = { a: 'x"\\ü', b: 7 };
    const id = documentId(key, [['a'], ['b']]);
    (sweepOpts.conn.destination as { documents: unknown }).documents = async function* () {
      yield doc(id, `${tagOf('pairs')}:dd`);
    };
    let ok: boolean | undefined;
    await run(sweepOpts, [], async () => {
      ok = (await digests.forStream('pairs'))!.unchanged(key, 'dd');
    });
    expect(ok).toBe(true);
  });

  it('undefined for a stream that is not swept, an unknown one, and when the listing failed', async () => {
    const { digests, sweepOpts } = setUp({}, { failListing: true });
    const got: unknown[] = [];
    await run(sweepOpts, [], async () => {
      got.push(await digests.forStream('kept'), await digests.forStream('nope'), await digests.forStream('docs'));
    }).catch(() => undefined);
    expect(got).toEqual([undefined, undefined, undefined]);
  });

  it('the tag differs per stream, and with any setting; it is 16 hex', () => {
    const a = new Fingerprinter(processor, undefined, { sourceType: 's' });
    const cs = stream('docs', 'append_dedup');
    const tag = a.sourceTag(cs);
    expect(tag).toMatch(/^[0-9a-f]{16}$/);
    expect(a.sourceTag(cs)).toBe(tag);
    const others = [
      a.sourceTag(stream('docs2', 'append_dedup')),
      a.sourceTag(stream('docs', 'append_dedup', [['key']])),
      new Fingerprinter(processor, undefined, { sourceType: 't' }).sourceTag(cs),
      new Fingerprinter(processor, undefined, { sourceType: 's', processing: { metadata_fields: ['x'] } }).sourceTag(cs),
      new Fingerprinter(processor, undefined, { sourceType: 's', schemaChanges: 'ignore' }).sourceTag(cs),
      new Fingerprinter(createTextProcessor(ProcessingConfigSchema.parse({ text_fields: ['title'] })), undefined, {
        sourceType: 's',
      }).sourceTag(cs),
      new Fingerprinter(processor, { provider: 'p', model: 'm', dimensions: 3 }, { sourceType: 's' }).sourceTag(cs),
    ];
    expect(new Set([tag, ...others]).size).toBe(others.length + 1);
  });
});

describe('the unchanged stage and source', () => {
  const chunk = () => [{ id: 'x#0', documentId: 'x', chunkIndex: 0, content: 't', contentHash: 'h', metadata: {} }];
  const docWith = (fp: DocumentFingerprint) => deferredDocument('s', 'x', { body: 't' }, fp, chunk, false);

  async function decide(own: DocumentFingerprint, stored: DocumentFingerprint | undefined) {
    const stats: Record<string, { records_unchanged?: number; records_metadata_updated?: number }> = { s: {} };
    const stage = new UnchangedStage({
      writer: { fingerprints: async () => new Map(stored ? [['x', stored]] : []) },
      modes: new Map([['s', 'append_dedup']]),
      stats,
    } as never);
    const out: DestinationMessage[] = [];
    for await (const m of stage.run(
      (async function* () {
        yield docWith(own);
      })(),
    ))
      out.push(m);
    return { out, stats: stats.s };
  }

  it('equal content and metadata: own source new or different → metadata-only with it; equal or own absent → unchanged', async () => {
    const base = { content: 'c', metadata: 'm' };
    for (const [own, stored, want] of [
      [{ ...base, source: 't:1' }, { ...base }, 'metadata'],
      [{ ...base, source: 't:1' }, { ...base, source: 't:2' }, 'metadata'],
      [{ ...base, source: 't:1' }, { ...base, source: 't:1' }, 'unchanged'],
      [{ ...base }, { ...base, source: 't:1' }, 'unchanged'],
      [{ ...base, metadata: 'n', source: 't:1' }, { ...base, source: 't:1' }, 'metadata'],
      [{ ...base, content: 'd', source: 't:1' }, { ...base, source: 't:1' }, 'full'],
    ] as [DocumentFingerprint, DocumentFingerprint, string][]) {
      const { out, stats } = await decide(own, stored);
      if (want === 'unchanged') {
        expect(out).toEqual([]);
        expect(stats.records_unchanged).toBe(1);
      } else {
        expect(out).toHaveLength(1);
        const m = out[0] as Extract<DestinationMessage, { type: 'DOCUMENT' }>;
        expect(m.fingerprint).toEqual(own);
        expect(m.metadataOnly === true).toBe(want === 'metadata');
      }
    }
  });

  it('dropListedUnchanged keeps a document whose source differs from the listed one', () => {
    const stage = new UnchangedStage({
      writer: { fingerprints: async () => new Map() },
      modes: new Map([['s', 'append_dedup']]),
      stats: { s: {} },
    } as never);
    const base = { content: 'c', metadata: 'm' };
    expect(stage.dropListedUnchanged(docWith({ ...base, source: 't:1' }), { ...base, source: 't:2' })).toBe(false);
    expect(stage.dropListedUnchanged(docWith({ ...base, source: 't:1' }), { ...base })).toBe(false);
    expect(stage.dropListedUnchanged(docWith({ ...base, source: 't:1' }), { ...base, source: 't:1' })).toBe(true);
    expect(stage.dropListedUnchanged(docWith({ ...base }), { ...base, source: 't:1' })).toBe(true);
  });
});
