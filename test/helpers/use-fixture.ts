// A vendor fixture's life in a test file (Qdrant, Pinecone): one server per file, and after every
// test no request or response that broke the vendor's OpenAPI.
import { afterAll, afterEach, beforeAll, expect } from 'vitest';

interface Fixture {
  violations: unknown[];
  close(): Promise<void>;
}

/** Starts the fixture before the file's tests (handing it to `use`), checks its violations after each, closes it at the end. */
export function useFixture<F extends Fixture>(start: () => Promise<F>, use: (fx: F) => void): void {
  let fx: F | undefined;
  beforeAll(async () => {
    fx = await start();
    use(fx);
  });
  afterAll(async () => {
    await fx?.close();
  });
  afterEach(() => {
    expect(fx?.violations).toEqual([]);
  });
}
