// `sluice spec` and `sluice connectors`: what a user sees when asking about connectors.
import { describe, expect, it } from 'vitest';
import { runCli, STACK_LINE, tempDir, writeFiles } from '../helpers/cli.ts';

describe('sluice spec / connectors', () => {
  it('prints a built-in spec with secrets marked', async () => {
    const r = await runCli(['spec', 'pinecone']);
    expect(r.code, r.stderr).toBe(0);
    const spec = JSON.parse(r.stdout);
    expect(spec.type).toBe('SPEC');
    expect(spec.spec.connectionSpecification.properties.api_key.airbyte_secret).toBe(true);
    expect(spec.spec.supported_destination_sync_modes).toContain('append_dedup');
  });

  it('an unknown name is a clear error; a broken module reports what is wrong with it', async () => {
    const unknown = await runCli(['spec', 'nosuchthing']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('no connector named "nosuchthing"');
    const dir = tempDir('spec-', true);
    writeFiles(dir, { 'broken.ts': `export default { kind: 'source', spec: { name: 'broken' } };` });
    const broken = await runCli(['spec', './broken.ts'], { cwd: dir });
    expect(broken.code).toBe(2);
    expect(broken.stderr).toMatch(/broken\.ts/);
    expect(broken.stderr).toMatch(/read\(\)|discover\(\)|check\(\)/);
    expect(broken.stderr).not.toContain('no connector named');
    expect(broken.stderr).not.toMatch(STACK_LINE);
  });

  it('lists the built-ins with their modes', async () => {
    const r = await runCli(['connectors', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const names = (JSON.parse(r.stdout) as Array<{ kind: string; name: string }>).map((c) => `${c.kind}:${c.name}`);
    expect(names.sort()).toEqual(
      [
        'source:file',
        'source:postgres',
        'source:kafka',
        'source:s3',
        'source:declarative',
        'source:airbyte',
        'destination:jsonl',
        'destination:pgvector',
        'destination:qdrant',
        'destination:pinecone',
        'destination:airbyte',
      ].sort(),
    );
  });
});
