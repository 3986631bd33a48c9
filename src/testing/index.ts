// sluice/testing — the conformance kit every connector (built-in or custom) runs.
export { runSourceConformance, SOURCE_CHECKS, describeFailure } from './source.ts';
export type { SourceConformanceOptions } from './source.ts';
export { runDestinationConformance, DESTINATION_CHECKS } from './destination.ts';
export { FINGERPRINT_CHECKS, SOURCE_DIGEST_CHECKS } from './fingerprints.ts';
export type { DestinationConformanceOptions, StoredChunk } from './destination.ts';
export { formatReport } from './report.ts';
export type { CheckOutcome, ConformanceReport } from './report.ts';
export { scratchDir, testContext } from './context.ts';
export type { TestContext, LogEntry } from './context.ts';
export { protocolValidators, sharedSpecsDir } from './schema.ts';
export { describeSourceConformance, describeDestinationConformance } from './vitest.ts';
export { pgMessage, copyOutResponse, copyCompleted, fakeCopyOut, readCopyOut } from './postgres-copy.ts';
export type { FakeCopyOut } from './postgres-copy.ts';
