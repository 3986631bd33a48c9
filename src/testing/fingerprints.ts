// Destination conformance for fingerprints (docs/fingerprints.md): a destination whose writer has
// fingerprints() lets the engine skip unchanged documents, so a wrong answer loses updates silently.
// These checks hold it to the contract: fingerprints written with a DOCUMENT come back after the
// commit (the newest one, never a stale one, none for unknown, deleted or fingerprint-less
// documents), a metadata-only DOCUMENT changes metadata but keeps text, vectors and chunk count,
// KEEP carries exactly the kept documents into a new overwrite generation, a generation of KEEPs
// only leaves the stream exactly as it was, and documents() lists exactly what is stored.
//
// A destination without fingerprints() gets "not applicable" for them, never "passed".
import type {
  ConnectorContext,
  Destination,
  DestinationEvent,
  DestinationMessage,
  DestinationWriter,
  DocumentFingerprint,
  StoredChunk,
  StoredDocument,
} from '../protocol/connector.ts';
import { sha256 } from '../protocol/identity.ts';
import type { DestinationSyncMode } from '../protocol/messages.ts';
import type { ReportBuilder } from './report.ts';
import { describeFailure } from './source.ts';

/** A stream's expected content: document id → chunk contents by index (as in destination.ts). */
type Model = Map<string, string[]>;

export const FINGERPRINT_CHECKS = [
  'fingerprints.stored-with-document',
  'fingerprints.metadata-only-update',
  'fingerprints.keep-only-overwrite-unchanged',
  'fingerprints.keep-some-in-overwrite',
  'fingerprints.documents-listed',
  'fingerprints.document-batches-listed',
] as const;

/** For destinations with `capabilities.sourceDigests` (docs/fingerprints.md, "Source digests"). */
export const SOURCE_DIGEST_CHECKS = ['digests.source-stored'] as const;

type Mode = DestinationSyncMode;
/** A message for the writer, or a look-up made while it works. */
type Step = DestinationMessage | { probe(writer: DestinationWriter): Promise<void> };
type DocExtra = { fingerprint?: DocumentFingerprint; metadata?: Record<string, unknown>; metadataOnly?: boolean };

/** What the destination kit shares with these checks (its streams, model and helpers). */
export interface FingerprintKit {
  destination: Destination;
  config: unknown;
  ctx: ConnectorContext;
  report: ReportBuilder;
  modes: Mode[];
  name(mode: Mode): string;
  dims: number | undefined;
  expected: Map<string, Model>;
  applyToModel(mode: Mode, messages: DestinationMessage[]): void;
  doc(stream: string, id: string, texts: string[], extra?: DocExtra): DestinationMessage;
  complete(stream: string): DestinationMessage;
  state(): DestinationMessage;
  run(
    ms: Mode[],
    input: DestinationMessage[],
    onEvent?: (e: DestinationEvent, writer: DestinationWriter) => Promise<void>,
  ): Promise<DestinationEvent[]>;
  openWriter(ms: Mode[]): Promise<DestinationWriter>;
  read: ((stream: string) => Promise<StoredChunk[]>) | undefined;
  searchBack: ((stream: string) => Promise<StoredChunk[]>) | undefined;
  noReadBack: string;
  /** destination.ts's comparison of a stream with its model, and its summary of what a stream holds. */
  compareStream(held: StoredChunk[], expected: Model, optional?: Model): string[];
  showHeld(chunks: StoredChunk[]): string;
}

const NO_FINGERPRINTS = "the destination's writer has no fingerprints(): the engine rewrites every document, as before";

