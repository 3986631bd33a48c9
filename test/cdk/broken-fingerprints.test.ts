// The conformance kit holds destinations that keep fingerprints to their contract (docs/fingerprints.md):
// a correct in-memory destination passes, and each realistic bug is caught with a message that says
// what is wrong. A destination without fingerprints gets "not applicable", never "passed".
import { describe, expect, it } from 'vitest';
import {
  defineDestination,
  z,
  type ConnectorContext,
  type DocumentFingerprint,
  type StoredDocument,
  type StoredSource,
  type WriteOperation,
} from 'sluice/cdk';
import { FINGERPRINT_CHECKS, runDestinationConformance, type ConformanceReport } from 'sluice/testing';

type Row = { documentId: string; chunkIndex: number; content: string; metadata: Record<string, unknown> };
type Fault =
  /** fingerprints() answers from a cache filled at the first write of a document, never updated. */
  | 'staleFingerprints'
  /** A DELETE removes the chunks but leaves the document's fingerprint behind (a side table forgotten). */
  | 'fingerprintOutlivesDelete'
  /** A metadata-only DOCUMENT is written like a full one from the chunks that carry a vector: none do. */
  | 'metadataOnlyDropsChunks'
  /** KEEP is ignored: the kept document is missing from the new overwrite generation. */
  | 'keepDropsDocument'
  /** A generation of KEEPs is rebuilt from scratch, losing the chunks' metadata. */
  | 'keepRewritesMetadata'
  /** documents() lists the chunks' documents but without their fingerprints. */
  | 'documentsWithoutFingerprints'
  /** While an overwrite generation loads, fingerprints() answers from it instead of the live one. */
  | 'answersFromLoadingGeneration'
  /** documentBatches() pages by two and loses the last page when it is not full (an off-by-one in paging). */
  | 'batchesDropLastPage'
  /** A metadata-only DOCUMENT updates the fingerprint but keeps the old source digest. */
  | 'metadataOnlyKeepsSource'
  /** documents()/documentBatches() list fingerprints without their source digest (a column left out of the listing). */
  | 'listingWithoutSource';

