// Checks that run before anything is written (`validate`, `check`, and every sync): the
// processing fields a pipeline names must exist in the streams' schemas, and a run in which most
// records yield no text stops before it deletes or replaces anything (a typo in text_fields must
// never empty an index with exit 0).
import type { ConfigProblem, LoadedConnection } from '../config/load.ts';
import { closest } from '../config/suggest.ts';
import type { ConnectorContext, DestinationMessage } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import type { ConfiguredCatalog } from '../protocol/messages.ts';
import { formatPath } from '../config/load.ts';
import { configureCatalog } from './catalog.ts';

type JsonSchema = { properties?: Record<string, JsonSchema>; additionalProperties?: unknown; items?: JsonSchema; type?: unknown };

export const formatProblem = (p: ConfigProblem) => `${formatPath(p.path)}: ${p.message}`;

/** The catalog a sync would run, or nothing when the source cannot be discovered now (check reports why). */
export async function plannedCatalog(
  conn: LoadedConnection,
  ctx: ConnectorContext,
): Promise<{ catalog?: ConfiguredCatalog; problems?: ConfigProblem[] }> {
  let discovered;
  try {
    discovered = await conn.source.discover(conn.sourceConfig, ctx);
  } catch {
    return {};
  }
  try {
    return { catalog: configureCatalog(conn, discovered, {}) };
  } catch (err) {
    const e = err as SluiceError;
    return { problems: [{ path: [e.where ?? `connections[${conn.index}]`], message: `${e.message}${e.hint ? ` (${e.hint})` : ''}` }] };
  }
}

/**
 * Field names a path can take at each level, or undefined where the schema does not say (an open
 * object: anything may be there, so nothing can be called a typo).
 */
function fieldsOf(schema: JsonSchema | undefined): string[] | undefined {
  if (!schema?.properties || !Object.keys(schema.properties).length || schema.additionalProperties === true) return undefined;
  return Object.keys(schema.properties);
}

/** Whether `path` (dot path, `*` for every element) can exist in `schema`; otherwise the missing segment and its siblings. */
function lookup(schema: JsonSchema | undefined, path: string): { ok: true } | { ok: false; missing: string; known: string[] } {
  let current: JsonSchema | undefined = schema;
  for (const part of path.split('.')) {
    if (!current) return { ok: true };
    if (part === '*') {
      current = current.items ?? (current.additionalProperties as JsonSchema | undefined);
      continue;
    }
    const known = fieldsOf(current);
    if (!known) return { ok: true };
    if (!known.includes(part)) return { ok: false, missing: part, known };
    current = current.properties![part];
  }
  return { ok: true };
}

const PLACEHOLDER = /\{\{\s*([^}\s]+)\s*\}\}/g;

/** Unknown `text_fields`, `metadata_fields` and `text_template` placeholders, by YAML path. */
export function processingFieldProblems(
  conn: LoadedConnection,
  catalog: ConfiguredCatalog,
  /** Columns whose drop the connection's `schema_changes: propagate` accepted this run (not typos). */
  acceptedDrops: ReadonlySet<string> = new Set(),
): ConfigProblem[] {
  const processing = conn.config.processing;
  if (!processing || !catalog.streams.length) return [];
  const refs: Array<{ path: (string | number)[]; field: string; placeholder?: boolean }> = [];
  const base = ['connections', conn.index, 'processing'];
  processing.text_fields?.forEach((f, i) => refs.push({ path: [...base, 'text_fields', i], field: f }));
  processing.metadata_fields?.forEach((f, i) =>
    refs.push({
      path: [...base, 'metadata_fields', i, ...(typeof f === 'string' ? [] : ['field'])],
      field: typeof f === 'string' ? f : f.field,
    }),
  );
  if (processing.text_template)
    for (const m of processing.text_template.matchAll(PLACEHOLDER))
      refs.push({ path: [...base, 'text_template'], field: m[1], placeholder: true });

  const problems: ConfigProblem[] = [];
  for (const ref of refs) {
    if (acceptedDrops.has(ref.field.split('.')[0])) continue;
    const results = catalog.streams.map((cs) => ({ stream: cs.stream.name, r: lookup(cs.stream.json_schema as JsonSchema, ref.field) }));
    // A field any stream may have is fine: processing is shared by all streams of the connection.
    if (results.some((x) => x.r.ok)) continue;
    const misses = results.map((x) => x.r as { ok: false; missing: string; known: string[] });
    const known = [...new Set(misses.flatMap((m) => m.known))];
    const guess = closest(misses[0].missing, known);
    const names = results.map((x) => x.stream);
    const who = names.length === 1 ? `stream ${names[0]} has` : `streams ${names.join(', ')} have`;
    const what = ref.field === misses[0].missing ? `"${ref.field}"` : `"${misses[0].missing}" (in "${ref.field}")`;
    problems.push({
      path: ref.path,
      message:
        `${who} no field ${what}${ref.placeholder ? ` (placeholder {{${ref.field}}})` : ''}` +
        (guess ? ` — did you mean "${guess}"?` : ` (fields: ${known.slice(0, 20).join(', ')})`),
    });
  }
  return problems;
}

