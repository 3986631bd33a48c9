// The Pinecone fixture's life in a test file: one server per file, and after every test no request or
// response that broke Pinecone's OpenAPI (kept apart from test-helpers.ts, which the bench imports
// outside vitest).
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { startPineconeFixture, type PineconeFixture } from '../../test/fixtures/pinecone-server.ts';

/** Starts the fixture before the file's tests (handing it to `use`) and checks its violations after each. */
export function usePineconeFixture(use: (fx: PineconeFixture) => void): void {
  let fx: PineconeFixture | undefined;
  beforeAll(async () => {
    fx = await startPineconeFixture();
    use(fx);
  });
  afterAll(async () => {
    await fx?.close();
  });
  afterEach(() => {
    expect(fx?.violations).toEqual([]);
  });
}