/** An in-memory destination that keeps fingerprints, with one switchable fault. */
function fingerprintDestination(fault?: Fault) {
  const tables = new Map<string, Row[]>();
  const fps = new Map<string, Map<string, DocumentFingerprint>>();
  const firstSeen = new Map<string, DocumentFingerprint>();
  const table = (s: string) => tables.get(s) ?? (tables.set(s, []), tables.get(s)!);
  const fpTable = (s: string) => fps.get(s) ?? (fps.set(s, new Map()), fps.get(s)!);
  const rowsOf = (op: Extract<WriteOperation, { type: 'DOCUMENT' }>, old: Row[]): Row[] => {
    if (!op.metadataOnly)
      return op.chunks.map((c) => ({ documentId: op.documentId, chunkIndex: c.chunkIndex, content: c.content, metadata: c.metadata }));
    if (fault === 'metadataOnlyDropsChunks') return [];
    return old.map((r) => ({ ...r, metadata: op.chunks.find((c) => c.chunkIndex === r.chunkIndex)?.metadata ?? r.metadata }));
  };
  async function* listed(stream: string): AsyncGenerator<StoredDocument> {
    const counts = new Map<string, number>();
    for (const r of table(stream)) counts.set(r.documentId, (counts.get(r.documentId) ?? 0) + 1);
    for (const [documentId, chunks] of counts) {
      const fp = fpTable(stream).get(documentId);
      const shown = fp && fault === 'listingWithoutSource' ? { content: fp.content, metadata: fp.metadata } : fp;
      yield { documentId, chunks, ...(shown && fault !== 'documentsWithoutFingerprints' ? { fingerprint: shown } : {}) };
    }
  }
  const destination = defineDestination({
    spec: { name: 'memory-fingerprints', config: z.strictObject({}) },
    destinationSyncModes: ['append_dedup', 'overwrite'],
    async open(_config, _ctx, { streams }) {
      const modes = new Map(streams.map((s) => [s.name, s.destinationSyncMode]));
      const pending: WriteOperation[] = [];
      /** Overwrite: the new generation's operations, applied at STREAM_COMPLETE. */
      const generations = new Map<string, WriteOperation[]>();
      const apply = () => {
        for (const op of pending.splice(0)) {
          if (modes.get(op.stream) === 'overwrite') {
            generations.set(op.stream, [...(generations.get(op.stream) ?? []), op]);
            continue;
          }
          const rows = table(op.stream);
          const old = rows.filter((r) => r.documentId === op.documentId);
          const rest = rows.filter((r) => r.documentId !== op.documentId);
          if (op.type === 'DELETE') {
            tables.set(op.stream, rest);
            if (fault !== 'fingerprintOutlivesDelete') fpTable(op.stream).delete(op.documentId);
          } else if (op.type === 'DOCUMENT') {
            tables.set(op.stream, [...rest, ...rowsOf(op, old)]);
            const before = fpTable(op.stream).get(op.documentId);
            const fp =
              fault === 'metadataOnlyKeepsSource' && op.metadataOnly && op.fingerprint
                ? { content: op.fingerprint.content, metadata: op.fingerprint.metadata, source: before?.source }
                : op.fingerprint;
            setFingerprint(op.stream, op.documentId, fp);
          }
        }
      };
      const setFingerprint = (stream: string, id: string, fp: DocumentFingerprint | undefined) => {
        if (fp && !firstSeen.has(`${stream}/${id}`)) firstSeen.set(`${stream}/${id}`, fp);
        if (fp) fpTable(stream).set(id, fp);
        else fpTable(stream).delete(id);
      };
      const switchGeneration = (stream: string) => {
        const ops = generations.get(stream) ?? [];
        generations.delete(stream);
        const live = table(stream);
        const liveIds = new Set(live.map((r) => r.documentId));
        const kept = new Set(ops.filter((o) => o.type === 'KEEP').map((o) => o.documentId));
        if (ops.every((o) => o.type === 'KEEP') && [...liveIds].every((id) => kept.has(id)) && fault !== 'keepRewritesMetadata') return;
        const next: Row[] = [];
        const nextFps = new Map<string, DocumentFingerprint>();
        for (const op of ops) {
          const old = live.filter((r) => r.documentId === op.documentId);
          if (op.type === 'KEEP') {
            if (fault === 'keepDropsDocument') continue;
            next.push(...old.map((r) => (fault === 'keepRewritesMetadata' ? { ...r, metadata: {} } : r)));
            const fp = fpTable(stream).get(op.documentId);
            if (fp) nextFps.set(op.documentId, fp);
          } else if (op.type === 'DOCUMENT') {
            next.push(...rowsOf(op, old));
            if (op.fingerprint) nextFps.set(op.documentId, op.fingerprint);
          }
        }
        tables.set(stream, next);
        fps.set(stream, nextFps);
        for (const [id, fp] of nextFps) setFingerprint(stream, id, fp);
      };
      return {
        async fingerprints(stream, ids) {
          const out = new Map<string, DocumentFingerprint>();
          if (fault === 'answersFromLoadingGeneration')
            for (const op of [...(generations.get(stream) ?? []), ...pending])
              if (op.stream === stream && op.type === 'DOCUMENT' && op.fingerprint && ids.includes(op.documentId))
                out.set(op.documentId, op.fingerprint);
          for (const id of ids) {
            if (out.has(id)) continue;
            const fp = fault === 'staleFingerprints' ? firstSeen.get(`${stream}/${id}`) : fpTable(stream).get(id);
            if (fp && (fault === 'staleFingerprints' ? table(stream).some((r) => r.documentId === id) : true)) out.set(id, fp);
          }
          return out;
        },
        async *write(input) {
          let records = 0;
          let chunks = 0;
          for await (const m of input) {
            if (m.type === 'DOCUMENT' || m.type === 'DELETE' || m.type === 'KEEP') {
              pending.push(m);
              records++;
              if (m.type === 'DOCUMENT' && !m.metadataOnly) chunks += m.chunks.length;
            } else if (m.type === 'STATE') {
              apply();
              yield { type: 'STATE_COMMITTED', state: m.state, connection: m.connection };
            } else if (m.type === 'STREAM_COMPLETE') {
              apply();
              switchGeneration(m.stream);
            }
          }
          apply();
          yield { type: 'WRITTEN', stream: streams[0].name, records, chunksWritten: chunks, chunksDeleted: 0 };
        },
        async close() {},
      };
    },
    readBack: async (_c, _x, stream) => table(stream).map((r) => ({ ...r })),
    documents: (_c, _x, stream) => listed(stream),
    async *documentBatches(_c, _x, stream) {
      let page: StoredDocument[] = [];
      for await (const d of listed(stream)) {
        page.push(d);
        if (page.length === 2) yield page.splice(0);
      }
      if (page.length && fault !== 'batchesDropLastPage') yield page;
    },
  });
  return destination;
}

