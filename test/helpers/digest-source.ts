// A custom source for engine tests of source digests (docs/fingerprints.md, "Source digests"): it
// reads rows `{ id, ... }` from a JSON file into streams `items` and `others` (primary key `id`),
// has `capabilities.sourceDigests` (a row's digest: sha256 of its JSON) and does what the protocol
// asks of such a source. It appends what it was offered and what it emitted to a log file (one JSON
// line per stream) so a test can check the engine's side. digest-source-plain.ts: the same without
// the capability.
import { createHash } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { defineSource, message, z, type AirbyteMessage, type ConfiguredCatalog, type ConnectorContext } from 'sluice/cdk';

const Config = z.strictObject({
  rows: z.string().min(1),
  log: z.string().min(1),
  /** Throw after this many RECORDs of a stream (an interrupted read). */
  fail_after: z.number().int().min(0).optional(),
  /** Never ask ctx.storedDigests (a source that has the capability but reads this run without digests). */
  ignore_digests: z.boolean().default(false),
});

/** What the source logs per stream it read. */
export interface DigestSourceLog {
  stream: string;
  /** Whether the read got ctx.storedDigests at all. */
  offered: boolean;
  /** What forStream resolved: null for undefined. */
  check: { skipping: boolean } | null;
  /** RECORDs emitted, and of them with a digest. */
  emitted: number;
  withDigest: number;
  /** Rows check.unchanged accepted. */
  accepted: number;
}

export const digestOf = (row: Record<string, unknown>) => createHash('sha256').update(JSON.stringify(row)).digest('hex');

export default defineSource({
  spec: { name: 'digest-rows', title: 'Rows with digests (tests)', config: Config },
  capabilities: { sourceDigests: true },
  async discover() {
    const schema = { type: 'object', properties: { id: { type: 'integer' }, title: { type: 'string' }, body: { type: 'string' } } };
    return {
      streams: ['items', 'others'].map((name) => ({
        name,
        json_schema: schema,
        supported_sync_modes: ['full_refresh' as const],
        source_defined_primary_key: [['id']],
      })),
    };
  },
  read(config, catalog, _state, ctx) {
    return rows(config, catalog, ctx);
  },
});

async function* rows(config: z.infer<typeof Config>, catalog: ConfiguredCatalog, ctx: ConnectorContext): AsyncGenerator<AirbyteMessage> {
  const all = JSON.parse(readFileSync(resolve(ctx.baseDir, config.rows), 'utf8')) as { id: number }[];
  for (const cs of catalog.streams) {
    const stream = cs.stream.name;
    const check = config.ignore_digests ? undefined : await ctx.storedDigests?.forStream(stream);
    const log: DigestSourceLog = {
      stream,
      offered: ctx.storedDigests !== undefined,
      check: check ? { skipping: check.skipping } : null,
      emitted: 0,
      withDigest: 0,
      accepted: 0,
    };
    try {
      for (const row of all) {
        const digest = digestOf(row);
        if (check?.skipping && check.unchanged({ id: row.id }, digest)) {
          log.accepted++;
          continue;
        }
        if (config.fail_after !== undefined && log.emitted >= config.fail_after) throw new Error('the read was cut off');
        yield message.record(stream, row, Date.now(), check ? digest : undefined);
        log.emitted++;
        if (check) log.withDigest++;
      }
    } finally {
      appendFileSync(resolve(ctx.baseDir, config.log), JSON.stringify(log) + '\n');
    }
    yield message.streamStatus(stream, 'COMPLETE');
  }
}
