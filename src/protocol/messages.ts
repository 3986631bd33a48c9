// Airbyte protocol message shapes (see shared/specs/airbyte_protocol.yaml), as zod schemas.
// Objects are loose (passthrough) like the Airbyte schema's `additionalProperties: true`.
import { z } from 'zod';

export const SyncModeSchema = z.enum(['full_refresh', 'incremental']);
/** sluice adds `cdc` as a first-class mode; on the wire a CDC stream is `incremental`. */
export const PipelineSyncModeSchema = z.enum(['full_refresh', 'incremental', 'cdc']);
export const DestinationSyncModeSchema = z.enum(['overwrite', 'append', 'append_dedup']);
export type SyncMode = z.infer<typeof PipelineSyncModeSchema>;
export type DestinationSyncMode = z.infer<typeof DestinationSyncModeSchema>;

export const StreamDescriptorSchema = z.looseObject({ name: z.string(), namespace: z.string().optional() });
export type StreamDescriptor = z.infer<typeof StreamDescriptorSchema>;

export const RecordMessageSchema = z.looseObject({
  stream: z.string(),
  namespace: z.string().optional(),
  data: z.record(z.string(), z.unknown()),
  emitted_at: z.number(),
  /** sluice's extension: the row's digest (SourceCapabilities.sourceDigests, StoredDigests). */
  digest: z.string().optional(),
});
export type RecordMessage = z.infer<typeof RecordMessageSchema>;

export const StreamStateSchema = z.looseObject({
  stream_descriptor: StreamDescriptorSchema,
  stream_state: z.record(z.string(), z.unknown()).optional(),
});
export const StateMessageSchema = z.looseObject({
  type: z.enum(['STREAM', 'GLOBAL', 'LEGACY']).optional(),
  stream: StreamStateSchema.optional(),
  global: z
    .looseObject({
      shared_state: z.record(z.string(), z.unknown()).optional(),
      stream_states: z.array(StreamStateSchema),
    })
    .optional(),
  sourceStats: z.looseObject({ recordCount: z.number().optional() }).optional(),
});
export type StateMessage = z.infer<typeof StateMessageSchema>;

export const LogMessageSchema = z.looseObject({
  level: z.enum(['FATAL', 'ERROR', 'WARN', 'INFO', 'DEBUG', 'TRACE']),
  message: z.string(),
  stack_trace: z.string().optional(),
});
export type LogMessage = z.infer<typeof LogMessageSchema>;

export const StreamStatusSchema = z.enum(['STARTED', 'RUNNING', 'COMPLETE', 'INCOMPLETE']);

/**
 * sluice extension (not in the Airbyte protocol): TRACE `SLUICE_RECORD_ERROR` — the source could
 * not turn one input record into a RECORD (a JSONL line that is not JSON, a CSV row with the wrong
 * column count, a Kafka message that is not JSON) and hands it to the engine instead of failing
 * the read. The engine applies the connection's `errors:` policy: with tolerance none the run fails
 * naming `position`; with tolerance all the record becomes a dead letter (stage `source`). It
 * counts as a record read. Build it with `message.recordError` (or yield `badRecord()` from a
 * defineSource stream).
 */
export const RecordErrorSchema = z.looseObject({
  stream: z.string(),
  /** Where the record is, for people: "file a.jsonl, line 7", "topic t, partition 0, offset 42". */
  position: z.string(),
  /** What is wrong with it, one line. */
  message: z.string(),
  /** What to do about it, when the source knows better than the engine's default. */
  hint: z.string().optional(),
  /** The record as read (text), for the dead letter; the engine truncates it. */
  raw: z.string().optional(),
});
export type RecordError = z.infer<typeof RecordErrorSchema>;
/** What a source says of a bad record (the stream is given separately). */
export interface RecordErrorDetails {
  position: string;
  message: string;
  hint?: string;
  raw?: string;
}