/** The same destination declaring capabilities.sourceDigests. */
function withSourceDigests(fault?: Fault) {
  const d = fingerprintDestination(fault);
  return { ...d, capabilities: { ...d.capabilities, sourceDigests: true } };
}

function failed(report: ConformanceReport): Record<string, string> {
  return Object.fromEntries(report.checks.filter((c) => !c.ok).map((c) => [c.name, c.message ?? '']));
}
const outcome = (report: ConformanceReport, name: string) => report.checks.find((c) => c.name === name)!;

describe('conformance kit on destinations that keep fingerprints', () => {
  it('passes a correct destination: every fingerprint check runs and passes', async () => {
    const report = await runDestinationConformance(fingerprintDestination(), { config: {} });
    expect(failed(report)).toEqual({});
    for (const name of FINGERPRINT_CHECKS) {
      const c = outcome(report, name);
      expect(c, name).toMatchObject({ ok: true });
      expect(c.skipped, name).toBeUndefined();
      expect(c.notApplicable, name).toBeUndefined();
    }
    expect(outcome(report, 'fingerprints.documents-listed').message).toMatch(/^\d+ documents in 2 streams$/);
    // Without capabilities.sourceDigests the source-digest check does not run: not applicable, not passed.
    expect(outcome(report, 'digests.source-stored')).toMatchObject({ ok: true, notApplicable: true });
  });

  it('with capabilities.sourceDigests: a destination that keeps `source` passes; one that loses it is caught', async () => {
    const report = await runDestinationConformance(withSourceDigests(), { config: {} });
    expect(failed(report)).toEqual({});
    const c = outcome(report, 'digests.source-stored');
    expect(c.notApplicable).toBeUndefined();
    expect(c.skipped).toBeUndefined();
    expect(c.message).toBe('fingerprints() and documents(), documentBatches() give the stored source back');

    const kept = failed(await runDestinationConformance(withSourceDigests('metadataOnlyKeepsSource'), { config: {} }));
    expect(kept['digests.source-stored']).toMatch(
      /after a metadata-only DOCUMENT with a new source: fingerprints\(\) gives "fp-src" source "0123456789abcdef:digest-one", expected "0123456789abcdef:digest-two"/,
    );
    const unlisted = failed(await runDestinationConformance(withSourceDigests('listingWithoutSource'), { config: {} }));
    expect(unlisted['digests.source-stored']).toMatch(
      /after DOCUMENTs with and without a source: documents\(\) gives "fp-src" source undefined, expected "0123456789abcdef:digest-one"/,
    );
    expect(Object.keys(unlisted)).toEqual(['digests.source-stored']);
  });

  it('with documentSources() (the light listing): one that gives the stored sources passes; a stale one is caught', async () => {
    const lightly = (stale: boolean) => {
      const d = withSourceDigests();
      return {
        ...d,
        async *documentSources(config: unknown, ctx: ConnectorContext, stream: string) {
          const page: StoredSource[] = [];
          for await (const doc of d.documents!(config as never, ctx, stream)) {
            // Stale: the first source a document was written with, never a later one.
            const source =
              stale && doc.fingerprint?.source?.endsWith('digest-two')
                ? doc.fingerprint.source.replace('two', 'one')
                : doc.fingerprint?.source;
            page.push(source ? { documentId: doc.documentId, source } : { documentId: doc.documentId });
          }
          yield page;
        },
      };
    };
    const report = await runDestinationConformance(lightly(false), { config: {} });
    expect(failed(report)).toEqual({});
    expect(outcome(report, 'digests.source-stored').message).toBe(
      'fingerprints() and documents(), documentBatches(), documentSources() give the stored source back',
    );
    const stale = failed(await runDestinationConformance(lightly(true), { config: {} }));
    expect(stale).toEqual({
      'digests.source-stored': expect.stringMatching(
        /after a metadata-only DOCUMENT with a new source: documentSources\(\) gives "fp-src" source "0123456789abcdef:digest-one", expected "0123456789abcdef:digest-two"/,
      ),
    });
  });

  it('reports "not applicable" (not "passed") for a destination without fingerprints', async () => {
    const plain = defineDestination({
      spec: { name: 'plain', config: z.strictObject({}) },
      async connect() {
        return { async writeBatch() {}, async close() {} };
      },
    });
    const report = await runDestinationConformance(plain, { config: {}, readBack: async () => [] });
    for (const name of FINGERPRINT_CHECKS) expect(outcome(report, name), name).toMatchObject({ ok: true, notApplicable: true });
    expect(outcome(report, 'fingerprints.stored-with-document').message).toBe(
      "the destination's writer has no fingerprints(): the engine rewrites every document, as before",
    );
  });

  it('catches fingerprints() returning a stale value', async () => {
    const f = failed(await runDestinationConformance(fingerprintDestination('staleFingerprints'), { config: {} }));
    expect(f['fingerprints.stored-with-document']).toMatch(
      /once the second batch was acknowledged \(same writer\): fingerprints\(\) returned A1 for document "fp-a", expected A2/,
    );
    expect(f['fingerprints.stored-with-document']).toMatch(
      /fingerprints\(\) returned B1 for document "fp-b", which must have none \(it was dropped or written without a fingerprint\)/,
    );
    expect(f['fingerprints.metadata-only-update']).toMatch(/fingerprints\(\) returned M1 for document "fp-meta", expected M2/);
  });

  it('catches a fingerprint that outlives its deleted document', async () => {
    const f = failed(await runDestinationConformance(fingerprintDestination('fingerprintOutlivesDelete'), { config: {} }));
    expect(f['fingerprints.stored-with-document']).toMatch(
      /^append_dedup: once the second batch was acknowledged \(same writer\): fingerprints\(\) returned D1 for document "fp-deleted", which must have none \(it was deleted\)/m,
    );
  });

  it('catches a metadata-only update that loses the chunks', async () => {
    const f = failed(await runDestinationConformance(fingerprintDestination('metadataOnlyDropsChunks'), { config: {} }));
    expect(f['fingerprints.metadata-only-update']).toMatch(
      /^append_dedup: after a metadata-only update of document "fp-meta" \(3 chunks\): document "fp-meta" is missing/m,
    );
  });

  it('catches a KEEP that drops the document, and a KEEP-only overwrite that rewrites it', async () => {
    const drops = failed(await runDestinationConformance(fingerprintDestination('keepDropsDocument'), { config: {} }));
    expect(drops['fingerprints.keep-some-in-overwrite']).toMatch(
      /^after an overwrite that kept "fp-s1", changed "fp-s2", dropped "fp-s3" and added "fp-s5": document "fp-s1" is missing/,
    );
    expect(drops['fingerprints.keep-some-in-overwrite']).toMatch(/fingerprints\(\) has no fingerprint for document "fp-s1", expected S1/);
    // A generation of KEEPs only is skipped by this destination, so that check still passes.
    expect(drops['fingerprints.keep-only-overwrite-unchanged']).toBeUndefined();

    const rewrites = failed(await runDestinationConformance(fingerprintDestination('keepRewritesMetadata'), { config: {} }));
    expect(rewrites['fingerprints.keep-only-overwrite-unchanged']).toMatch(
      /^after a generation of KEEPs of every live document: the stream changed from .*"n":1.* to .*/,
    );
  });

  it('catches an overwrite that answers look-ups from the generation still loading', async () => {
    const f = failed(await runDestinationConformance(fingerprintDestination('answersFromLoadingGeneration'), { config: {} }));
    expect(f['fingerprints.stored-with-document']).toBe(
      'overwrite: while a new generation was loading (the live generation must answer): fingerprints() returned A2 for document "fp-a", expected A1',
    );
  });

  it('catches documents() without fingerprints', async () => {
    const f = failed(await runDestinationConformance(fingerprintDestination('documentsWithoutFingerprints'), { config: {} }));
    expect(f['fingerprints.documents-listed']).toMatch(
      /^stream "conformance_[0-9a-f]{8}_append_dedup": documents\(\) gives "fp-a" fingerprint none, expected A2/m,
    );
    // documentBatches() lists the same documents, so it is wrong the same way.
    expect(f['fingerprints.document-batches-listed']).toMatch(
      /^stream "conformance_[0-9a-f]{8}_append_dedup": documentBatches\(\) gives "fp-a" fingerprint none, expected A2/m,
    );
    expect(Object.keys(f)).toEqual(['fingerprints.documents-listed', 'fingerprints.document-batches-listed']);
  });

  it('catches documentBatches() that loses documents documents() lists', async () => {
    const f = failed(await runDestinationConformance(fingerprintDestination('batchesDropLastPage'), { config: {} }));
    expect(f['fingerprints.document-batches-listed']).toMatch(/documentBatches\(\) does not list stored document "fp-[a-z0-9]+"/);
    expect(Object.keys(f)).toEqual(['fingerprints.document-batches-listed']);
  });
});
