export { FileStateStore, atomicWrite, type StateStore } from './store.ts';
export { applyStateMessage, deepMerge, dropStreams, mergeConnectionState } from './merge.ts';
export { PostgresStateStore, describeDatabaseUrl } from './postgres.ts';
export { openStateStore, openCacheFor } from './open.ts';
