// The unchanged stage in isolation, where the timing of look-ups and commits can be forced: a
// look-up that read the destination before a commit is never decided against that stale value,
// and what this run wrote is forgotten once a look-up started after its commit has been decided.
import { describe, expect, it } from 'vitest';
import type { DestinationMessage, DocumentFingerprint } from '../../src/protocol/connector.ts';
import type { StateMessage } from '../../src/protocol/messages.ts';
import { UnchangedStage, listedFingerprint, withListedFingerprint } from '../../src/engine/unchanged.ts';
import { readdirSync } from 'node:fs';
import { tempDir } from '../helpers/cli.ts';

const fp = (content: string, metadata = 'm'): DocumentFingerprint => ({ content, metadata });
const doc = (id: string, f: DocumentFingerprint, stream = 's'): DestinationMessage => ({
  type: 'DOCUMENT',
  stream,
  documentId: id,
  chunks: [{ id: `${id}#0`, documentId: id, chunkIndex: 0, content: f.content, contentHash: f.content, metadata: {} }],
  record: {},
  fingerprint: f,
});
const state = (n: number): Extract<DestinationMessage, { type: 'STATE' }> => ({
  type: 'STATE',
  state: { type: 'STREAM', stream: { stream_descriptor: { name: 's' }, stream_state: { n } } } as StateMessage,
  connection: { streams: { s: { n } } },
});

/** An input the test feeds one message at a time. */
function feed() {
  const queue: DestinationMessage[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  return {
    push(...m: DestinationMessage[]) {
      queue.push(...m);
      wake?.();
    },
    end() {
      ended = true;
      wake?.();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (queue.length) yield queue.shift()!;
        else if (ended) return;
        else await new Promise<void>((r) => (wake = r));
      }
    },
  };
}

/** A destination whose look-ups read a snapshot when called and answer when the test says so. */
function destination(initial: Record<string, DocumentFingerprint>) {
  const stored = new Map(Object.entries(initial));
  const gates: Array<() => void> = [];
  let calls = 0;
  return {
    stored,
    get calls() {
      return calls;
    },
    /** Calls from this one on wait for release(). */
    holdFrom: Infinity,
    release() {
      gates.splice(0).forEach((g) => g());
    },
    lookedUp: [] as string[],
    async fingerprints(_stream: string, ids: string[]) {
      calls++;
      this.lookedUp.push(...ids);
      const snapshot = new Map(ids.filter((id) => stored.has(id)).map((id) => [id, stored.get(id)!]));
      if (calls >= this.holdFrom) await new Promise<void>((r) => gates.push(r));
      return snapshot;
    },
  };
}

const describeOut = (m: DestinationMessage) =>
  m.type === 'DOCUMENT'
    ? `DOCUMENT ${m.documentId} ${m.fingerprint!.content}${m.metadataOnly ? ' metadata-only' : ''}`
    : m.type === 'STATE'
      ? `STATE`
      : `${m.type} ${'documentId' in m ? m.documentId : ''}`.trim();

