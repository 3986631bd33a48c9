// Upsert throughput into the Qdrant fixture at 384 dimensions: the destination's batched,
// concurrent writer vs a naive one-request-per-record loop through the same client, same run.
// Measured on loopback (the fixture validates every request against Qdrant's OpenAPI, which costs
// the same per point either way) and with 5 ms of simulated network latency per request.
import { QdrantClient } from '@qdrant/js-client-rest';
import destination from '../../connectors/destination-qdrant/index.ts';
import { doc, drain, qdrantConfig, state, streams, testContext } from '../../connectors/destination-qdrant/test-helpers.ts';
import { chunkUuid } from '../../src/protocol/identity.ts';
import { startQdrantFixture } from '../fixtures/qdrant-server.ts';

const DIMS = 384;

export default async function bench(): Promise<Record<string, unknown>> {
  const report: Record<string, unknown> = { dimensions: DIMS };
  for (const latencyMs of [0, 5]) {
    const fx = await startQdrantFixture();
    try {
      fx.setFaults(latencyMs ? { latencyMs } : undefined);
      const batchedPoints = latencyMs ? 3000 : 4000;
      const naiveRecords = latencyMs ? 200 : 400;

      // Batched: the destination writer (batch_points 256, 4 requests in flight, wait: true).
      const config = qdrantConfig(fx.url, 'bench');
      const writer = await destination.open(config, testContext(), { streams: streams('append', 'b'), dimensions: DIMS });
      const msgs = Array.from({ length: batchedPoints }, (_, i) => doc('b', `r${i}`, [`record ${i}`], { n: i }, DIMS));
      const t0 = performance.now();
      await drain(writer, [...msgs, state('b', 1)]);
      const batchedSec = (performance.now() - t0) / 1000;
      if (fx.pointsOf('bench').length !== batchedPoints) throw new Error('batched run lost points');

      // Same, in append_dedup mode: each document's stale-chunk check (count, delete if any) rides along.
      const dedupWriter = await destination.open(qdrantConfig(fx.url, 'bench_dedup'), testContext(), {
        streams: streams('append_dedup', 'b'),
        dimensions: DIMS,
      });
      const t2 = performance.now();
      await drain(dedupWriter, [...msgs, state('b', 1)]);
      const dedupSec = (performance.now() - t2) / 1000;
      if (fx.pointsOf('bench_dedup').length !== batchedPoints) throw new Error('append_dedup run lost points');

      // Naive: one upsert request per record, awaited one after another, same client library.
      const client = new QdrantClient({ url: fx.url, checkCompatibility: false });
      const naive = Array.from({ length: naiveRecords }, (_, i) => doc('b', `n${i}`, [`naive ${i}`], { n: i }, DIMS));
      const t1 = performance.now();
      for (const m of naive) {
        if (m.type !== 'DOCUMENT') continue;
        const c = m.chunks[0];
        await client.upsert('bench', {
          wait: true,
          points: [
            {
              id: chunkUuid('b', m.documentId, 0),
              vector: Array.from(c.embedding!),
              payload: { document_id: m.documentId, chunk_index: 0, stream: 'b', content: c.content, n: c.metadata.n },
            },
          ],
        });
      }
      const naiveSec = (performance.now() - t1) / 1000;
      if (fx.violations.length) throw new Error(`fixture violations: ${fx.violations[0]}`);

      const batchedRate = Math.round(batchedPoints / batchedSec);
      const naiveRate = Math.round(naiveRecords / naiveSec);
      report[latencyMs ? `with_${latencyMs}ms_latency` : 'loopback'] = {
        batched_points: batchedPoints,
        batched_points_per_s: batchedRate,
        batched_append_dedup_points_per_s: Math.round(batchedPoints / dedupSec),
        naive_points: naiveRecords,
        naive_points_per_s: naiveRate,
        speedup: Number((batchedRate / naiveRate).toFixed(1)),
        target_batched_faster_5x: batchedRate >= 5 * naiveRate,
      };
    } finally {
      await fx.close();
    }
  }
  return report;
}
