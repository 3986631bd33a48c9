// Example custom source: articles from a paginated REST API, synced incrementally by updated_at.
// Run it from a pipeline with `type: ./articles.ts` (see pipeline.yaml); no build step needed.
import { defineSource, deleted, paginate, SluiceError, z } from 'sluice/cdk';

const config = z.strictObject({
  base_url: z.url().describe('API root, e.g. https://api.example.com'),
  api_token: z.string().optional().meta({ secret: true }).describe('Bearer token, if the API needs one (empty: none)'),
  page_size: z.number().int().min(1).max(100).default(50).describe('Articles per request'),
  start_date: z.iso.datetime().optional().describe('Ignore articles updated before this instant (first sync only)'),
});
type Config = z.output<typeof config>;

const Article = z.object({
  id: z.number().int(),
  title: z.string(),
  body: z.string(),
  author: z.string().nullable(),
  tags: z.array(z.string()),
  updated_at: z.iso.datetime(),
});

const headers = (c: Config): Record<string, string> => (c.api_token ? { authorization: `Bearer ${c.api_token}` } : {});

export default defineSource({
  spec: {
    name: 'articles',
    title: 'Articles API',
    description: 'Articles from a paginated REST API (Link header pagination), incremental by updated_at',
    config,
  },

  async check(c, ctx) {
    // One small request proves the URL and the token; HTTP errors become clean ok:false results.
    for await (const _ of paginate({
      url: `${c.base_url}/v1/articles`,
      query: { per_page: 1 },
      headers: headers(c),
      pagination: { type: 'none' },
      signal: ctx.signal,
      retries: 1,
    }))
      break;
    return { ok: true };
  },

  streams: [
    {
      name: 'articles',
      description: 'One record per article; soft-deleted articles arrive as deletions',
      schema: Article,
      primaryKey: 'id',
      cursorField: 'updated_at',
      // The API sorts by (updated_at, id), so a state can be cut anywhere, even inside a tie.
      ordering: 'cursor_then_key',
      stateEvery: 25,
      async *read({ config: c, since, signal, ctx }) {
        const updatedSince = (since as string | undefined) ?? c.start_date;
        const pages = paginate<Record<string, unknown>>({
          url: `${c.base_url}/v1/articles`,
          query: { per_page: c.page_size, updated_since: updatedSince },
          headers: headers(c),
          pagination: { type: 'link' },
          signal,
          logger: ctx.logger,
        });
        for await (const a of pages) {
          if (a.deleted === true) {
            yield deleted({ id: a.id, updated_at: a.updated_at });
            continue;
          }
          if (typeof a.id !== 'number')
            throw new SluiceError(`the API returned an article without a numeric id: ${JSON.stringify(a).slice(0, 100)}`, {
              kind: 'source',
            });
          yield {
            id: a.id as number,
            title: String(a.title ?? ''),
            body: String(a.body ?? ''),
            author: (a.author as string | null) ?? null,
            tags: (a.tags as string[]) ?? [],
            updated_at: String(a.updated_at),
          };
        }
      },
    },
  ],
});