describe('UnchangedStage', () => {
  it('a look-up that read the destination before a commit is decided against this run’s own write, not the stale value', async () => {
    const dest = destination({ x: fp('A') });
    const stats: Record<string, { records_unchanged?: number }> = { s: {} };
    const stage = new UnchangedStage({ writer: dest, modes: new Map([['s', 'append_dedup']]), stats, where: 'test', lingerMs: 5 });
    const input = feed();
    const out = stage.run(input)[Symbol.asyncIterator]();
    const s1 = state(1);
    input.push(doc('x', fp('B')), s1, doc('x', fp('A')));
    input.end();
    expect(describeOut((await out.next()).value)).toBe('DOCUMENT x B');
    expect(describeOut((await out.next()).value)).toBe('STATE');
    // The next batch's look-up starts now, before the writer has committed B: it reads x = A and
    // answers only when the test releases it.
    dest.holdFrom = 2;
    const next = out.next();
    await new Promise((r) => setTimeout(r, 30));
    expect(dest.calls).toBe(2);
    // Meanwhile the writer commits B and acknowledges the STATE after it.
    dest.stored.set('x', fp('B'));
    stage.committed(s1.state);
    dest.release();
    // Compared with the stale A it would be skipped; compared with B (this run's write) it is written.
    expect(describeOut((await next).value)).toBe('DOCUMENT x A');
    expect((await out.next()).done).toBe(true);
    expect(stats.s.records_unchanged ?? 0).toBe(0);
  });

  it('forgets a write once a look-up started after its commit is decided; until then an identical version is skipped', async () => {
    const dest = destination({});
    const stats: Record<string, { records_unchanged?: number }> = { s: {} };
    const stage = new UnchangedStage({ writer: dest, modes: new Map([['s', 'append_dedup']]), stats, where: 'test', lingerMs: 5 });
    const input = feed();
    const out = stage.run(input)[Symbol.asyncIterator]();
    const s1 = state(1);
    input.push(doc('x', fp('A')), doc('y', fp('C')), s1);
    const first = [(await out.next()).value, (await out.next()).value, (await out.next()).value].map(describeOut);
    expect(first).toEqual(['DOCUMENT x A', 'DOCUMENT y C', 'STATE']);
    expect(stage.pending).toBe(2);
    // Not committed yet: the same version again is skipped (the pending write holds it).
    input.push(doc('x', fp('A')));
    input.push(state(2));
    expect(describeOut((await out.next()).value)).toBe('STATE');
    expect(stats.s.records_unchanged).toBe(1);
    // The writer commits: x and y are in the destination.
    dest.stored.set('x', fp('A'));
    dest.stored.set('y', fp('C'));
    stage.committed(s1.state);
    input.push(doc('y', fp('C', 'other')));
    input.end();
    expect(describeOut((await out.next()).value)).toBe('DOCUMENT y C metadata-only');
    expect(stage.pending).toBe(1); // y again (this run's newest write); x forgotten
    expect((await out.next()).done).toBe(true);
  });

  it('overwrite: unchanged documents become KEEP, metadata changes metadata-only, relative to the live generation', async () => {
    const dest = destination({ a: fp('A'), b: fp('B'), c: fp('C') });
    const stats: Record<string, { records_unchanged?: number; records_metadata_updated?: number }> = { s: {} };
    const stage = new UnchangedStage({ writer: dest, modes: new Map([['s', 'overwrite']]), stats, where: 'test', lingerMs: 5 });
    const input = feed();
    input.push(doc('a', fp('A')), doc('b', fp('B', 'new')), doc('c', fp('C2')), doc('d', fp('D')), {
      type: 'STREAM_COMPLETE',
      stream: 's',
    });
    input.end();
    const got: string[] = [];
    for await (const m of stage.run(input)) got.push(describeOut(m));
    expect(got).toEqual(['KEEP a', 'DOCUMENT b B metadata-only', 'DOCUMENT c C2', 'DOCUMENT d D', 'STREAM_COMPLETE']);
    expect(stats.s).toEqual({ records_unchanged: 1, records_metadata_updated: 1 });
    expect(dest.calls).toBe(1); // one look-up for the batch
    expect(stage.pending).toBe(0); // overwrite keeps no memory of its writes
  });

  it('overwrite: a document sent again in the same generation is compared with what was sent, never KEEP after it', async () => {
    for (const workDir of [undefined, tempDir('sluice-unchanged-')]) {
      const dest = destination({ a: fp('A'), b: fp('B') });
      const stats: Record<string, { records_unchanged?: number; records_metadata_updated?: number }> = { s: {} };
      const stage = new UnchangedStage({ writer: dest, modes: new Map([['s', 'overwrite']]), stats, where: 'test', lingerMs: 5, workDir });
      const input = feed();
      input.push(doc('a', fp('B')), doc('a', fp('A')), doc('a', fp('A')), doc('b', fp('B')), {
        type: 'DELETE',
        stream: 's',
        documentId: 'b',
      });
      input.push(state(1), doc('b', fp('B')), doc('b', fp('B', 'new')), { type: 'STREAM_COMPLETE', stream: 's' });
      input.end();
      const got: string[] = [];
      for await (const m of stage.run(input)) got.push(describeOut(m));
      expect(got).toEqual([
        'DOCUMENT a B',
        'DOCUMENT a A', // not KEEP: the new generation holds B for it now
        'KEEP b',
        'DELETE b',
        'STATE',
        'DOCUMENT b B', // after its deletion in this generation: in full
        'DOCUMENT b B', // other metadata than sent: in full, not metadata-only
        'STREAM_COMPLETE',
      ]);
      expect(stats.s).toEqual({ records_unchanged: 2 });
      if (workDir) expect(readdirSync(workDir)).toEqual([]); // the scratch database is removed
    }
  });

  it('a document carrying its listed fingerprint (the sweep’s listing) is decided on it, without a look-up', async () => {
    // The destination's answers differ from the listed ones, so which was used shows in the output.
    const dest = destination({ same: fp('X'), meta: fp('X'), changed: fp('X'), gone: fp('X'), asked: fp('A') });
    const stats: Record<string, { records_unchanged?: number; records_metadata_updated?: number }> = { s: {} };
    const stage = new UnchangedStage({ writer: dest, modes: new Map([['s', 'append_dedup']]), stats, where: 'test', lingerMs: 5 });
    const listed = (id: string, f: DocumentFingerprint, l: DocumentFingerprint | null) => {
      const m = doc(id, f) as Extract<DestinationMessage, { type: 'DOCUMENT' }>;
      withListedFingerprint(m, l);
      return m;
    };
    const input = feed();
    input.push(
      listed('same', fp('A'), fp('A')),
      listed('meta', fp('A', 'new'), fp('A')),
      listed('changed', fp('B'), fp('A')),
      listed('gone', fp('A'), null), // listed without a fingerprint, or not listed: not stored
      doc('asked', fp('A')), // no listed fingerprint: looked up
    );
    input.end();
    const out: string[] = [];
    for await (const m of stage.run(input)) out.push(describeOut(m));
    expect(out).toEqual(['DOCUMENT meta A metadata-only', 'DOCUMENT changed B', 'DOCUMENT gone A']);
    expect(dest.lookedUp).toEqual(['asked']);
    expect(stats.s).toEqual({ records_unchanged: 2, records_metadata_updated: 1 });
    // A batch of listed documents only needs no look-up at all.
    const quiet = destination({});
    const again = new UnchangedStage({
      writer: quiet,
      modes: new Map([['s', 'append_dedup']]),
      stats: { s: {} },
      where: 'test',
      lingerMs: 5,
    });
    const only = feed();
    only.push(listed('same', fp('A'), fp('A')), listed('new', fp('A'), null));
    only.end();
    const out2: string[] = [];
    for await (const m of again.run(only)) out2.push(describeOut(m));
    expect(out2).toEqual(['DOCUMENT new A']);
    expect(quiet.calls).toBe(0);
  });

  it('documents that all carry a listed fingerprint are decided in small groups, without waiting for a look-up-sized batch', async () => {
    const dest = destination({});
    // A linger far beyond the test: only a group closed by its size is decided.
    const stage = new UnchangedStage({
      writer: dest,
      modes: new Map([['s', 'append_dedup']]),
      stats: { s: {} },
      where: 'test',
      lingerMs: 60_000,
    });
    const input = feed();
    const listedDoc = (i: number) => {
      const m = doc(`d${i}`, fp(`v${i}`)) as Extract<DestinationMessage, { type: 'DOCUMENT' }>;
      withListedFingerprint(m, null);
      return m;
    };
    for (let i = 0; i < 65; i++) input.push(listedDoc(i)); // the 65th closes a group of 64
    const out = stage.run(input)[Symbol.asyncIterator]();
    const first = await Promise.race([out.next(), new Promise((r) => setTimeout(() => r('still waiting'), 2000))]);
    expect(describeOut((first as IteratorResult<DestinationMessage>).value)).toBe('DOCUMENT d0 v0');
    expect(dest.calls).toBe(0);
    input.end();
    let n = 1;
    while (!(await out.next()).done) n++;
    expect(n).toBe(65);
  });

  it('cuts its groups as the plain rule would, recounting each group, over random mixes of listed and unlisted documents', async () => {
    let seed = 5;
    const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let round = 0; round < 30; round++) {
      const batchSize = 10 + Math.floor(random() * 150);
      const unlistedShare = [0, 0.005, 0.02, 0.1][round % 4];
      const items: DestinationMessage[] = [];
      for (let i = 0; i < 1000 + Math.floor(random() * 5000); i++) {
        if (random() < 0.001) {
          items.push(state(i));
          continue;
        }
        const m = doc(`d${i}`, fp(`v${i}`)) as Extract<DestinationMessage, { type: 'DOCUMENT' }>;
        if (random() >= unlistedShare) withListedFingerprint(m, random() < 0.5 ? fp(`v${i}`) : null);
        items.push(m);
      }
      // The rule written plainly: full at batchSize, or at 64 when no document in it needs a look-up.
      const unlisted = (m: DestinationMessage) => m.type === 'DOCUMENT' && listedFingerprint(m) === undefined;
      const groups: DestinationMessage[][] = [];
      let g: DestinationMessage[] = [];
      for (const m of items) {
        if (g.length >= batchSize || (g.length >= Math.min(batchSize, 64) && !g.some(unlisted))) [groups[groups.length], g] = [g, []];
        g.push(m);
        if (m.type === 'STATE') [groups[groups.length], g] = [g, []];
      }
      if (g.length) groups.push(g);
      const want = groups
        .map((group) => group.filter(unlisted).map((m) => (m as Extract<DestinationMessage, { type: 'DOCUMENT' }>).documentId))
        .filter((ids) => ids.length);

      const calls: string[][] = [];
      const writer = {
        async fingerprints(_stream: string, ids: string[]) {
          calls.push(ids);
          return new Map<string, DocumentFingerprint>();
        },
      };
      // Input in arrays of random sizes, as the sweep hands it on; a linger beyond the test.
      async function* arrays(): AsyncGenerator<DestinationMessage[]> {
        for (let i = 0; i < items.length;) {
          const size = 1 + Math.floor(random() * 300);
          yield items.slice(i, (i += size));
        }
      }
      const stage = new UnchangedStage({
        writer,
        modes: new Map([['s', 'append_dedup']]),
        stats: { s: {} },
        where: 'test',
        batchSize,
        lingerMs: 60_000,
      });
      for await (const _ of stage.runBatches(arrays()));
      // One look-up per group with a document to look up, asking for exactly that group's ones.
      expect(calls).toEqual(want);
    }
  });

  it('looks up at most batchSize documents per call, in order', async () => {
    const dest = destination({});
    const stage = new UnchangedStage({ writer: dest, modes: new Map([['s', 'append']]), stats: { s: {} }, where: 'test', batchSize: 100 });
    const input = feed();
    for (let i = 0; i < 1050; i++) input.push(doc(`d${i}`, fp(`v${i}`)));
    input.end();
    const ids: string[] = [];
    for await (const m of stage.run(input)) if (m.type === 'DOCUMENT') ids.push(m.documentId);
    expect(ids).toEqual(Array.from({ length: 1050 }, (_, i) => `d${i}`));
    expect(dest.calls).toBe(11);
  });
});
