// A custom source for engine tests that replays a script (a JSON file): records, deletions and
// checkpoints of one stream `items` (primary key `id`), in exactly the order written. Its state is
// the position in the script, so a run killed mid-way resumes after the last committed checkpoint.
// Use it from a pipeline: `source: { type: <relative path to this file>, config: { script: ./script.json } }`.
import { appendFileSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  batchedMessages,
  defineSource,
  message,
  z,
  type AirbyteMessage,
  type ConfiguredCatalog,
  type ConnectorContext,
  type SourceState,
} from 'sluice/cdk';

/** `{ id, ... }` a record; `{ delete: id }` a deletion; `{ state: true }` a checkpoint (the position after it). */
export type ScriptStep = { id: number; [field: string]: unknown } | { delete: number } | { state: true };

const Config = z.strictObject({
  script: z.string().min(1),
  /** Pause after every record (ms), so a test can interrupt the read mid-way. */
  delay_ms: z.number().min(0).default(0),
  /** A file that gets a line per record read (how far a run is, for a test that interrupts it). */
  progress_file: z.string().min(1).optional(),
  /** Hand the messages over in arrays of this many (the kit's batchedMessages capability). */
  batch: z.number().int().min(1).optional(),
});

/** A generator's messages in arrays of `size` (the last one shorter). */
async function* inArrays(messages: AsyncIterable<AirbyteMessage>, size: number): AsyncGenerator<AirbyteMessage[]> {
  let batch: AirbyteMessage[] = [];
  for await (const m of messages) {
    batch.push(m);
    if (batch.length >= size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length) yield batch;
}

export default defineSource({
  spec: { name: 'scripted', title: 'Scripted source (tests)', config: Config },
  capabilities: { sourceDefinedCursor: true },
  async discover() {
    return {
      streams: [
        {
          name: 'items',
          json_schema: { type: 'object', properties: { id: { type: 'integer' }, title: { type: 'string' }, body: { type: 'string' } } },
          supported_sync_modes: ['full_refresh', 'incremental'],
          source_defined_cursor: true,
          source_defined_primary_key: [['id']],
        },
      ],
    };
  },
  read(config, catalog, state, ctx) {
    const messages = replay(config, catalog, state, ctx);
    return config.batch ? batchedMessages(inArrays(messages, config.batch)) : messages;
  },
});

async function* replay(
  config: z.infer<typeof Config>,
  catalog: ConfiguredCatalog,
  state: SourceState | undefined,
  ctx: ConnectorContext,
): AsyncGenerator<AirbyteMessage> {
  const steps = JSON.parse(readFileSync(resolve(ctx.baseDir, config.script), 'utf8')) as ScriptStep[];
  const cs = catalog.streams.find((s) => s.stream.name === 'items');
  if (!cs) return;
  const saved = cs.sync_mode === 'incremental' ? (state?.streams.items as { position?: number } | undefined) : undefined;
  for (let i = saved?.position ?? 0; i < steps.length; i++) {
    if (ctx.signal.aborted) return;
    const step = steps[i];
    if ('state' in step) yield message.streamState('items', { position: i + 1 });
    else if ('delete' in step) yield message.deletion('items', { id: step.delete });
    else {
      yield message.record('items', step);
      if (config.progress_file) appendFileSync(resolve(ctx.baseDir, config.progress_file), `${step.id}\n`);
      if (config.delay_ms) await sleep(config.delay_ms);
    }
  }
  yield message.streamState('items', { position: steps.length });
  yield message.streamStatus('items', 'COMPLETE');
}
