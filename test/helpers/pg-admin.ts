// One superuser client per describe block, for a test to look at (or damage) what sluice wrote.
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';

/**
 * Registers hooks that connect a client to `url()` before the block's tests and close it after;
 * returns its `query`, usable inside the tests (`url` is read when the hook runs, e.g. `() => backend.url`).
 */
export function useAdminClient(url: () => string): Pick<pg.Client, 'query'> {
  let client: pg.Client | undefined;
  beforeAll(async () => {
    client = new pg.Client({ connectionString: url() });
    await client.connect();
  });
  afterAll(async () => {
    await client?.end();
  });
  const query = ((...args: Parameters<pg.Client['query']>) => {
    if (!client) throw new Error('useAdminClient: query() before the beforeAll hook connected');
    return (client.query as (...a: unknown[]) => unknown)(...args);
  }) as pg.Client['query'];
  return { query };
}
