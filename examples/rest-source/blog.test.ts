// The blog source of docs/custom-connectors.md passes the conformance kit against the local API,
// with nothing skipped (only the source-digest checks do not apply), and refuses a wrong token with a clean error.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSourceConformance } from 'sluice/testing';
import blog from './connectors/blog.ts';
import { startBlogApi, type BlogApi } from './blog-api.ts';

let api: BlogApi;
beforeAll(async () => {
  api = await startBlogApi({ articles: 8 });
});
afterAll(() => api?.close());

describe('the blog source', () => {
  it('passes every conformance check, none skipped', async () => {
    const report = await runSourceConformance(blog, {
      config: { base_url: api.url, token: api.token, requests_per_second: 200 },
      badConfigs: [{ base_url: api.url, token: 'wrong', requests_per_second: 200 }],
    });
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    expect(report.skipped).toBe(0);
    // Only the source-digest checks do not apply: a REST API computes no digest per row.
    expect(report.checks.filter((c) => c.notApplicable).map((c) => c.name)).toEqual([
      'digests.records-carry-digests',
      'digests.skip-rejected-only',
      'digests.skip-all-unchanged',
    ]);
  });

  it('a wrong token fails the read with the request and a hint, not a crash', async () => {
    const report = await runSourceConformance(blog, { config: { base_url: api.url, token: 'wrong' } });
    expect(report.checks.find((c) => c.name === 'read.completes')?.message).toBe(
      `full refresh read failed after 0 records: GET ${api.url}/articles returned HTTP 401: {"error":"unauthorized"} [stream articles, GET ${api.url}/articles] (check the credentials in the connector config)`,
    );
  });
});
