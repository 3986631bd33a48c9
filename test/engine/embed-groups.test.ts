// How the sync cuts documents into embedding groups (embedGroupLimits, through groupItems as the
// embed stage uses it): by chunks, by stream, and by item count for documents without chunks.
import { describe, expect, it } from 'vitest';
import type { DestinationMessage } from '../../src/protocol/connector.ts';
import { embedGroupLimits } from '../../src/engine/sync.ts';
import { groupItems } from '../../src/engine/flow.ts';

type Doc = Extract<DestinationMessage, { type: 'DOCUMENT' }>;
const doc = (id: string, chunks: number, opts: { stream?: string; metadataOnly?: boolean } = {}): Doc => ({
  type: 'DOCUMENT',
  stream: opts.stream ?? 's',
  documentId: id,
  chunks: Array.from({ length: chunks }, (_, i) => ({
    id: `${id}#${i}`,
    documentId: id,
    chunkIndex: i,
    content: 'x',
    contentHash: 'x',
    metadata: {},
  })),
  record: {},
  ...(opts.metadataOnly ? { metadataOnly: true } : {}),
});
const state = (): DestinationMessage => ({ type: 'STATE', state: { type: 'GLOBAL' } as never, connection: { streams: {} } });

async function groupsOf(items: DestinationMessage[], batchSize: number): Promise<DestinationMessage[][]> {
  async function* input() {
    yield* items;
  }
  const out: DestinationMessage[][] = [];
  for await (const g of groupItems(input(), {
    ...embedGroupLimits(batchSize),
    closesGroup: (m) => m.type === 'STATE',
    lingerMs: 1000,
  }))
    out.push(g);
  return out;
}

/** The rule written plainly, recounting the whole group for each item. */
function naiveGroups(items: DestinationMessage[], batchSize: number): DestinationMessage[][] {
  const chunksOf = (g: DestinationMessage[]) => g.reduce((n, m) => n + (m.type === 'DOCUMENT' && !m.metadataOnly ? m.chunks.length : 0), 0);
  const streamOf = (g: DestinationMessage[]) => g.find((m): m is Doc => m.type === 'DOCUMENT')?.stream;
  const out: DestinationMessage[][] = [];
  let g: DestinationMessage[] = [];
  for (const m of items) {
    const full =
      g.length > 0 &&
      m.type === 'DOCUMENT' &&
      (g.length >= 2000 ||
        chunksOf(g) + (m.metadataOnly ? 0 : m.chunks.length) > batchSize ||
        (streamOf(g) !== undefined && streamOf(g) !== m.stream));
    if (full) [out[out.length], g] = [g, []];
    g.push(m);
    if (m.type === 'STATE') [out[out.length], g] = [g, []];
  }
  if (g.length) out.push(g);
  return out;
}

const ids = (gs: DestinationMessage[][]) => gs.map((g) => g.map((m) => (m.type === 'DOCUMENT' ? m.documentId : m.type)));

describe('embedding groups', () => {
  it('close before the batch size in chunks would pass, and at a change of stream', async () => {
    const items = [doc('a', 3), doc('b', 2), doc('c', 1), doc('d', 4, { stream: 't' }), doc('e', 1, { stream: 't' })];
    expect(ids(await groupsOf(items, 5))).toEqual([['a', 'b'], ['c'], ['d', 'e']]);
  });

  it('hold at most 2,000 documents without chunks to embed (metadata-only), not a whole page', async () => {
    const items = Array.from({ length: 5001 }, (_, i) => doc(`m${i}`, 1, { metadataOnly: true }));
    const groups = await groupsOf(items, 100);
    expect(groups.map((g) => g.length)).toEqual([2000, 2000, 1001]);
  });

  it('are cut exactly as recounting each group would cut them, over random inputs', async () => {
    let seed = 7;
    const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let round = 0; round < 30; round++) {
      const items: DestinationMessage[] = [];
      const n = 200 + Math.floor(random() * 3000);
      for (let i = 0; i < n; i++) {
        const r = random();
        if (r < 0.02) items.push(state());
        else items.push(doc(`d${i}`, Math.floor(random() * 4), { stream: random() < 0.05 ? 't' : 's', metadataOnly: random() < 0.6 }));
      }
      const batchSize = 1 + Math.floor(random() * 50);
      expect(ids(await groupsOf(items, batchSize))).toEqual(ids(naiveGroups(items, batchSize)));
    }
  });
});
