// A DeclarativeStream with a SimpleRetriever: partitions (ListPartitionRouter,
// SubstreamPartitionRouter) × datetime windows (DatetimeBasedCursor) × pages, one request at a time.
//
// State, in the CDK's shapes so a state taken from Airbyte reads the same:
//   cursor only:               { <cursor_field>: "<highest value seen>" }
//   cursor per partition:      { states: [{ partition: {...}, cursor: { <cursor_field>: … } }], parent_state?: {...} }
//   incremental parent only:   { parent_state: { <parent stream>: <its state> } }
// A state is emitted after a window (or a parent's window) is completely read, so it covers every
// record before it; a run killed mid-window re-reads that window, and the destination's primary-key
// dedup makes the replay idempotent.
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { SluiceError } from '../../src/cdk/index.ts';
import type { Logger } from '../../src/protocol/connector.ts';
import { DatetimeCursor, type Interval } from './cursor.ts';
import { evaluate, evaluateString, type Vars } from './interpolation.ts';
import type { Component, Manifest } from './manifest.ts';
import { paginationRun } from './pagination.ts';
import { dpathValues, RecordSelector } from './records.ts';
import { emptyParts, headerObject, injectOption, mergeParts, Requester, type RequestParts } from './requester.ts';

type Rec = Record<string, unknown>;
export type StreamItem = { record: Rec } | { state: Rec };

export interface RunEnv {
  config: Rec;
  manifest: Manifest;
  logger: Logger;
  signal: AbortSignal;
  /** For connection checks: at most this many retries, each wait at most maxBackoffMs. */
  limits?: { maxRetries?: number; maxBackoffMs?: number };
}

interface Partition {
  values: Rec;
  /** Options the router adds to the request (request_option). */
  inject: (parts: RequestParts, vars: Vars) => void;
}

/** Stable text of a partition, for finding its saved state. */
const partitionKey = (p: Rec): string =>
  JSON.stringify(p, (_k, v) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort()) : v));

export class DeclarativeStream {
  readonly name: string;
  readonly primaryKey: string[][];
  readonly cursor?: DatetimeCursor;
  private readonly retriever: Component;
  private readonly requester: Requester;
  private readonly selector: RecordSelector;
  private readonly vars: Vars;
  private readonly router?: Component;
  private schemaCache?: Record<string, unknown>;

  constructor(
    readonly c: Component,
    private readonly env: RunEnv,
  ) {
    this.vars = { config: env.config, parameters: c.$parameters ?? {} };
    this.name = evaluateString(c.name, this.vars);
    this.primaryKey = normalizePk(evaluate(c.primary_key, this.vars) ?? c.primary_key);
    this.retriever = c.retriever;
    if (this.retriever.type !== 'SimpleRetriever')
      throw new SluiceError(`stream ${this.name}: unsupported retriever ${this.retriever.type}`, { kind: 'config' });
    this.requester = new Requester(this.retriever.requester, this.vars, env.logger, this.name, env.limits);
    this.selector = new RecordSelector(
      this.retriever.record_selector ?? { type: 'RecordSelector' },
      (c.transformations ?? []) as Component[],
      undefined,
    );
    if (c.incremental_sync) this.cursor = new DatetimeCursor(c.incremental_sync, this.vars);
    const r = this.retriever.partition_router;
    this.router = Array.isArray(r) ? r[0] : r;
    const normalizing = this.retriever.record_selector?.schema_normalization === 'Default';
    if (normalizing)
      this.selector = new RecordSelector(this.retriever.record_selector, (c.transformations ?? []) as Component[], this.schema());
  }

  /** Parent streams read with incremental_dependency make this stream incremental too. */
  get incrementalParents(): Component[] {
    if (this.router?.type !== 'SubstreamPartitionRouter') return [];
    return ((this.router.parent_stream_configs ?? []) as Component[]).filter((p) => p.incremental_dependency === true);
  }

  get supportsIncremental(): boolean {
    return !!this.cursor || this.incrementalParents.length > 0;
  }

