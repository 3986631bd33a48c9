// Upsert throughput into the Pinecone fixture at 384 dimensions: the destination's batched,
// concurrent writer vs a naive one-request-per-record loop through the same client, same run.
// Measured on loopback (the fixture validates every request against Pinecone's OpenAPI, which costs
// the same per vector either way) and with 5 ms of simulated latency per request. The append_dedup
// figure includes the per-document prefix listing that finds stale chunks.
import { Pinecone } from '@pinecone-database/pinecone';
import destination from '../../connectors/destination-pinecone/index.ts';
import { PineconeConfigSchema } from '../../connectors/destination-pinecone/config.ts';
import { captureContext, documentMessage, drain, stateMessage } from '../../connectors/destination-pinecone/test-helpers.ts';
import type { DestinationMessage } from '../../src/protocol/connector.ts';
import type { DestinationSyncMode } from '../../src/protocol/messages.ts';
import { startPineconeFixture } from '../fixtures/pinecone-server.ts';

const DIMS = 384;

export default async function bench(): Promise<Record<string, unknown>> {
  const report: Record<string, unknown> = { dimensions: DIMS, writer: 'batch_size 250, concurrency 4' };
  for (const latencyMs of [0, 5]) {
    const fx = await startPineconeFixture();
    try {
      await fx.createIndex('bench', DIMS);
      fx.setFaults(latencyMs ? { latencyMs } : {});
      const batchedRecords = latencyMs ? 4000 : 6000;
      const naiveRecords = latencyMs ? 300 : 600;
      const config = PineconeConfigSchema.parse({ api_key: fx.apiKey, index: 'bench', controller_host: fx.controllerUrl });
      const messages = (prefix: string, n: number): DestinationMessage[] =>
        Array.from({ length: n }, (_, i) => documentMessage('b', `${prefix}${i}`, [`record ${prefix}${i}`], DIMS, { n: i }));

      const timeWriter = async (mode: DestinationSyncMode, prefix: string, n: number) => {
        const msgs = messages(prefix, n);
        const writer = await destination.open(config, captureContext(), {
          streams: [{ name: 'b', destinationSyncMode: mode, primaryKey: [['id']] }],
          dimensions: DIMS,
        });
        const t0 = performance.now();
        await drain(writer, [...msgs, stateMessage('b', 1)]);
        return (performance.now() - t0) / 1000;
      };
      const appendSec = await timeWriter('append', 'a', batchedRecords);
      const dedupRecords = Math.round(batchedRecords / 2);
      const dedupSec = await timeWriter('append_dedup', 'd', dedupRecords);
      if (fx.ids('bench', 'b').length !== batchedRecords + dedupRecords) throw new Error('batched runs lost vectors');

      // Naive: one upsert request per record, awaited one after another, same client library.
      const pc = new Pinecone({ apiKey: fx.apiKey, controllerHostUrl: fx.controllerUrl, maxRetries: 0 });
      const ns = pc.index({ host: `http://${fx.indexes.get('bench')!.host}` }).namespace('b');
      const naive = messages('n', naiveRecords);
      const t1 = performance.now();
      for (const m of naive) {
        if (m.type !== 'DOCUMENT') continue;
        const c = m.chunks[0];
        await ns.upsert({
          records: [
            {
              id: `${m.documentId}#0`,
              values: Array.from(c.embedding!),
              metadata: { stream: 'b', document_id: m.documentId, chunk_index: 0, content: c.content, n: c.metadata.n as number },
            },
          ],
        });
      }
      const naiveSec = (performance.now() - t1) / 1000;
      if (fx.violations.length) throw new Error(`fixture violations: ${fx.violations[0]}`);

      const appendRate = Math.round(batchedRecords / appendSec);
      const dedupRate = Math.round(dedupRecords / dedupSec);
      const naiveRate = Math.round(naiveRecords / naiveSec);
      report[latencyMs ? `with_${latencyMs}ms_latency` : 'loopback'] = {
        batched_append_points: batchedRecords,
        batched_append_points_per_s: appendRate,
        batched_append_dedup_points: dedupRecords,
        batched_append_dedup_points_per_s: dedupRate,
        naive_points: naiveRecords,
        naive_points_per_s: naiveRate,
        speedup_append: Number((appendRate / naiveRate).toFixed(1)),
        speedup_append_dedup: Number((dedupRate / naiveRate).toFixed(1)),
        target_batched_faster_5x: appendRate >= 5 * naiveRate,
      };
    } finally {
      await fx.close();
    }
  }
  return report;
}