export async function runFingerprintChecks(kit: FingerprintKit): Promise<void> {
  const { report, modes, name, compareStream, showHeld } = kit;
  /** Every fingerprint the kit made, by label, so messages name them ("A1", not a hash). */
  const labels = new Map<string, string>();
  const fp = (label: string): DocumentFingerprint => {
    const f = { content: sha256(`conformance content ${label}`), metadata: sha256(`conformance metadata ${label}`) };
    labels.set(`${f.content}/${f.metadata}`, label);
    return f;
  };
  /** The same content as `label`, other metadata: what a metadata-only update carries. */
  const metadataChanged = (label: string, newLabel: string): DocumentFingerprint => {
    const f = { content: fp(label).content, metadata: sha256(`conformance metadata ${newLabel}`) };
    labels.set(`${f.content}/${f.metadata}`, newLabel);
    return f;
  };
  const show = (f: DocumentFingerprint | undefined) =>
    f === undefined ? 'none' : (labels.get(`${f.content}/${f.metadata}`) ?? JSON.stringify({ content: f.content, metadata: f.metadata }));
  /** The fingerprint each stored document must have (absent: none). */
  const fingerprintModel = new Map<string, Map<string, DocumentFingerprint | undefined>>();
  const fpsOf = (stream: string) =>
    fingerprintModel.get(stream) ?? (fingerprintModel.set(stream, new Map()), fingerprintModel.get(stream)!);
  /**
   * Opens a writer, feeds it `steps` (a probe runs when the writer asks for the message after it,
   * as the engine looks documents up while the writer works), closes it, then updates the content
   * and fingerprint models the way the stream's mode must.
   */
  const send = async (
    mode: Mode,
    steps: Step[],
    onEvent?: (e: DestinationEvent, writer: DestinationWriter) => Promise<void>,
  ): Promise<DestinationEvent[]> => {
    const input = steps.filter((x): x is DestinationMessage => !('probe' in x));
    const writer = await kit.openWriter([mode]);
    const events: DestinationEvent[] = [];
    try {
      async function* feed() {
        for (const x of steps) {
          if ('probe' in x) await x.probe(writer);
          else yield x;
        }
      }
      for await (const e of writer.write(feed())) {
        events.push(e);
        if (onEvent) await onEvent(e, writer);
      }
    } finally {
      await writer.close();
    }
    kit.applyToModel(mode, input);
    for (const m of input)
      if (m.type === 'DOCUMENT') fpsOf(m.stream).set(m.documentId, m.fingerprint);
      else if (m.type === 'DELETE') fpsOf(m.stream).delete(m.documentId);
    return events;
  };

  /** Differences between what fingerprints() returned and what it must. */
  const compare = (got: Map<string, DocumentFingerprint>, want: Map<string, DocumentFingerprint>, asked: string[], when: string) => {
    const problems: string[] = [];
    for (const id of asked) {
      const g = got.get(id);
      const w = want.get(id);
      if (w && !g) problems.push(`${when}: fingerprints() has no fingerprint for document "${id}", expected ${show(w)}`);
      else if (!w && g)
        problems.push(`${when}: fingerprints() returned ${show(g)} for document "${id}", which must have none (${absentWhy(id)})`);
      else if (w && g && (g.content !== w.content || g.metadata !== w.metadata))
        problems.push(`${when}: fingerprints() returned ${show(g)} for document "${id}", expected ${show(w)}`);
    }
    const extra = [...got.keys()].filter((id) => !asked.includes(id));
    if (extra.length)
      problems.push(`${when}: fingerprints() returned documents it was not asked for: ${extra.map((i) => `"${i}"`).join(', ')}`);
    return problems;
  };
  const absentWhy = (id: string) =>
    id.includes('unknown')
      ? 'never written'
      : id.includes('deleted')
        ? 'it was deleted'
        : 'it was dropped or written without a fingerprint';

  // Does the writer keep fingerprints at all?
  let hasFingerprints: boolean;
  try {
    const probe = await kit.openWriter(modes);
    hasFingerprints = typeof probe.fingerprints === 'function';
    await probe.close();
  } catch (err) {
    for (const n of [...FINGERPRINT_CHECKS, ...SOURCE_DIGEST_CHECKS]) report.fail(n, `opening a writer failed: ${describeFailure(err)}`);
    return;
  }
  const fingerprintModes = modes.filter((m) => m === 'append_dedup' || m === 'overwrite');

  if (!hasFingerprints) {
    for (const n of FINGERPRINT_CHECKS.slice(0, 4)) report.notApplicable(n, NO_FINGERPRINTS);
  } else if (!fingerprintModes.length) {
    for (const n of FINGERPRINT_CHECKS.slice(0, 4))
      report.notApplicable(n, 'fingerprints are used in append_dedup and overwrite, and the destination supports neither');
  } else {
    await storedWithDocument();
    await metadataOnlyUpdate();
    await keepOnlyOverwrite();
    await keepSomeInOverwrite();
  }
  await documentsListed();
  await documentBatchesListed();
  await sourceStored();

  /** Fingerprints come back after the commit, in the same writer and in a new one; the newest, never a stale one. */
  async function storedWithDocument(): Promise<void> {
    const check = 'fingerprints.stored-with-document';
    const problems: string[] = [];
    try {
      for (const m of fingerprintModes) {
        const s = name(m);
        const ids = ['fp-a', 'fp-b', 'fp-deleted', 'fp-n', 'fp-unknown'];
        const lookUp = async (writer: DestinationWriter, want: Map<string, DocumentFingerprint>, when: string) => {
          problems.push(...compare(await writer.fingerprints!(s, ids), want, ids, `${m}: ${when}`));
        };
        const lookUpFresh = async (want: Map<string, DocumentFingerprint>, when: string) => {
          const writer = await kit.openWriter([m]);
          try {
            await lookUp(writer, want, when);
          } finally {
            await writer.close();
          }
        };

        const first = new Map([
          ['fp-a', fp('A1')],
          ['fp-b', fp('B1')],
          ['fp-deleted', fp('D1')],
        ]);
        const gen1: DestinationMessage[] = [
          kit.doc(s, 'fp-a', ['fingerprinted a', 'second chunk of a'], { fingerprint: first.get('fp-a') }),
          kit.doc(s, 'fp-b', ['fingerprinted b'], { fingerprint: first.get('fp-b') }),
          kit.doc(s, 'fp-deleted', ['to be deleted'], { fingerprint: first.get('fp-deleted') }),
          kit.doc(s, 'fp-n', ['written without a fingerprint']),
          ...(m === 'overwrite' ? [kit.complete(s)] : []),
          kit.state(),
        ];
        // The same writer answers after each commit (append_dedup: the engine looks documents up
        // between batches); an overwrite stream completes once per writer, so a new writer answers.
        await send(m, gen1, async (e, writer) => {
          if (e.type === 'STATE_COMMITTED' && m !== 'overwrite')
            await lookUp(writer, first, 'once the first batch was acknowledged (same writer)');
        });
        await lookUpFresh(first, 'after the first batch, in a new writer');

        // New content for fp-a, fp-b rewritten without a fingerprint (its old one is stale now),
        // fp-deleted deleted (overwrite: left out of the generation), fp-n now with one.
        const second = new Map([
          ['fp-a', fp('A2')],
          ['fp-n', fp('N2')],
        ]);
        const batch2: Step[] = [
          kit.doc(s, 'fp-a', ['fingerprinted a, changed'], { fingerprint: second.get('fp-a') }),
          kit.doc(s, 'fp-b', ['fingerprinted b, changed']),
          m === 'overwrite'
            ? // Until the new generation is switched in, the live one's fingerprints count.
              { probe: (writer) => lookUp(writer, first, 'while a new generation was loading (the live generation must answer)') }
            : { type: 'DELETE', stream: s, documentId: 'fp-deleted' },
          kit.doc(s, 'fp-n', ['written without a fingerprint, now with one'], { fingerprint: second.get('fp-n') }),
          ...(m === 'overwrite' ? [kit.complete(s)] : []),
          kit.state(),
        ];
        await send(m, batch2, async (e, writer) => {
          if (e.type === 'STATE_COMMITTED' && m !== 'overwrite')
            await lookUp(writer, second, 'once the second batch was acknowledged (same writer)');
        });
        await lookUpFresh(second, 'after the second batch, in a new writer');
      }
      report.result(check, problems, `checked in ${fingerprintModes.join(' and ')}`);
    } catch (err) {
      report.fail(check, describeFailure(err));
    }
  }

  /** A metadata-only DOCUMENT: new metadata and fingerprint, same text, vectors and chunk count. */
  async function metadataOnlyUpdate(): Promise<void> {
    const check = 'fingerprints.metadata-only-update';
    if (!kit.read) return report.skip(check, kit.noReadBack);
    const problems: string[] = [];
    let metadataSeen = false;
    try {
      for (const m of fingerprintModes) {
        const s = name(m);
        const texts = ['metadata zero', 'metadata one', 'metadata two'];
        const before = fp('M1');
        const after = metadataChanged('M1', 'M2');
        await send(m, [
          kit.doc(s, 'fp-meta', texts, { fingerprint: before, metadata: { source: 'conformance', title: 'first title' } }),
          ...(m === 'overwrite' ? [kit.complete(s)] : []),
          kit.state(),
        ]);
        const update = kit.doc(s, 'fp-meta', texts, {
          fingerprint: after,
          metadata: { source: 'conformance', title: 'second title' },
          metadataOnly: true,
        });
        await send(m, [update, ...(m === 'overwrite' ? [kit.complete(s)] : []), kit.state()]);

        const when = `${m}: after a metadata-only update of document "fp-meta" (3 chunks)`;
        const held = await kit.read(s);
        const own = new Map([['fp-meta', texts]]);
        const others = new Map([...kit.expected.get(s)!].filter(([id]) => id !== 'fp-meta'));
        problems.push(...compareStream(held, own, others).map((p) => `${when}: ${p} (stream holds ${showHeld(held)})`));
        for (const c of held.filter((x) => x.documentId === 'fp-meta' && x.metadata !== undefined)) {
          metadataSeen = true;
          if (c.metadata!.title !== 'second title')
            problems.push(`${when}: chunk ${c.chunkIndex} has metadata ${JSON.stringify(c.metadata)}, expected title "second title"`);
        }
        const writer = await kit.openWriter([m]);
        try {
          problems.push(...compare(await writer.fingerprints!(s, ['fp-meta']), new Map([['fp-meta', after]]), ['fp-meta'], when));
        } finally {
          await writer.close();
        }
        // The vectors stay: every chunk is still found by a vector search.
        if (kit.searchBack && kit.read !== kit.searchBack) {
          const found = (await kit.searchBack(s)).filter((c) => c.documentId === 'fp-meta').map((c) => c.chunkIndex);
          const lost = [0, 1, 2].filter((i) => !found.includes(i));
          if (lost.length)
            problems.push(`${when}: a vector search no longer finds chunk(s) ${lost.join(', ')}: the update must keep the stored vectors`);
        }
      }
      report.result(
        check,
        problems,
        metadataSeen ? undefined : 'text and chunks kept, fingerprint updated; the read-back shows no metadata, so it was not compared',
      );
    } catch (err) {
      report.fail(check, describeFailure(err));
    }
  }

  /** A generation of KEEPs of every live document leaves the stream exactly as it was. */
  async function keepOnlyOverwrite(): Promise<void> {
    const check = 'fingerprints.keep-only-overwrite-unchanged';
    if (!modes.includes('overwrite')) return report.notApplicable(check, 'overwrite is not supported');
    if (!kit.read) return report.skip(check, kit.noReadBack);
    const s = name('overwrite');
    const problems: string[] = [];
    try {
      const ids = ['fp-k1', 'fp-k2'];
      await send('overwrite', [
        kit.doc(s, 'fp-k1', ['kept one', 'kept one, part two'], { fingerprint: fp('K1'), metadata: { source: 'conformance', n: 1 } }),
        kit.doc(s, 'fp-k2', ['kept two'], { fingerprint: fp('K2'), metadata: { source: 'conformance', n: 2 } }),
        kit.complete(s),
        kit.state(),
      ]);
      const snapshot = async () => {
        const writer = await kit.openWriter(['overwrite']);
        try {
          return { chunks: canonical(await kit.read!(s)), fingerprints: await writer.fingerprints!(s, ids) };
        } finally {
          await writer.close();
        }
      };
      const before = await snapshot();
      const events = await send('overwrite', [
        { type: 'KEEP', stream: s, documentId: 'fp-k1' },
        { type: 'KEEP', stream: s, documentId: 'fp-k2' },
        kit.complete(s),
        kit.state(),
      ]);
      const after = await snapshot();
      const when = 'after a generation of KEEPs of every live document';
      if (after.chunks !== before.chunks) problems.push(`${when}: the stream changed from ${before.chunks} to ${after.chunks}`);
      problems.push(...compare(after.fingerprints, before.fingerprints, ids, when));
      const written = events.reduce((n, e) => n + (e.type === 'WRITTEN' ? e.chunksWritten + e.chunksDeleted : 0), 0);
      if (written) problems.push(`${when}: WRITTEN events report ${written} chunks written or deleted; nothing must be written`);
      report.result(check, problems);
    } catch (err) {
      report.fail(check, describeFailure(err));
    }
  }

  /** KEEP some documents, change one, drop one, add one: the new generation holds exactly that. */
  async function keepSomeInOverwrite(): Promise<void> {
    const check = 'fingerprints.keep-some-in-overwrite';
    if (!modes.includes('overwrite')) return report.notApplicable(check, 'overwrite is not supported');
    const s = name('overwrite');
    const problems: string[] = [];
    try {
      const gen1 = new Map([
        ['fp-s1', fp('S1')],
        ['fp-s2', fp('S2')],
        ['fp-s3', fp('S3')],
      ]);
      await send('overwrite', [
        kit.doc(s, 'fp-s1', ['kept as is', 'kept as is, part two'], { fingerprint: gen1.get('fp-s1') }),
        kit.doc(s, 'fp-s2', ['to be changed'], { fingerprint: gen1.get('fp-s2') }),
        kit.doc(s, 'fp-s3', ['to be dropped'], { fingerprint: gen1.get('fp-s3') }),
        kit.complete(s),
        kit.state(),
      ]);
      const oldGeneration = new Map(kit.expected.get(s)!);
      const gen2: DestinationMessage[] = [
        { type: 'KEEP', stream: s, documentId: 'fp-s1' },
        kit.doc(s, 'fp-s2', ['changed'], { fingerprint: fp('S2b') }),
        kit.state(),
        kit.doc(s, 'fp-s5', ['new in this generation'], { fingerprint: fp('S5') }),
        kit.complete(s),
        kit.state(),
      ];
      const newGeneration: Model = new Map([
        ['fp-s1', oldGeneration.get('fp-s1')!],
        ['fp-s2', ['changed']],
        ['fp-s5', ['new in this generation']],
      ]);
      let acks = 0;
      await send('overwrite', gen2, async (e) => {
        if (e.type !== 'STATE_COMMITTED' || !kit.read || ++acks !== 1) return;
        // Readers see the whole old generation or (switched already) the whole new one.
        const held = await kit.read(s);
        if (compareStream(held, oldGeneration).length && compareStream(held, newGeneration).length)
          problems.push(
            `while a generation with a KEEP was loading, readers saw neither the whole old generation nor the whole new one (stream holds ${showHeld(held)})`,
          );
      });
      const when = 'after an overwrite that kept "fp-s1", changed "fp-s2", dropped "fp-s3" and added "fp-s5"';
      if (kit.read) {
        const held = await kit.read(s);
        problems.push(...compareStream(held, kit.expected.get(s)!).map((p) => `${when}: ${p} (stream holds ${showHeld(held)})`));
      }
      const ids = ['fp-s1', 'fp-s2', 'fp-s3', 'fp-s5'];
      const writer = await kit.openWriter(['overwrite']);
      try {
        const want = new Map([
          ['fp-s1', gen1.get('fp-s1')!],
          ['fp-s2', fp('S2b')],
          ['fp-s5', fp('S5')],
        ]);
        problems.push(...compare(await writer.fingerprints!(s, ids), want, ids, when));
      } finally {
        await writer.close();
      }
      if (!kit.read && !problems.length) report.skip(check, `fingerprints are right; ${kit.noReadBack}`);
      else report.result(check, problems);
    } catch (err) {
      report.fail(check, describeFailure(err));
    }
  }

  /**
   * What a listing of every test stream gets wrong: a document listed twice or not at all, one
   * listed that is not stored, a wrong chunk count or fingerprint. `what` names the listing.
   */
  async function listingProblems(
    what: string,
    list: (stream: string) => AsyncIterable<StoredDocument>,
  ): Promise<{ problems: string[]; listed: number }> {
    const problems: string[] = [];
    let listed = 0;
    for (const [s, model] of kit.expected) {
      const got = new Map<string, StoredDocument>();
      for await (const d of list(s)) {
        if (got.has(d.documentId)) problems.push(`stream "${s}": ${what} lists "${d.documentId}" twice`);
        got.set(d.documentId, d);
        listed++;
      }
      for (const [id, texts] of model) {
        const d = got.get(id);
        const want = fingerprintModel.get(s)?.get(id);
        if (!d) problems.push(`stream "${s}": ${what} does not list stored document "${id}"`);
        else {
          if (d.chunks !== texts.length)
            problems.push(`stream "${s}": ${what} says "${id}" has ${d.chunks} chunk(s); it has ${texts.length}`);
          if (show(d.fingerprint) !== show(want))
            problems.push(`stream "${s}": ${what} gives "${id}" fingerprint ${show(d.fingerprint)}, expected ${show(want)}`);
        }
      }
      const extra = [...got.keys()].filter((id) => !model.has(id)).sort();
      if (extra.length) problems.push(`stream "${s}": ${what} lists ${extra.map((i) => `"${i}"`).join(', ')}, which are not stored`);
    }
    return { problems, listed };
  }

  /**
   * A destination with capabilities.sourceDigests gives back the `source` written with a document
   * from fingerprints() and its listing, and stores the new one a metadata-only DOCUMENT carries (how
   * the engine stores the digests of documents written before them); a document without one has none.
   */
  async function sourceStored(): Promise<void> {
    const check = SOURCE_DIGEST_CHECKS[0];
    if (!kit.destination.capabilities.sourceDigests)
      return report.notApplicable(check, 'the destination does not declare capabilities.sourceDigests: sources read every row in full');
    if (!hasFingerprints)
      return report.fail(check, "capabilities.sourceDigests is declared but the writer has no fingerprints(): the engine can't use it");
    if (!modes.includes('append_dedup'))
      return report.notApplicable(check, 'source digests are used in append_dedup, which the destination does not support');
    const s = name('append_dedup');
    const problems: string[] = [];
    const ids = ['fp-src', 'fp-nosrc'];
    // Each listing as (document id, source) pairs.
    const listings: [string, ((stream: string) => AsyncIterable<[string, string | undefined]>) | undefined][] = [
      [
        'documents()',
        kit.destination.documents &&
          async function* (st: string) {
            for await (const d of kit.destination.documents!(kit.config, kit.ctx, st)) yield [d.documentId, d.fingerprint?.source];
          },
      ],
      [
        'documentBatches()',
        kit.destination.documentBatches &&
          async function* (st: string) {
            for await (const page of kit.destination.documentBatches!(kit.config, kit.ctx, st))
              for (const d of page) yield [d.documentId, d.fingerprint?.source];
          },
      ],
      [
        'documentSources()',
        kit.destination.documentSources &&
          async function* (st: string) {
            for await (const page of kit.destination.documentSources!(kit.config, kit.ctx, st))
              for (const d of page) yield [d.documentId, d.source];
          },
      ],
    ];
    const compareSources = async (want: Record<string, string | undefined>, when: string) => {
      const writer = await kit.openWriter(['append_dedup']);
      try {
        const got = await writer.fingerprints!(s, ids);
        for (const id of ids)
          if (got.get(id)?.source !== want[id])
            problems.push(
              `${when}: fingerprints() gives "${id}" source ${JSON.stringify(got.get(id)?.source)}, expected ${JSON.stringify(want[id])}`,
            );
      } finally {
        await writer.close();
      }
      for (const [what, list] of listings) {
        if (!list) continue;
        const seen = new Map<string, string | undefined>();
        for await (const [id, source] of list(s)) if (id in want) seen.set(id, source);
        for (const id of ids)
          if (!seen.has(id)) problems.push(`${when}: ${what} does not list "${id}"`);
          else if (seen.get(id) !== want[id])
            problems.push(`${when}: ${what} gives "${id}" source ${JSON.stringify(seen.get(id))}, expected ${JSON.stringify(want[id])}`);
      }
    };
    try {
      const texts = ['source digest zero', 'source digest one'];
      const first = { ...fp('S1'), source: '0123456789abcdef:digest-one' };
      await send('append_dedup', [
        kit.doc(s, 'fp-src', texts, { fingerprint: first }),
        kit.doc(s, 'fp-nosrc', ['no source digest'], { fingerprint: fp('S2') }),
        kit.state(),
      ]);
      await compareSources({ 'fp-src': first.source, 'fp-nosrc': undefined }, 'after DOCUMENTs with and without a source');
      const second = { ...first, source: '0123456789abcdef:digest-two' };
      await send('append_dedup', [kit.doc(s, 'fp-src', texts, { fingerprint: second, metadataOnly: true }), kit.state()]);
      await compareSources({ 'fp-src': second.source, 'fp-nosrc': undefined }, 'after a metadata-only DOCUMENT with a new source');
      const listed = listings.filter(([, l]) => l).map(([w]) => w);
      report.result(check, problems, `fingerprints()${listed.length ? ` and ${listed.join(', ')}` : ''} give the stored source back`);
    } catch (err) {
      report.fail(check, describeFailure(err));
    }
  }

  /** documents() lists exactly the stored documents of every test stream, with chunk counts and fingerprints. */
  async function documentsListed(): Promise<void> {
    const check = 'fingerprints.documents-listed';
    const documents = kit.destination.documents?.bind(kit.destination);
    if (!documents) {
      if (hasFingerprints)
        report.skip(
          check,
          'the writer keeps fingerprints but the destination has no documents(): deletion detection and `sluice verify` need it',
        );
      else report.notApplicable(check, 'the destination has neither fingerprints() nor documents()');
      return;
    }
    try {
      const { problems, listed } = await listingProblems('documents()', (s) => documents(kit.config, kit.ctx, s));
      report.result(check, problems, `${listed} documents in ${kit.expected.size} streams`);
    } catch (err) {
      report.fail(check, `documents() failed: ${describeFailure(err)}`);
    }
  }

  /**
   * documentBatches() (the deletion sweep's listing where a destination has it) lists the same
   * documents as documents() must: the sweep deletes what it does not list.
   */
  async function documentBatchesListed(): Promise<void> {
    const check = 'fingerprints.document-batches-listed';
    const batches = kit.destination.documentBatches?.bind(kit.destination);
    if (!batches) {
      report.notApplicable(check, 'the destination has no documentBatches(): the sweep lists through documents()');
      return;
    }
    const flattened = async function* (s: string): AsyncGenerator<StoredDocument> {
      for await (const page of batches(kit.config, kit.ctx, s)) yield* page;
    };
    try {
      const { problems, listed } = await listingProblems('documentBatches()', flattened);
      report.result(check, problems, `${listed} documents in ${kit.expected.size} streams`);
    } catch (err) {
      report.fail(check, `documentBatches() failed: ${describeFailure(err)}`);
    }
  }
}

/** A stream's chunks with their metadata, in a stable order, for an exact comparison. */
function canonical(chunks: StoredChunk[]): string {
  const rows = chunks.map((c) => JSON.stringify([c.documentId, c.chunkIndex, c.content ?? null, sortKeys(c.metadata ?? null)])).sort();
  return `[${rows.join(',')}]`;
}

function sortKeys(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  return Object.fromEntries(
    Object.keys(v as object)
      .sort()
      .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
  );
}
