// Source conformance, after Airbyte's connector acceptance tests: the spec, check, discover, the
// messages and records of a full read, and incremental state (emitted, advancing, and a resumed
// read that neither loses nor repeats a record).
import { randomBytes } from 'node:crypto';
import type { ConnectorContext, DigestCheck, Source, SourceState, StoredDigests } from '../protocol/connector.ts';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import { canonicalJson, documentId, getPath } from '../protocol/identity.ts';
import type { AirbyteCatalog, AirbyteMessage, AirbyteStream, ConfiguredCatalog, StateMessage } from '../protocol/messages.ts';
import { CDC_DELETED_AT } from '../protocol/messages.ts';
import { testContext } from './context.ts';
import { ReportBuilder, type ConformanceReport } from './report.ts';
import { checkConfigRejected, checkSpec } from './spec-checks.ts';
import { formatAjvErrors, protocolValidators, schemaValidator } from './schema.ts';

export const SOURCE_CHECKS = [
  'spec.json-schema',
  'spec.secrets-marked',
  'spec.accepts-config',
  'check.succeeds',
  'check.rejects-bad-config',
  'discover.valid-catalog',
  'read.completes',
  'read.protocol-messages',
  'read.records-match-schema',
  'read.records-have-primary-key',
  'read.streams-complete',
  'incremental.state-emitted',
  'incremental.state-advances',
  'incremental.resume-without-loss-or-repeats',
  'digests.records-carry-digests',
  'digests.skip-rejected-only',
  'digests.skip-all-unchanged',
] as const;

const DIGEST_CHECKS = SOURCE_CHECKS.filter((c) => c.startsWith('digests.'));

export interface SourceConformanceOptions {
  /** A config that reads a small, non-empty data set (raw: it is parsed with the spec's schema). */
  config: unknown;
  /** Configs that must be refused: by the schema, by check() returning ok:false, or a SluiceError. */
  badConfigs?: unknown[];
  /** Only these streams (default: all discovered). */
  streams?: string[];
  /** Cursor field per stream for incremental reads, where the source has no default (e.g. a table column). */
  cursorFields?: Record<string, string[]>;
  /** Context overrides (baseDir for relative paths, …). */
  ctx?: Partial<ConnectorContext>;
  /** Per read (default 60 s). */
  timeoutMs?: number;
  /** Stop a read after this many messages (default 100 000); the kit wants a small data set. */
  maxMessages?: number;
  /** How many of the first read's states to resume from (spread over the read; default 3). */
  resumePoints?: number;
  /** airbyte_protocol.yaml to validate messages against (default: the copy in sluice's specs/). */
  protocolSchema?: string;
}

interface ReadResult {
  messages: AirbyteMessage[];
  error?: string;
}

async function collect(
  source: Source,
  config: unknown,
  catalog: ConfiguredCatalog,
  state: SourceState | undefined,
  ctx: ConnectorContext,
  opts: SourceConformanceOptions,
): Promise<ReadResult> {
  const messages: AirbyteMessage[] = [];
  const max = opts.maxMessages ?? 100_000;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  // Its own signal, so a read that overruns its time is told to stop rather than left running.
  const stop = new AbortController();
  const readCtx = { ...ctx, signal: AbortSignal.any([ctx.signal, stop.signal]) };
  const work = (async () => {
    for await (const m of source.read(config, catalog, state, readCtx)) {
      messages.push(m);
      if (messages.length >= max) break;
    }
  })();
  try {
    await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          stop.abort();
          reject(
            new SluiceError(`read did not finish within ${timeoutMs} ms`, {
              kind: 'source',
              hint: 'give the kit a smaller data set, or raise timeoutMs',
            }),
          );
        }, timeoutMs);
      }),
    ]);
    return { messages };
  } catch (err) {
    return { messages, error: describeFailure(err) };
  } finally {
    clearTimeout(timer);
  }
}