export const TraceMessageSchema = z.looseObject({
  type: z.enum(['ERROR', 'ESTIMATE', 'STREAM_STATUS', 'ANALYTICS', 'SLUICE_RECORD_ERROR']),
  emitted_at: z.number(),
  error: z
    .looseObject({
      message: z.string(),
      internal_message: z.string().optional(),
      stack_trace: z.string().optional(),
      failure_type: z.enum(['system_error', 'config_error', 'transient_error']).optional(),
      stream_descriptor: StreamDescriptorSchema.optional(),
    })
    .optional(),
  estimate: z
    .looseObject({
      name: z.string(),
      type: z.enum(['STREAM', 'SYNC']),
      namespace: z.string().optional(),
      row_estimate: z.number().int().optional(),
      byte_estimate: z.number().int().optional(),
    })
    .optional(),
  stream_status: z.looseObject({ stream_descriptor: StreamDescriptorSchema, status: StreamStatusSchema }).optional(),
  record_error: RecordErrorSchema.optional(),
});
export type TraceMessage = z.infer<typeof TraceMessageSchema>;

export const AirbyteStreamSchema = z.looseObject({
  name: z.string(),
  namespace: z.string().optional(),
  json_schema: z.record(z.string(), z.unknown()),
  supported_sync_modes: z.array(SyncModeSchema).min(1),
  source_defined_cursor: z.boolean().optional(),
  default_cursor_field: z.array(z.string()).optional(),
  source_defined_primary_key: z.array(z.array(z.string())).optional(),
  is_resumable: z.boolean().optional(),
});
export type AirbyteStream = z.infer<typeof AirbyteStreamSchema>;

export const CatalogSchema = z.looseObject({ streams: z.array(AirbyteStreamSchema) });
export type AirbyteCatalog = z.infer<typeof CatalogSchema>;

export const ConfiguredStreamSchema = z.looseObject({
  stream: AirbyteStreamSchema,
  sync_mode: SyncModeSchema,
  destination_sync_mode: DestinationSyncModeSchema,
  cursor_field: z.array(z.string()).optional(),
  primary_key: z.array(z.array(z.string())).optional(),
});
export type ConfiguredStream = z.infer<typeof ConfiguredStreamSchema> & {
  /** sluice extension: the stream is read by change data capture (wire sync_mode stays `incremental`). */
  cdc?: boolean;
};
export interface ConfiguredCatalog {
  streams: ConfiguredStream[];
}

export const ConnectionStatusSchema = z.looseObject({
  status: z.enum(['SUCCEEDED', 'FAILED']),
  message: z.string().optional(),
});
export type ConnectionStatus = z.infer<typeof ConnectionStatusSchema>;

export const ConnectorSpecificationSchema = z.looseObject({
  documentationUrl: z.string().optional(),
  connectionSpecification: z.record(z.string(), z.unknown()),
  supportsIncremental: z.boolean().optional(),
  supported_destination_sync_modes: z.array(DestinationSyncModeSchema).optional(),
});
export type ConnectorSpecification = z.infer<typeof ConnectorSpecificationSchema>;

export const AirbyteMessageSchema = z.discriminatedUnion('type', [
  z.looseObject({ type: z.literal('RECORD'), record: RecordMessageSchema }),
  z.looseObject({ type: z.literal('STATE'), state: StateMessageSchema }),
  z.looseObject({ type: z.literal('LOG'), log: LogMessageSchema }),
  z.looseObject({ type: z.literal('TRACE'), trace: TraceMessageSchema }),
  z.looseObject({ type: z.literal('SPEC'), spec: ConnectorSpecificationSchema }),
  z.looseObject({ type: z.literal('CATALOG'), catalog: CatalogSchema }),
  z.looseObject({ type: z.literal('CONNECTION_STATUS'), connectionStatus: ConnectionStatusSchema }),
]);
export type AirbyteMessage = z.infer<typeof AirbyteMessageSchema>;

/** Airbyte's CDC convention: a record whose data carries a non-null `_ab_cdc_deleted_at` is a deletion. */
export const CDC_DELETED_AT = '_ab_cdc_deleted_at';

