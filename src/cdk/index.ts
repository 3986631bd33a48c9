// sluice/cdk — the connector authoring kit. Built-in connectors use exactly these helpers.
export { defineSource, deleted, badRecord, isBadRecord, normalizeKey, streamJsonSchema, streamToAirbyte } from './source.ts';
export type { BadRecord, Deletion, RecordValidation, SourceDefinition, StreamDefinition, StreamReadContext } from './source.ts';
export { defineDestination, batchedWriter, operationBytes } from './destination.ts';
export { CommitQueue, pullOrWake } from './commits.ts';
export { batchedMessages, messageBatches, MESSAGE_BATCHES } from './batches.ts';
export type { BatchedMessages } from './batches.ts';
export type { BatchOptions, BatchResult, BatchSink, DestinationDefinition, WriteOperation } from './destination.ts';
export { CursorTracker, compareValues, isCursorState } from './cursor.ts';
export type { CursorOrdering, CursorState, CursorTrackerOptions } from './cursor.ts';
export { fetchJson, paginate, nextLink, withQuery, HttpClient, HttpStatusError, describeRetries, newRetryStats } from './http.ts';
export type { HttpClientOptions, HttpRequestOptions, HttpResponse, PaginateOptions, Pagination, QueryValue, RetryStats } from './http.ts';
export { apiKeyAuth, basicAuth, bearerAuth, oauth2RefreshToken } from './auth.ts';
export type { Authenticator, AuthRequest, OAuth2RefreshTokenOptions } from './auth.ts';
export { RequestRateLimiter } from './rate-limit.ts';
export type { RateLimitOptions } from './rate-limit.ts';
export { CopyOutReader, copyOut } from './postgres-copy.ts';
export type { CopyOutClient, CopyOutConnection, CopyOutSink } from './postgres-copy.ts';
export { configJsonSchema, connectorSpecification, secretPaths } from './spec.ts';
export { validateConnectorModule } from './validate.ts';
export { airbyteSecretValues, configProblemsAgainstJsonSchema } from './json-schema-config.ts';
export type { JsonSchemaConfigOptions, JsonSchemaConfigProblem } from './json-schema-config.ts';
export { connectionUrlProblem } from './url.ts';
// The contract and helpers a connector needs, so one import is enough.
export { z } from 'zod';
export { message, CDC_DELETED_AT, MAX_RAW_RECORD_CHARS } from '../protocol/messages.ts';
export type {
  AirbyteCatalog,
  AirbyteMessage,
  AirbyteStream,
  ConfiguredCatalog,
  ConfiguredStream,
  RecordError,
  RecordErrorDetails,
  StateMessage,
} from '../protocol/messages.ts';
export type {
  CheckResult,
  Chunk,
  ConnectorContext,
  Destination,
  DestinationEvent,
  DestinationMessage,
  DestinationSandbox,
  DestinationStream,
  DestinationWriter,
  DigestCheck,
  DocumentFingerprint,
  OpenOptions,
  ResourceShelf,
  ShardContext,
  Source,
  SourceState,
  StoredChunk,
  StoredDigests,
  StoredDocument,
  StoredSource,
} from '../protocol/connector.ts';
export { SluiceError } from '../protocol/errors.ts';
export { documentId, chunkId, chunkUuid } from '../protocol/identity.ts';
export { retry, isRetryableError, retryAfterMs } from '../net/retry.ts';
