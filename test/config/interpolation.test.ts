// ${VAR} interpolation in pipeline files (Compose's syntax): defaults, required variables with a
// message, the $${ escape, and types: a quoted value stays a string whatever the variable holds.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadPipeline } from '../../src/config/load.ts';
import { runCli, STACK_LINE, tempDir } from '../helpers/cli.ts';

function pipeline(source: string): string {
  const dir = tempDir('interpolation-');
  const file = join(dir, 'pipeline.yaml');
  writeFileSync(
    file,
    `version: 1
connections:
  - name: docs
    source:
${source}
    destination: { type: jsonl, config: { path: ./out.jsonl } }
`,
  );
  return file;
}

const sourceConfig = async (file: string, env: Record<string, string>) =>
  (await loadPipeline(file, env)).connections[0]!.sourceConfig as Record<string, unknown>;

describe('pipeline interpolation', () => {
  it('a quoted value stays a string whatever the variable holds; an unquoted one is typed as YAML would', async () => {
    const file = pipeline(`      type: file
      config:
        path: "\${DIR}"
        stream: "\${PW}"
        include: ["\${FLAG}", '\${DB}', "\${DB}-\${FLAG}"]
        checkpoint_every: \${EVERY}`);
    const config = await sourceConfig(file, { DIR: '007', PW: '98765432', FLAG: 'true', DB: '007', EVERY: '50' });
    expect(config.path).toBe('007');
    expect(config.stream).toBe('98765432');
    expect(config.include).toEqual(['true', '007', '007-true']);
    expect(config.checkpoint_every).toBe(50);
  });

  it('an unquoted number where a string is expected is still refused, naming the key', async () => {
    const file = pipeline(`      type: file
      config: { path: ./docs, stream: \${PW} }`);
    const err = await loadPipeline(file, { PW: '98765432' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(
      /pipeline\.yaml:6: connections\[0\]\.source\.config\.stream: expected string, got number 98765432/,
    );
  });

  it('${VAR:-default} covers unset and empty; ${VAR:?message} fails with the message', async () => {
    const file = pipeline(`      type: file
      config: { path: "\${DIR:-./docs}", stream: \${STREAM:?set STREAM to the stream name} }`);
    expect(await sourceConfig(file, { DIR: '', STREAM: 'notes' })).toMatchObject({ path: './docs', stream: 'notes' });
    const err = await loadPipeline(file, { STREAM: '' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(
      `${file}:6: connections[0].source.config.stream: environment variable STREAM is not set: set STREAM to the stream name`,
    );
  });

  it('$${ is a literal ${, also in a flow mapping, and is not looked up', async () => {
    const file = pipeline(`      type: file
      config: { path: ./docs, stream: $\${NOT_A_VAR}, include: ["$\${HOME}/*.md", "\${EXT:-md}-$\${X}"] }`);
    const config = await sourceConfig(file, {});
    expect(config.stream).toBe('${NOT_A_VAR}');
    expect(config.include).toEqual(['${HOME}/*.md', 'md-${X}']);
  });

  it('the CLI reports a required variable in one line, exit 2, no stack trace', async () => {
    const file = pipeline(`      type: file
      config: { path: "\${DOCS_DIR:?point DOCS_DIR at your markdown folder}" }`);
    const r = await runCli(['validate', file], { env: { DOCS_DIR: '' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'pipeline.yaml:6: connections[0].source.config.path: environment variable DOCS_DIR is not set: point DOCS_DIR at your markdown folder',
    );
    expect(r.stderr).not.toMatch(STACK_LINE);
  });
});
