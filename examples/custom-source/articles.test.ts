// The example source passes the same conformance kit as the built-in connectors, against a local
// copy of its API.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSourceConformance, testContext } from 'sluice/testing';
import { describeSourceConformance } from 'sluice/testing';
import source from './articles.ts';
import { sampleArticles, startArticlesApi, type ArticlesApi } from './fixture-server.ts';

let api: ArticlesApi;
let closed: ArticlesApi;
beforeAll(async () => {
  api = await startArticlesApi({ articles: sampleArticles(37), token: 'example-token' });
  closed = await startArticlesApi();
  await closed.close();
});
afterAll(() => api.close());

describeSourceConformance('articles example', () => ({
  source,
  config: { base_url: api.url, api_token: 'example-token', page_size: 8 },
  badConfigs: [{ base_url: api.url, api_token: 'wrong-token' }, { base_url: closed.url }, { base_url: 'not a url' }],
}));

describe('articles example', () => {
  it('retries a rate-limited request after Retry-After and reads everything', async () => {
    api.throttleNext(2, 0);
    const before = api.requests;
    const ids: number[] = [];
    const catalog = {
      streams: [
        {
          stream: (await source.discover(source.spec.config.parse({ base_url: api.url }), testContext())).streams[0],
          sync_mode: 'full_refresh' as const,
          destination_sync_mode: 'overwrite' as const,
        },
      ],
    };
    for await (const m of source.read(
      source.spec.config.parse({ base_url: api.url, api_token: 'example-token', page_size: 10 }),
      catalog,
      undefined,
      testContext(),
    )) {
      if (m.type === 'RECORD') ids.push(m.record.data.id as number);
    }
    expect(ids).toEqual(Array.from({ length: 37 }, (_, i) => i + 1));
    // 2 throttled + 4 pages
    expect(api.requests - before).toBe(6);
  });

  it('reports a wrong token as a clean check failure', async () => {
    const r = await source.check(source.spec.config.parse({ base_url: api.url, api_token: 'nope' }), testContext());
    expect(r.ok).toBe(false);
    expect(r.message).toMatch(/HTTP 401/);
    expect(r.message).not.toContain('nope');
  });

  it('full report passes', async () => {
    const report = await runSourceConformance(source, { config: { base_url: api.url, api_token: 'example-token', page_size: 8 } });
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
  });
});