/** How much of a bad record's raw text a dead letter keeps (characters). */
export const MAX_RAW_RECORD_CHARS = 16_384;

/** Cuts a raw record to MAX_RAW_RECORD_CHARS, saying how long it was. */
export function truncateRaw(raw: string, max = MAX_RAW_RECORD_CHARS): string {
  return raw.length <= max ? raw : `${raw.slice(0, max)}… [${raw.length - max} more characters]`;
}

// ---- constructors, so connectors never hand-assemble envelopes -------------------------------

type Envelope<T extends AirbyteMessage['type']> = Extract<AirbyteMessage, { type: T }>;

export const message = {
  /** `digest`: the row's digest, when the engine asked for digests (ConnectorContext.storedDigests). */
  record(stream: string, data: Record<string, unknown>, emittedAt = Date.now(), digest?: string): Envelope<'RECORD'> {
    return digest === undefined
      ? { type: 'RECORD', record: { stream, data, emitted_at: emittedAt } }
      : { type: 'RECORD', record: { stream, data, emitted_at: emittedAt, digest } };
  },
  /** A deletion of the document identified by the primary-key fields in `key`. */
  deletion(stream: string, key: Record<string, unknown>, emittedAt = Date.now()): Envelope<'RECORD'> {
    return {
      type: 'RECORD',
      record: { stream, data: { ...key, [CDC_DELETED_AT]: new Date(emittedAt).toISOString() }, emitted_at: emittedAt },
    };
  },
  streamState(stream: string, state: Record<string, unknown>): Envelope<'STATE'> {
    return { type: 'STATE', state: { type: 'STREAM', stream: { stream_descriptor: { name: stream }, stream_state: state } } };
  },
  globalState(shared: Record<string, unknown>, streams: Record<string, Record<string, unknown>> = {}): Envelope<'STATE'> {
    return {
      type: 'STATE',
      state: {
        type: 'GLOBAL',
        global: {
          shared_state: shared,
          stream_states: Object.entries(streams).map(([name, s]) => ({ stream_descriptor: { name }, stream_state: s })),
        },
      },
    };
  },
  log(level: LogMessage['level'], text: string): Envelope<'LOG'> {
    return { type: 'LOG', log: { level, message: text } };
  },
  streamStatus(stream: string, status: z.infer<typeof StreamStatusSchema>): Envelope<'TRACE'> {
    return {
      type: 'TRACE',
      trace: { type: 'STREAM_STATUS', emitted_at: Date.now(), stream_status: { stream_descriptor: { name: stream }, status } },
    };
  },
  estimate(stream: string, rows: number, bytes?: number): Envelope<'TRACE'> {
    return {
      type: 'TRACE',
      trace: {
        type: 'ESTIMATE',
        emitted_at: Date.now(),
        estimate: {
          name: stream,
          type: 'STREAM',
          row_estimate: Math.round(rows),
          ...(bytes != null ? { byte_estimate: Math.round(bytes) } : {}),
        },
      },
    };
  },
  /**
   * One input record the source could not parse (sluice extension, see RecordErrorSchema): the
   * engine fails the run or stores a dead letter, as the connection's `errors:` says. `raw` may be
   * long: the engine keeps at most MAX_RAW_RECORD_CHARS of it.
   */
  recordError(stream: string, error: RecordErrorDetails): Envelope<'TRACE'> {
    return { type: 'TRACE', trace: { type: 'SLUICE_RECORD_ERROR', emitted_at: Date.now(), record_error: { stream, ...error } } };
  },
  error(
    text: string,
    failureType: 'system_error' | 'config_error' | 'transient_error' = 'system_error',
    stream?: string,
  ): Envelope<'TRACE'> {
    return {
      type: 'TRACE',
      trace: {
        type: 'ERROR',
        emitted_at: Date.now(),
        error: { message: text, failure_type: failureType, ...(stream ? { stream_descriptor: { name: stream } } : {}) },
      },
    };
  },
};