/** Streams whose records must not be judged on fewer records than this. */
const MIN_RECORDS = 10;
/** Documents held back (in memory, bounded) at the start of a run, so a wrong config fails before its first write. */
const PROBATION_DOCUMENTS = 200;

/**
 * Passes destination messages through, failing the run when more than `maxEmptyShare` of a
 * stream's records (at least MIN_RECORDS) yield no text. The first PROBATION_DOCUMENTS documents
 * are held back and judged before anything reaches the destination; an overwrite is judged again
 * before its switch (STREAM_COMPLETE), so a bad full refresh never replaces the live table.
 */
export async function* guardEmptyText(
  input: AsyncIterable<DestinationMessage>,
  opts: { maxEmptyShare: number; conn: LoadedConnection; ctx: Pick<ConnectorContext, 'follow'> },
): AsyncGenerator<DestinationMessage> {
  if (opts.maxEmptyShare >= 1) return yield* input;
  const counts = new Map<string, { docs: number; empty: number }>();
  let held: DestinationMessage[] | undefined = [];
  let heldDocs = 0;
  /** Held messages other than STATEs (while there are none, nothing is held). */
  let heldData = 0;
  const judge = (stream: string) => {
    const c = counts.get(stream);
    if (!c || c.docs < MIN_RECORDS || c.empty / c.docs <= opts.maxEmptyShare) return;
    const p = opts.conn.config.processing;
    const using = p?.text_fields
      ? `text_fields [${p.text_fields.join(', ')}]`
      : p?.text_template
        ? `text_template ${JSON.stringify(p.text_template)}`
        : 'the default text (the `content` field, else every string field)';
    throw new SluiceError(
      `stream ${stream}: ${c.empty} of ${c.docs} records (${Math.round((100 * c.empty) / c.docs)}%) yield no text with ${using}; stopped before replacing or deleting their chunks`,
      {
        kind: 'config',
        where: `connections[${opts.conn.index}].processing`,
        hint: `check the field names against \`sluice discover\`; if that many records really have no text, raise processing.max_empty_share (now ${opts.maxEmptyShare}; 1 turns the check off)`,
      },
    );
  };
  const release = function* (): Generator<DestinationMessage> {
    if (!held) return;
    for (const stream of counts.keys()) judge(stream);
    const out = held;
    held = undefined;
    yield* out;
  };
  try {
    yield* judged(input);
  } catch (err) {
    // The source failed while documents were held: what it read before is passed on (if it
    // passes the test) so its checkpoints are committed, as they would be without the guard.
    if (held?.length) {
      try {
        yield* release();
      } catch {
        // the held documents fail the test: nothing of them is written; the source's error stands
      }
    }
    throw err;
  }
  yield* release();

  async function* judged(input: AsyncIterable<DestinationMessage>): AsyncGenerator<DestinationMessage> {
    for await (const m of input) {
      if (m.type === 'DOCUMENT') {
        const c = counts.get(m.stream) ?? { docs: 0, empty: 0 };
        c.docs++;
        if (!m.chunks.length) c.empty++;
        counts.set(m.stream, c);
      }
      if (m.type === 'STREAM_COMPLETE') {
        judge(m.stream);
        yield* release();
      }
      if (held) {
        // Only checkpoints held so far (the documents before them were unchanged, dropped by the
        // unchanged stage, or there were none): there is nothing to judge, so they go on now. An
        // unchanged re-sync has no document to reach here; its checkpoints were otherwise held to
        // the end of the stream and committed there one after the other.
        if (m.type === 'STATE' && !heldData) {
          yield m;
          continue;
        }
        held.push(m);
        if (m.type !== 'STATE') heldData++;
        if (m.type === 'DOCUMENT') heldDocs++;
        // A following (CDC, Kafka) run may idle for hours: it is judged at its first checkpoint.
        if (heldDocs >= PROBATION_DOCUMENTS || (opts.ctx.follow && m.type === 'STATE')) yield* release();
      } else yield m;
    }
  }
}
