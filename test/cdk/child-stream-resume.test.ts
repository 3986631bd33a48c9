// A child stream keeps one position per parent: a sync of the example blog source
// (examples/rest-source) SIGKILLed in the middle of its comments resumes every article where its
// committed state left it — the second run reads exactly the comments the state did not cover
// (none lost, none read twice), and the output holds every record once.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { REPO, runCli, startCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { startBlogApi, type BlogApi } from '../../examples/rest-source/blog-api.ts';

let api: BlogApi;
let dir: string;
beforeAll(async () => {
  api = await startBlogApi({ articles: 30, delayMs: 15 });
  dir = tempDir('sluice-child-resume-');
  writeFiles(dir, {
    'pipeline.yaml': stringify({
      version: 1,
      connections: [
        {
          name: 'blog',
          source: {
            type: join(REPO, 'examples/rest-source/connectors/blog.ts'),
            config: { base_url: api.url, token: api.token, requests_per_second: 200 },
          },
          destination: { type: 'jsonl', config: { path: './out/blog.jsonl' } },
          processing: { text_fields: ['title', 'body', 'text'] },
          streams: [
            { name: 'articles', sync_mode: 'incremental', destination_sync_mode: 'append_dedup' },
            { name: 'comments', sync_mode: 'incremental', destination_sync_mode: 'append_dedup' },
          ],
        },
      ],
    }),
  });
});
afterAll(() => api?.close());

const commentRequests = () => api.log.filter((l) => /\/comments/.test(l.path));

describe('child stream state survives SIGKILL', () => {
  it('resumes each parent from its own committed position', async () => {
    // Run 1: killed once about a third of the articles' comments have been fetched.
    const { child, done } = startCli(['sync', 'pipeline.yaml'], { cwd: dir });
    const timer = setInterval(() => {
      if (commentRequests().length >= 20) child.kill('SIGKILL');
    }, 2);
    const first = await done;
    clearInterval(timer);
    expect(first.signal).toBe('SIGKILL');

    // What run 1 committed: one position per article whose comments were (partly) read.
    const shown = await runCli(['state', 'show', 'pipeline.yaml', '--json'], { cwd: dir });
    expect(shown.code).toBe(0);
    const partitions = (
      JSON.parse(shown.stdout) as { blog: { streams: { comments?: { partitions: Record<string, { cursor: string; key: number[] }> } } } }
    ).blog.streams.comments?.partitions;
    expect(partitions && Object.keys(partitions).length).toBeGreaterThan(0);
    const covered = api.comments.filter((c) => {
      const p = partitions![String(c.article_id)];
      return p && (c.updated_at < p.cursor || (c.updated_at === p.cursor && c.id <= p.key[0]));
    });
    expect(covered.length).toBeGreaterThan(0);
    expect(covered.length).toBeLessThan(api.comments.length);

    // Run 2 reads exactly what the state did not cover, asking each article from its own position.
    const before = api.log.length;
    const second = await runCli(['sync', 'pipeline.yaml', '--json'], { cwd: dir });
    expect(second.code, second.stderr).toBe(0);
    const summary = JSON.parse(second.stdout) as { connections: { streams: Record<string, { records_read: number }> }[] };
    expect(summary.connections[0].streams.comments.records_read).toBe(api.comments.length - covered.length);
    for (const [article, p] of Object.entries(partitions!)) {
      const asked = api.log.slice(before).find((l) => l.path.startsWith(`/articles/${article}/comments?`));
      expect(asked?.path).toContain(`updated_since=${encodeURIComponent(p.cursor)}`);
    }

    // Every article and comment is in the output exactly once.
    const lines = readFileSync(join(dir, 'out/blog.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { stream: string; document_id: string });
    const ids = (stream: string) =>
      lines
        .filter((l) => l.stream === stream)
        .map((l) => Number(l.document_id))
        .sort((a, b) => a - b);
    expect(ids('comments')).toEqual(api.comments.map((c) => c.id).sort((a, b) => a - b));
    expect(ids('articles')).toEqual(api.articles.map((a) => a.id));

    // A third run finds nothing new.
    const third = await runCli(['sync', 'pipeline.yaml', '--json'], { cwd: dir });
    const s3 = JSON.parse(third.stdout) as typeof summary;
    expect(s3.connections[0].streams.comments.records_read).toBe(0);
  });
});
