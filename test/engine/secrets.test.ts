// Invariant 7: a secret from the environment never appears in output, on success or failure.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { runCli, STACK_LINE, tempDir, writeFiles } from '../helpers/cli.ts';

const SECRET = 'sk-test-TOPSECRET-4242';

describe('secrets', () => {
  it('an API key from the environment is not printed when the embedding provider is unreachable', async () => {
    const dir = tempDir();
    writeFiles(dir, {
      'docs/a.md': 'Alpha.',
      'p.yaml': `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs } }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
    embedding: { provider: openai-compatible, base_url: "http://127.0.0.1:9/v1", model: m, dimensions: 8, api_key: "\${MY_EMBED_KEY}", max_retries: 0 }
`,
    });
    for (const args of [
      ['sync', 'p.yaml'],
      ['sync', 'p.yaml', '--json'],
      ['sync', 'p.yaml', '--debug'],
      ['check', 'p.yaml'],
    ]) {
      const r = await runCli(args, { cwd: dir, env: { MY_EMBED_KEY: SECRET } });
      const out = r.stdout + r.stderr;
      if (args[0] === 'sync') expect(r.code, out).not.toBe(0);
      expect(out).not.toContain(SECRET);
      expect(out).not.toContain('TOPSECRET');
      if (!args.includes('--debug')) expect(out).not.toMatch(STACK_LINE);
    }
  });

  it('a password inside a connection URL is not echoed in validation errors', async () => {
    const dir = tempDir();
    writeFiles(dir, {
      'docs/a.md': 'Alpha.',
      'p.yaml': `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs, bogus: "postgres://user:\${DB_PASSWORD}@localhost/db" } }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
`,
    });
    const r = await runCli(['validate', join(dir, 'p.yaml')], { cwd: dir, env: { DB_PASSWORD: 'hunter2-very-secret' } });
    expect(r.code).toBe(2);
    expect(r.stdout + r.stderr).not.toContain('hunter2-very-secret');
  });
});