  schema(): Record<string, unknown> {
    if (this.schemaCache) return this.schemaCache;
    const loader = this.c.schema_loader as Component | undefined;
    let schema: Record<string, unknown> | undefined;
    if (loader?.type === 'InlineSchemaLoader') schema = (loader.schema ?? {}) as Record<string, unknown>;
    else {
      const explicit = loader?.file_path
        ? evaluateString(loader.file_path, { ...this.vars, parameters: loader.$parameters ?? this.vars.parameters })
        : undefined;
      // The CDK's default is schemas/<name>.json in the connector's package, next to the manifest.
      const candidates = explicit
        ? [
            isAbsolute(explicit) ? explicit : resolve(this.env.manifest.dir, explicit),
            join(this.env.manifest.dir, explicit.replace(/^\.\/source_[^/]+\//, '')),
          ]
        : [join(this.env.manifest.dir, 'schemas', `${this.name}.json`)];
      const file = candidates.find((f) => existsSync(f));
      if (file) {
        try {
          schema = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
        } catch (err) {
          throw new SluiceError(`stream ${this.name}: schema file ${file} is not valid JSON: ${(err as Error).message}`, {
            kind: 'config',
          });
        }
      } else if (explicit) {
        throw new SluiceError(`stream ${this.name}: schema file not found: ${candidates[0]}`, {
          kind: 'config',
          hint: 'JsonFileSchemaLoader paths are relative to the manifest file',
        });
      }
    }
    this.schemaCache = schema ?? { type: 'object', properties: {}, additionalProperties: true };
    return this.schemaCache;
  }

  // ---- reading ----------------------------------------------------------------------------------

  /**
   * Reads the stream. `incremental` uses and emits state; `maxPages` stops early (connection
   * checks). Yields records and, in incremental mode, states.
   */
  async *read(opts: { incremental: boolean; state?: Rec; maxPages?: number }): AsyncGenerator<StreamItem> {
    const saved = opts.incremental ? (opts.state ?? {}) : {};
    const perPartition = !!this.cursor && !!this.router;
    const partitionStates = new Map<string, { partition: Rec; cursor: Rec }>();
    if (perPartition && Array.isArray(saved.states))
      for (const s of saved.states as { partition: Rec; cursor: Rec }[]) partitionStates.set(partitionKey(s.partition), s);
    let streamCursor: unknown = !perPartition && this.cursor ? saved[this.cursor.cursorField] : undefined;
    const parentState: Rec = { ...((saved.parent_state as Rec | undefined) ?? {}) };
    let pages = 0;
    const self = this;

    const currentState = (): Rec => {
      const out: Rec = {};
      if (this.cursor && !perPartition) {
        if (streamCursor !== undefined) out[this.cursor.cursorField] = streamCursor;
      }
      if (perPartition) out.states = [...partitionStates.values()];
      if (Object.keys(parentState).length) out.parent_state = { ...parentState };
      return out;
    };
    let lastEmitted = JSON.stringify(saved);
    const stateIfChanged = (): Rec | undefined => {
      if (!opts.incremental) return undefined;
      const s = currentState();
      const text = JSON.stringify(s);
      if (text === lastEmitted || Object.keys(s).length === 0) return undefined;
      lastEmitted = text;
      return s;
    };

    // One partition: its datetime windows, each read page by page.
    async function* readPartition(partition: Partition): AsyncGenerator<StreamItem> {
      const pkey = perPartition ? partitionKey(partition.values) : '';
      const partitionSaved = perPartition ? partitionStates.get(pkey)?.cursor?.[self.cursor!.cursorField] : streamCursor;
      const intervals: (Interval | undefined)[] = self.cursor ? [...self.cursor.intervals(partitionSaved)] : [undefined];
      for (const interval of intervals) {
        let highest: unknown = undefined;
        const stateStart = self.cursor?.isDataFeed ? self.cursor.parse(partitionSaved) : undefined;
        // A state is emitted only after a whole window, so it covers every record at or before its
        // cursor: the API's inclusive `>= cursor` repeats those, and they are dropped here. With a
        // lookback_window the manifest asks for them again (late updates); they are kept.
        const coveredUpTo = self.cursor && !self.cursor.hasLookback ? self.cursor.parse(partitionSaved) : undefined;
        for await (const record of self.readPages(
          partition,
          interval,
          currentState(),
          opts.maxPages !== undefined ? () => ++pages > opts.maxPages! : undefined,
          stateStart,
        )) {
          if (self.cursor) {
            if (!self.cursor.inBounds(record)) continue;
            if (coveredUpTo !== undefined && (self.cursor.parse(record[self.cursor.cursorField]) ?? Infinity) <= coveredUpTo) continue;
            highest = self.cursor.max(highest, record[self.cursor.cursorField]);
          }
          yield { record };
        }
        if (self.env.signal.aborted) return;
        // The window is complete: its highest cursor value is now covered.
        if (self.cursor && highest !== undefined) {
          if (perPartition) {
            const prev = partitionStates.get(pkey)?.cursor?.[self.cursor.cursorField];
            partitionStates.set(pkey, {
              partition: partition.values,
              cursor: { [self.cursor.cursorField]: self.cursor.max(prev, highest) },
            });
          } else streamCursor = self.cursor.max(streamCursor, highest);
          const s = stateIfChanged();
          if (s) yield { state: s };
        }
      }
    }

    for await (const item of this.partitions(opts.incremental, parentState)) {
      if (this.env.signal.aborted) return;
      if ('parentCheckpoint' in item) {
        // Every partition from the parent's records so far is read: the parent's state may move.
        const s = stateIfChanged();
        if (s) yield { state: s };
        continue;
      }
      yield* readPartition(item);
      if (opts.maxPages !== undefined && pages >= opts.maxPages) return;
    }
    const s = stateIfChanged();
    if (s) yield { state: s };
  }

  /** Partitions, and (substreams with incremental_dependency) checkpoints of the parents' states. */
  private async *partitions(incremental: boolean, parentState: Rec): AsyncGenerator<Partition | { parentCheckpoint: true }> {
    const r = this.router;
    if (!r) {
      yield { values: {}, inject: () => {} };
      return;
    }
    const v = { ...this.vars, parameters: r.$parameters ?? this.vars.parameters };
    if (r.type === 'ListPartitionRouter') {
      let values = evaluate(r.values, v);
      if (typeof values === 'string') values = values.split(',').map((s) => s.trim());
      if (!Array.isArray(values))
        throw new SluiceError(`stream ${this.name}: ListPartitionRouter.values evaluates to ${JSON.stringify(values)}, not a list`, {
          kind: 'config',
        });
      const field = evaluateString(r.cursor_field, v);
      for (const value of values)
        yield {
          values: { [field]: value },
          inject: (parts, vars) => injectOption(parts, r.request_option, value, { ...vars, parameters: v.parameters }),
        };
      return;
    }
    if (r.type === 'SubstreamPartitionRouter') {
      for (const pc of (r.parent_stream_configs ?? []) as Component[]) {
        const parent = new DeclarativeStream(pc.stream, this.env);
        const pv = { ...this.vars, parameters: pc.$parameters ?? this.vars.parameters };
        const parentKey = evaluateString(pc.parent_key, pv).split('/');
        const field = evaluateString(pc.partition_field, pv);
        const dependent = incremental && pc.incremental_dependency === true;
        const parentSaved = dependent ? (parentState[parent.name] as Rec | undefined) : undefined;
        for await (const item of parent.read({ incremental: dependent, state: parentSaved })) {
          if ('state' in item) {
            parentState[parent.name] = item.state;
            yield { parentCheckpoint: true };
            continue;
          }
          const [value] = dpathValues(item.record, parentKey);
          if (value === undefined || value === null) continue;
          const values: Rec = { [field]: value, parent_slice: {} };
          for (const ef of (pc.extra_fields ?? []) as string[][]) {
            const [x] = dpathValues(
              item.record,
              ef.map((p) => evaluateString(p, pv)),
            );
            values[`extra_fields`] = { ...((values.extra_fields as Rec) ?? {}), [ef.join('.')]: x };
          }
          yield { values, inject: (parts, vars) => injectOption(parts, pc.request_option, value, { ...vars, parameters: pv.parameters }) };
        }
        // A parent read without a cursor change still completed; its state (if any) is final.
      }
      return;
    }
    throw new SluiceError(`stream ${this.name}: unsupported partition router ${r.type}`, { kind: 'config' });
  }

  /** Pages of one (partition, window). */
  private async *readPages(
    partition: Partition,
    interval: Interval | undefined,
    state: Rec,
    pageLimitReached: (() => boolean) | undefined,
    dataFeedStart: number | undefined,
  ): AsyncGenerator<Rec> {
    const slice = { ...partition.values, ...(interval ?? {}) };
    const base: Vars = {
      ...this.vars,
      stream_slice: slice,
      stream_partition: partition.values,
      stream_interval: interval ?? {},
      stream_state: state,
    };
    const urlBase = evaluateString(this.retriever.requester.url_base, { ...base, parameters: this.retriever.requester.$parameters ?? {} });
    const pagination = paginationRun(this.retriever.paginator, urlBase);
    const ignoreSlicerOnPages = this.retriever.ignore_stream_slicer_parameters_on_paginated_requests === true;
    for (;;) {
      if (this.env.signal.aborted) return;
      const token = pagination.token;
      const vars: Vars = { ...base, next_page_token: token === undefined ? undefined : { next_page_token: token } };
      const parts = this.requester.ownParts(vars);
      if (!(ignoreSlicerOnPages && token !== undefined)) {
        const sliceParts = emptyParts();
        partition.inject(sliceParts, vars);
        if (this.cursor && interval) this.cursor.requestParts(interval, sliceParts, vars);
        mergeParts(parts, sliceParts);
      }
      pagination.inject(parts, vars);
      const res = await this.requester.send(parts, vars, this.env.signal);
      if (!res) return;
      const headers = headerObject(res.headers);
      const records = this.selector.select(res.body, { ...vars, response: res.body, headers });
      for (const r of records) yield r;
      if (pageLimitReached?.()) return;
      // is_data_feed: newest first; a record older than the saved state means the rest is known.
      if (
        dataFeedStart !== undefined &&
        this.cursor &&
        records.some((r) => (this.cursor!.parse(r[this.cursor!.cursorField]) ?? Infinity) < dataFeedStart)
      )
        return;
      if (!pagination.next({ body: res.body, headers, records, url: res.url }, vars)) return;
    }
  }
}

function normalizePk(pk: unknown): string[][] {
  if (pk === undefined || pk === null || pk === '') return [];
  if (typeof pk === 'string') return [[pk]];
  if (!Array.isArray(pk) || pk.length === 0) return [];
  return pk.map((p) => (Array.isArray(p) ? p.map(String) : [String(p)]));
}
