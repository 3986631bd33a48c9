export { FileStateStore, atomicWrite, type StateStore } from './store.ts';
export { applyStateMessage, deepMerge, mergeConnectionState } from './merge.ts';
