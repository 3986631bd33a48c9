// read() hands the engine one message per next(), but reads produce them a network chunk at a time:
// the kit's flatten (src/cdk/batches.ts) gives them one by one; batchedMessages also offers the arrays.
export { flatten } from '../../src/cdk/batches.ts';