/** A clean failure is a SluiceError; anything else is a crash and says so. */
export function describeFailure(err: unknown): string {
  // withContext() wraps a stray exception as an internal SluiceError: still a crash.
  const wrapped =
    err instanceof SluiceError && err.kind === 'internal' && err.cause instanceof Error && !(err.cause instanceof SluiceError);
  const where = err instanceof SluiceError && err.where ? ` [${err.where}]` : '';
  if (err instanceof SluiceError && !wrapped) return `${err.message}${where}${err.hint ? ` (${err.hint})` : ''}`;
  const original = wrapped ? (err as SluiceError).cause : err;
  const name = original instanceof Error ? original.constructor.name : typeof original;
  return `crashed with ${name}: ${describeUnknown(original)}${where} — throw a SluiceError that says what failed and what to do`;
}

function applyState(into: SourceState, state: StateMessage, deep: boolean): void {
  const put = (name: string, blob: Record<string, unknown> | undefined) => {
    if (!blob) return;
    into.streams[name] = deep ? deepMerge(into.streams[name] ?? {}, blob) : blob;
  };
  if (state.type === 'GLOBAL' && state.global) {
    if (state.global.shared_state) into.shared = deep ? deepMerge(into.shared ?? {}, state.global.shared_state) : state.global.shared_state;
    for (const s of state.global.stream_states) put(s.stream_descriptor.name, s.stream_state);
  } else if (state.stream) {
    put(state.stream.stream_descriptor.name, state.stream.stream_state);
  }
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object' && !Array.isArray(prev)
        ? deepMerge(prev as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

/** Streams a STATE message speaks for. */
function stateStreams(state: StateMessage): string[] {
  if (state.type === 'GLOBAL' && state.global) return state.global.stream_states.map((s) => s.stream_descriptor.name);
  return state.stream ? [state.stream.stream_descriptor.name] : [];
}

/** A record's identity for loss/repeat checks: its data, minus the deletion timestamp that changes per read. */
function recordFingerprint(data: Record<string, unknown>): string {
  if (data[CDC_DELETED_AT] === undefined) return canonicalJson(data);
  const { [CDC_DELETED_AT]: _ignored, ...rest } = data;
  return `deleted:${canonicalJson(rest)}`;
}

function describeRecord(data: Record<string, unknown>, pk: string[][] | undefined): string {
  if (pk?.length) {
    try {
      return `${pk.map((p) => p.join('.')).join(',')}=${documentId(data, pk)}`;
    } catch {
      /* fall through to the data */
    }
  }
  return canonicalJson(data).slice(0, 80);
}

function configuredCatalog(
  streams: AirbyteStream[],
  mode: 'full_refresh' | 'incremental',
  cursors: Record<string, string[]> = {},
): ConfiguredCatalog {
  return {
    streams: streams.map((s) => ({
      stream: s,
      sync_mode: mode,
      destination_sync_mode: mode === 'incremental' ? 'append_dedup' : 'overwrite',
      ...(mode === 'incremental' && (cursors[s.name] ?? s.default_cursor_field)
        ? { cursor_field: cursors[s.name] ?? s.default_cursor_field }
        : {}),
      ...(s.source_defined_primary_key?.length ? { primary_key: s.source_defined_primary_key } : {}),
    })),
  };
}

export async function runSourceConformance(source: Source, options: SourceConformanceOptions): Promise<ConformanceReport> {
  const report = new ReportBuilder(source.spec?.name ?? '(unnamed)', 'source');
  // Its own connection name, so consumer groups, slots and work files are never the user's.
  const ctx = testContext({ ...options.ctx, connection: `sluice-conformance-${randomBytes(4).toString('hex')}` });
  const protocol = protocolValidators(options.protocolSchema);
  const allMessages: { phase: string; message: AirbyteMessage; index: number }[] = [];

  const config = checkSpec(source, options.config, report);
  if (config === undefined) {
    for (const name of SOURCE_CHECKS.slice(3)) report.skip(name, 'the config does not parse, so nothing else can run');
    return report.build();
  }

  // check
  try {
    const r = await source.check(config, ctx);
    if (r.ok) report.pass('check.succeeds');
    else report.fail('check.succeeds', `check() returned ok:false with the good config: ${r.message ?? '(no message)'}`);
  } catch (err) {
    report.fail('check.succeeds', `check() threw with the good config: ${describeFailure(err)}`);
  }
  await checkConfigRejected(source, options.config, options.badConfigs, ctx, report);

  // discover
  let catalog: AirbyteCatalog | undefined;
  try {
    catalog = await source.discover(config, ctx);
    const problems = validateCatalog(catalog, protocol, source, options.cursorFields);
    if (options.streams) {
      const names = new Set(catalog.streams.map((s) => s.name));
      for (const n of options.streams) if (!names.has(n)) problems.push(`stream "${n}" (asked for by the test) is not in the catalog`);
    }
    report.result('discover.valid-catalog', problems, `${catalog.streams.length} stream(s)`);
  } catch (err) {
    report.fail('discover.valid-catalog', `discover() failed: ${describeFailure(err)}`);
  }
  if (!catalog || !Array.isArray(catalog.streams)) {
    for (const name of SOURCE_CHECKS.slice(6)) report.skip(name, 'no catalog to read with');
    return report.build();
  }
  const streams = catalog.streams.filter((s) => !options.streams || options.streams.includes(s.name));
  const byName = new Map(streams.map((s) => [s.name, s]));

  // full refresh read
  const full = await collect(source, config, configuredCatalog(streams, 'full_refresh'), undefined, ctx, options);
  full.messages.forEach((m, i) => allMessages.push({ phase: 'full refresh read', message: m, index: i }));
  const fullRecords = full.messages.filter((m): m is Extract<AirbyteMessage, { type: 'RECORD' }> => m.type === 'RECORD');
  if (full.error) report.fail('read.completes', `full refresh read failed after ${fullRecords.length} records: ${full.error}`);
  else if (fullRecords.length === 0)
    report.fail('read.completes', 'full refresh read returned no records; give the kit a config that reads a small non-empty data set');
  else report.pass('read.completes', `${fullRecords.length} records`);

  // records vs stream schemas, primary keys
  const ajv = schemaValidator();
  const validators = new Map<string, ((d: unknown) => boolean) & { errors?: unknown }>();
  const schemaProblems: string[] = [];
  const pkProblems: string[] = [];
  let position = 0;
  for (const m of fullRecords) {
    position++;
    const { stream, data } = m.record;
    const st = byName.get(stream);
    if (!st) {
      schemaProblems.push(`record ${position} is for stream "${stream}", which is not in the configured catalog`);
      continue;
    }
    const pk = st.source_defined_primary_key;
    const deletion = data[CDC_DELETED_AT] !== undefined && data[CDC_DELETED_AT] !== null;
    if (!deletion) {
      let validate = validators.get(stream);
      if (!validate) {
        try {
          validate = ajv.compile(st.json_schema);
        } catch {
          validate = Object.assign(() => true, {});
        }
        validators.set(stream, validate);
      }
      if (!validate(data)) {
        schemaProblems.push(
          `stream "${stream}", record ${position} (${describeRecord(data, pk)}): ${formatAjvErrors((validate as unknown as { errors: never }).errors)}`,
        );
      }
    }
    if (pk?.length) {
      for (const path of pk) {
        const v = getPath(data, path);
        if (v === undefined || v === null)
          pkProblems.push(`stream "${stream}", record ${position}: primary key field "${path.join('.')}" is missing`);
      }
    }
  }
  if (fullRecords.length === 0) {
    report.skip('read.records-match-schema', 'no records were read');
    report.skip('read.records-have-primary-key', 'no records were read');
  } else {
    report.result(
      'read.records-match-schema',
      schemaProblems.length
        ? [
            ...schemaProblems.slice(0, 5),
            ...(schemaProblems.length > 5 ? [`${schemaProblems.length} records in all violate their schema`] : []),
          ]
        : [],
    );
    const withPk = streams.filter((s) => s.source_defined_primary_key?.length);
    if (!withPk.length) report.notApplicable('read.records-have-primary-key', 'no stream declares a primary key');
    else report.result('read.records-have-primary-key', pkProblems);
  }

  // stream status
  if (full.error) report.skip('read.streams-complete', 'the read failed');
  else {
    const completed = new Set(
      full.messages
        .filter((m) => m.type === 'TRACE' && m.trace.type === 'STREAM_STATUS' && m.trace.stream_status?.status === 'COMPLETE')
        .map((m) => (m as Extract<AirbyteMessage, { type: 'TRACE' }>).trace.stream_status!.stream_descriptor.name),
    );
    report.result(
      'read.streams-complete',
      streams
        .filter((s) => !completed.has(s.name))
        .map(
          (s) =>
            `stream "${s.name}" was read without a TRACE STREAM_STATUS COMPLETE (message.streamStatus(name, 'COMPLETE')); overwrite destinations need it to switch generations`,
        ),
    );
  }

  // incremental
  const incStreams = streams.filter((s) => s.supported_sync_modes.includes('incremental'));
  if (!incStreams.length) {
    report.notApplicable('incremental.state-emitted', 'no stream supports incremental sync');
    report.notApplicable('incremental.state-advances', 'no stream supports incremental sync');
    report.notApplicable('incremental.resume-without-loss-or-repeats', 'no stream supports incremental sync');
  } else {
    await checkIncremental(source, config, incStreams, ctx, options, report, allMessages);
  }

  // source digests
  await checkDigests(source, config, streams, fullRecords, full.error, ctx, options, report, allMessages);

  // protocol validity of everything seen
  if (!protocol) {
    report.fail(
      'read.protocol-messages',
      `${options.protocolSchema ?? 'specs/airbyte_protocol.yaml'} not found: it ships with sluice, so the installation is incomplete; reinstall sluice`,
    );
  } else {
    const problems: string[] = [];
    for (const { phase, message, index } of allMessages) {
      if (!protocol.message(message)) {
        problems.push(
          `${phase}, message ${index + 1} (${(message as { type?: string }).type}): ${formatAjvErrors(protocol.message.errors)}`,
        );
      }
    }
    report.result('read.protocol-messages', problems, `${allMessages.length} messages valid`);
  }
  return report.build();
}

function validateCatalog(
  catalog: AirbyteCatalog,
  protocol: ReturnType<typeof protocolValidators>,
  source: Source,
  cursorFields?: Record<string, string[]>,
): string[] {
  const problems: string[] = [];
  if (!catalog || !Array.isArray(catalog.streams)) return ['discover() did not return { streams: [...] }'];
  if (catalog.streams.length === 0) problems.push('the catalog has no streams');
  const ajv = schemaValidator();
  const seen = new Set<string>();
  for (const [i, s] of catalog.streams.entries()) {
    const label = `stream ${typeof s?.name === 'string' ? `"${s.name}"` : `#${i + 1}`}`;
    if (protocol && !protocol.stream(s)) problems.push(`${label} is not a valid AirbyteStream: ${formatAjvErrors(protocol.stream.errors)}`);
    if (!s || typeof s.name !== 'string' || !s.name) continue;
    if (seen.has(s.name)) problems.push(`${label} appears twice`);
    seen.add(s.name);
    const js = s.json_schema as Record<string, unknown> | undefined;
    if (!js || typeof js !== 'object') {
      problems.push(`${label} has no json_schema`);
      continue;
    }
    if (!ajv.validateSchema(js)) problems.push(`${label} json_schema is not valid JSON Schema: ${ajv.errorsText(ajv.errors)}`);
    else {
      try {
        ajv.compile(js);
      } catch (err) {
        problems.push(`${label} json_schema does not compile: ${describeUnknown(err)}`);
      }
    }
    const props = (js.properties ?? {}) as Record<string, unknown>;
    // A schemaless stream ({ type: object }, e.g. Kafka JSON values) cannot name its fields.
    const schemaless = js.properties === undefined;
    const hasField = (path: string[]) => {
      if (schemaless) return true;
      let node: Record<string, unknown> | undefined = { properties: props };
      for (const p of path) {
        node = (node?.properties as Record<string, Record<string, unknown>> | undefined)?.[p];
        if (!node) return false;
      }
      return true;
    };
    for (const pk of s.source_defined_primary_key ?? []) {
      if (!hasField(pk)) problems.push(`${label} primary key "${pk.join('.')}" is not a property of its json_schema`);
    }
    if (s.supported_sync_modes?.includes('incremental')) {
      if (
        !s.default_cursor_field?.length &&
        !s.source_defined_cursor &&
        !source.capabilities?.sourceDefinedCursor &&
        !cursorFields?.[s.name]
      ) {
        problems.push(`${label} supports incremental but has no default_cursor_field and no source-defined cursor`);
      }
      if (s.default_cursor_field?.length && !hasField(s.default_cursor_field)) {
        problems.push(`${label} cursor field "${s.default_cursor_field.join('.')}" is not a property of its json_schema`);
      }
    }
  }
  return problems;
}

async function checkIncremental(
  source: Source,
  config: unknown,
  streams: AirbyteStream[],
  ctx: ConnectorContext,
  options: SourceConformanceOptions,
  report: ReportBuilder,
  allMessages: { phase: string; message: AirbyteMessage; index: number }[],
): Promise<void> {
  const deep = source.capabilities?.stateMerge === 'deep';
  const catalog = configuredCatalog(streams, 'incremental', options.cursorFields);
  const pkOf = new Map(streams.map((s) => [s.name, s.source_defined_primary_key]));
  const first = await collect(source, config, catalog, undefined, ctx, options);
  first.messages.forEach((m, i) => allMessages.push({ phase: 'first incremental read', message: m, index: i }));
  if (first.error) {
    const msg = `the first incremental read failed: ${first.error}`;
    report.fail('incremental.state-emitted', msg);
    report.skip('incremental.state-advances', 'the first incremental read failed');
    report.skip('incremental.resume-without-loss-or-repeats', 'the first incremental read failed');
    return;
  }

  // state-emitted: every stream that produced records has a state after its last record.
  const emittedProblems: string[] = [];
  const advanceProblems: string[] = [];
  const lastRecordAt = new Map<string, number>();
  const lastStateAt = new Map<string, number>();
  const previousState = new Map<string, { blob: string; at: number; recordsSince: number }>();
  const recordsSinceState = new Map<string, number>();
  first.messages.forEach((m, i) => {
    if (m.type === 'RECORD') {
      lastRecordAt.set(m.record.stream, i);
      recordsSinceState.set(m.record.stream, (recordsSinceState.get(m.record.stream) ?? 0) + 1);
    } else if (m.type === 'STATE') {
      for (const name of stateStreams(m.state)) {
        lastStateAt.set(name, i);
        const blob = canonicalJson(
          m.state.type === 'GLOBAL'
            ? m.state.global?.stream_states.find((s) => s.stream_descriptor.name === name)?.stream_state
            : m.state.stream?.stream_state,
        );
        const prev = previousState.get(name);
        const since = recordsSinceState.get(name) ?? 0;
        if (prev && since > 0 && prev.blob === blob) {
          advanceProblems.push(
            `stream "${name}": the state after message ${i + 1} equals the one after message ${prev.at + 1} (${blob.slice(0, 120)}) although ${since} record(s) came in between — the state does not advance`,
          );
        }
        previousState.set(name, { blob, at: i, recordsSince: since });
        recordsSinceState.set(name, 0);
      }
    }
  });
  for (const s of streams) {
    const rec = lastRecordAt.get(s.name);
    if (rec === undefined) continue;
    const st = lastStateAt.get(s.name);
    if (st === undefined)
      emittedProblems.push(
        `stream "${s.name}" emitted ${countRecords(first.messages, s.name)} records in an incremental read but no STATE`,
      );
    else if (st < rec)
      emittedProblems.push(
        `stream "${s.name}": no STATE after its last record (message ${rec + 1}); the records after message ${st + 1} would be read again next time`,
      );
  }
  if (!lastRecordAt.size) {
    report.fail('incremental.state-emitted', 'the incremental read returned no records, so state cannot be checked');
    report.skip('incremental.state-advances', 'no records');
    report.skip('incremental.resume-without-loss-or-repeats', 'no records');
    return;
  }
  report.result('incremental.state-emitted', emittedProblems);
  report.result('incremental.state-advances', advanceProblems);

  // Resume from a few states spread over the read (always including the last one): each resumed
  // read must return exactly the records after that state in the first read, per stream.
  const stateIdx = first.messages.flatMap((m, i) => (m.type === 'STATE' ? [i] : []));
  if (!stateIdx.length) {
    report.fail('incremental.resume-without-loss-or-repeats', 'no STATE to resume from');
    return;
  }
  const points = Math.max(1, options.resumePoints ?? 3);
  const picks = new Set<number>();
  for (let k = 0; k < points; k++)
    picks.add(stateIdx[Math.floor(((k + 1) * stateIdx.length) / points) - 1] ?? stateIdx[stateIdx.length - 1]);
  picks.add(stateIdx[stateIdx.length - 1]);
  const problems: string[] = [];
  for (const at of [...picks].sort((a, b) => a - b)) {
    const state: SourceState = { streams: {} };
    const lastStateOf = new Map<string, number>();
    for (let i = 0; i <= at; i++) {
      const m = first.messages[i];
      if (m.type === 'STATE') {
        applyState(state, m.state, deep);
        for (const n of stateStreams(m.state)) lastStateOf.set(n, i);
      }
    }
    // Expected: per stream, the records after that stream's last state at or before `at`.
    const expected = new Map<string, Map<string, number>>();
    const before = new Map<string, Map<string, Record<string, unknown>>>();
    first.messages.forEach((m, i) => {
      if (m.type !== 'RECORD') return;
      const name = m.record.stream;
      const cut = lastStateOf.get(name) ?? -1;
      const fp = recordFingerprint(m.record.data);
      if (i > cut) {
        const e = expected.get(name) ?? new Map<string, number>();
        e.set(fp, (e.get(fp) ?? 0) + 1);
        expected.set(name, e);
      } else {
        const b = before.get(name) ?? new Map();
        b.set(fp, m.record.data);
        before.set(name, b);
      }
    });
    const resumed = await collect(source, config, catalog, structuredClone(state), ctx, options);
    const label = `resuming from the state at message ${at + 1} of ${first.messages.length}`;
    resumed.messages.forEach((m, i) => allMessages.push({ phase: label, message: m, index: i }));
    if (resumed.error) {
      problems.push(`${label}: the read failed: ${resumed.error}`);
      continue;
    }
    const repeats = new Map<string, Record<string, unknown>[]>();
    const unexpected = new Map<string, Record<string, unknown>[]>();
    for (const m of resumed.messages) {
      if (m.type !== 'RECORD') continue;
      const name = m.record.stream;
      const fp = recordFingerprint(m.record.data);
      const e = expected.get(name);
      if (e && (e.get(fp) ?? 0) > 0) {
        e.set(fp, e.get(fp)! - 1);
      } else if (before.get(name)?.has(fp)) {
        repeats.set(name, [...(repeats.get(name) ?? []), m.record.data]);
      } else {
        unexpected.set(name, [...(unexpected.get(name) ?? []), m.record.data]);
      }
    }
    for (const [name, recs] of repeats) {
      problems.push(
        `${label}: stream "${name}" repeated ${recs.length} record(s) the state already covered (first: ${describeRecord(recs[0], pkOf.get(name))}, state ${canonicalJson(state.streams[name] ?? null).slice(0, 120)}) — the state does not mark how far the read got`,
      );
    }
    for (const [name, recs] of unexpected) {
      problems.push(
        `${label}: stream "${name}" returned ${recs.length} record(s) the first read never returned (first: ${describeRecord(recs[0], pkOf.get(name))}); the data must not change during the test`,
      );
    }
    for (const [name, e] of expected) {
      const missing = [...e.entries()].filter(([, n]) => n > 0);
      if (missing.length) {
        const firstMissing = JSON.parse(missing[0][0].replace(/^deleted:/, '')) as Record<string, unknown>;
        problems.push(
          `${label}: stream "${name}" lost ${missing.reduce((a, [, n]) => a + n, 0)} record(s) that came after the state (first: ${describeRecord(firstMissing, pkOf.get(name))}) — the state claims more than was read`,
        );
      }
    }
  }
  report.result('incremental.resume-without-loss-or-repeats', problems, `resumed from ${picks.size} state(s)`);
}

/** A fake StoredDigests: checks for `streams` only, recording every offer. */
function digestsFake(streams: Set<string>, skipping: boolean, accept: (offerIndex: number) => boolean) {
  const offers: { stream: string; key: Record<string, unknown>; digest: string; accepted: boolean }[] = [];
  const stored: StoredDigests = {
    async forStream(stream) {
      if (!streams.has(stream)) return undefined;
      const check: DigestCheck = {
        skipping,
        unchanged(key, digest) {
          const accepted = accept(offers.length);
          offers.push({ stream, key: { ...key }, digest, accepted });
          return accepted;
        },
      };
      return check;
    },
  };
  return { stored, offers };
}

/**
 * Source digests (capabilities.sourceDigests): with skipping off, every record of a keyed full
 * refresh carries a digest and is the plain read's; with skipping on, exactly the rows the check
 * rejects (or never saw) are emitted, as the plain read has them, and accepting every row leaves
 * no RECORD at all.
 */
async function checkDigests(
  source: Source,
  config: unknown,
  streams: AirbyteStream[],
  plainRecords: Extract<AirbyteMessage, { type: 'RECORD' }>[],
  plainError: string | undefined,
  ctx: ConnectorContext,
  options: SourceConformanceOptions,
  report: ReportBuilder,
  allMessages: { phase: string; message: AirbyteMessage; index: number }[],
): Promise<void> {
  const notApplicable = (why: string) => {
    for (const name of DIGEST_CHECKS) report.notApplicable(name, why);
  };
  if (!source.capabilities?.sourceDigests) return notApplicable('the source does not declare capabilities.sourceDigests');
  const keyed = streams.filter((s) => s.source_defined_primary_key?.length && s.supported_sync_modes.includes('full_refresh'));
  if (!keyed.length) return notApplicable('no full-refresh stream declares a primary key');
  if (plainError) {
    for (const name of DIGEST_CHECKS) report.skip(name, 'the plain full refresh read failed');
    return;
  }
  const names = new Set(keyed.map((s) => s.name));
  const pkOf = new Map(keyed.map((s) => [s.name, s.source_defined_primary_key!]));
  const idOf = (stream: string, data: Record<string, unknown>): string => {
    try {
      return `${stream} ${documentId(data, pkOf.get(stream)!)}`;
    } catch {
      return `${stream} (no key) ${canonicalJson(data)}`;
    }
  };
  const plain = new Map<string, string>();
  for (const m of plainRecords)
    if (names.has(m.record.stream)) plain.set(idOf(m.record.stream, m.record.data), canonicalJson(m.record.data));
  const catalog: ConfiguredCatalog = {
    streams: configuredCatalog(keyed, 'full_refresh').streams.map((cs) => ({ ...cs, destination_sync_mode: 'append_dedup' as const })),
  };
  const read = async (phase: string, fake: ReturnType<typeof digestsFake>) => {
    const r = await collect(source, config, catalog, undefined, { ...ctx, storedDigests: fake.stored }, options);
    r.messages.forEach((m, i) => allMessages.push({ phase, message: m, index: i }));
    const records = r.messages.filter((m): m is Extract<AirbyteMessage, { type: 'RECORD' }> => m.type === 'RECORD');
    const completed = new Set(
      r.messages.flatMap((m) =>
        m.type === 'TRACE' && m.trace.stream_status?.status === 'COMPLETE' ? [m.trace.stream_status.stream_descriptor.name] : [],
      ),
    );
    const incomplete = keyed.filter((s) => !completed.has(s.name)).map((s) => `stream "${s.name}" ended without STREAM_STATUS COMPLETE`);
    return { ...r, records, incomplete };
  };

  // (a) skipping off: every row in full, each with its digest.
  const first = digestsFake(names, false, () => false);
  const a = await read('read with digests (skipping off)', first);
  const digestOf = new Map<string, string>();
  if (a.error) report.fail('digests.records-carry-digests', `the read with digests failed: ${a.error}`);
  else {
    const problems: string[] = [...a.incomplete];
    const seen = new Map<string, string>();
    for (const m of a.records) {
      const id = idOf(m.record.stream, m.record.data);
      const d = m.record.digest;
      if (typeof d !== 'string' || !d || d.length > 128)
        problems.push(`${id}: RECORD without a digest of 1–128 characters (message.record(stream, data, emittedAt, digest))`);
      else digestOf.set(id, d);
      seen.set(id, canonicalJson(m.record.data));
    }
    problems.push(...compareWithPlain(plain, seen, 'with digests'));
    if (first.offers.length)
      problems.push(`check.unchanged was called ${first.offers.length} time(s) although check.skipping is false (read every row in full)`);
    report.result('digests.records-carry-digests', problems, `${a.records.length} records, each with a digest`);
  }

  // (b) skipping on, every other offered row accepted: exactly the others come, as read in full.
  const second = digestsFake(names, true, (i) => i % 2 === 0);
  const b = await read('read skipping every other row', second);
  if (a.error) report.skip('digests.skip-rejected-only', 'the read with digests failed');
  else if (b.error) report.fail('digests.skip-rejected-only', `the skipping read failed: ${b.error}`);
  else {
    const problems: string[] = [...b.incomplete];
    const offered = new Map<string, boolean>();
    for (const o of second.offers) {
      const id = idOf(o.stream, o.key);
      if (offered.has(id)) problems.push(`${id} was offered to check.unchanged twice (ask at most once per row)`);
      offered.set(id, o.accepted);
      if (!plain.has(id))
        problems.push(`${id} was offered but the plain read has no such row (the key record must hold the key fields as in the RECORD)`);
      else if (digestOf.get(id) !== o.digest)
        problems.push(`${id} was offered with digest ${o.digest}, but its RECORD carried ${digestOf.get(id)} in the read with digests`);
    }
    const expected = new Map([...plain].filter(([id]) => offered.get(id) !== true));
    const got = new Map<string, string>();
    for (const m of b.records) {
      const id = idOf(m.record.stream, m.record.data);
      if (offered.get(id) === true) problems.push(`${id} was emitted although check.unchanged accepted it`);
      if (m.record.digest !== digestOf.get(id)) problems.push(`${id} was emitted with digest ${m.record.digest}, not ${digestOf.get(id)}`);
      got.set(id, canonicalJson(m.record.data));
    }
    problems.push(...compareWithPlain(expected, got, 'skipping', (id) => offered.get(id) !== true));
    const accepted = second.offers.filter((o) => o.accepted).length;
    report.result(
      'digests.skip-rejected-only',
      problems,
      `${second.offers.length} rows offered, ${accepted} accepted, ${b.records.length} emitted`,
    );
  }

  // (c) skipping on, every row accepted: no RECORD.
  const third = digestsFake(names, true, () => true);
  const c = await read('read with every row unchanged', third);
  if (c.error) report.fail('digests.skip-all-unchanged', `the skipping read failed: ${c.error}`);
  else {
    const problems: string[] = [...c.incomplete];
    if (c.records.length)
      problems.push(
        `${c.records.length} RECORD(s) although check.unchanged accepts every row (first: ${idOf(c.records[0].record.stream, c.records[0].record.data)}); with skipping, offer each row to check.unchanged and emit only the rejected ones`,
      );
    if (!third.offers.length && plain.size) problems.push('no row was offered to check.unchanged although check.skipping is true');
    report.result('digests.skip-all-unchanged', problems, `${third.offers.length} rows offered, none emitted`);
  }
}

/** Differences between the records a read should have returned (by id) and those it did. */
function compareWithPlain(
  want: Map<string, string>,
  got: Map<string, string>,
  what: string,
  expectedHere: (id: string) => boolean = () => true,
): string[] {
  const problems: string[] = [];
  for (const [id, data] of want) {
    if (!got.has(id)) problems.push(`${id}: in the plain read, missing from the read ${what}`);
    else if (got.get(id) !== data)
      problems.push(`${id}: the read ${what} returned ${got.get(id)!.slice(0, 120)}, the plain read ${data.slice(0, 120)}`);
  }
  for (const id of got.keys())
    if (!want.has(id) && expectedHere(id)) problems.push(`${id}: returned by the read ${what}, not by the plain read`);
  return problems;
}

function countRecords(messages: AirbyteMessage[], stream: string): number {
  return messages.filter((m) => m.type === 'RECORD' && m.record.stream === stream).length;
}
