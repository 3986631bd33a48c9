import { bearerAuth, defineSource, z } from 'sluice/cdk';

export default defineSource({
  spec: {
    name: 'blog',
    config: z.strictObject({
      base_url: z.url(),
      token: z.string().meta({ secret: true }),
      requests_per_second: z.number().positive().default(10),
    }),
  },
  // One HTTP client per sync, shared by both streams: base URL, bearer token, rate limit.
  http: (c) => ({ baseUrl: c.base_url, auth: bearerAuth(c.token), rateLimit: { perSecond: c.requests_per_second } }),
  validate: 'fail', // a record that does not match its schema stops the sync with a clear error
  async check(_config, _ctx, http) {
    await http.fetchJson('/articles', { query: { per_page: 1 }, retries: 1 }); // proves the URL and the token
  },
  streams: [
    {
      name: 'articles',
      schema: z.object({ id: z.number(), title: z.string(), body: z.string(), updated_at: z.iso.datetime() }),
      primaryKey: 'id',
      cursorField: 'updated_at',
      async *read({ http, since }) {
        yield* http.paginate({ path: '/articles', query: { updated_since: since }, pagination: { type: 'link' } });
      },
    },
    {
      name: 'comments',
      parent: 'articles', // read once per article, with one saved position per article
      schema: z.object({ id: z.number(), article_id: z.number(), text: z.string(), updated_at: z.iso.datetime() }),
      primaryKey: 'id',
      cursorField: 'updated_at',
      async *read({ http, parent, since }) {
        yield* http.paginate({ path: `/articles/${parent.id}/comments`, query: { updated_since: since }, pagination: { type: 'link' } });
      },
    },
  ],
});
