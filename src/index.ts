// `sluice`: run pipelines from code — load a pipeline file and sync it, as `sluice sync` does.
// Connector authors want `sluice/cdk`; conformance tests `sluice/testing`.
export { loadPipeline, ConfigError } from './config/load.ts';
export type { ConfigProblem, LoadedConnection, LoadedPipeline } from './config/load.ts';
export { runSync } from './engine/sync.ts';
export type { ConnectionSummary, StreamStats, SyncOptions, SyncSummary } from './engine/sync.ts';
export { SluiceError } from './protocol/errors.ts';
export type { Destination, Logger, Source } from './protocol/connector.ts';
