// `sluice test-connector` counts skipped checks apart from passed ones, fails on a skip with
// --strict (the default when CI is set), and reads back through a `readBack` the module exports,
// so a CLI run is as strong as one from vitest.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO, runCli, tempDir } from '../helpers/cli.ts';

// A correct file-backed destination: one JSON file of rows per stream, written atomically.
const destination = `import { readFileSync, writeFileSync, renameSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { defineDestination, z } from 'sluice/cdk';

type Row = { documentId: string; chunkIndex: number; content: string };
const fileOf = (dir: string, stream: string) => join(dir, stream + '.json');
const load = (dir: string, stream: string): Row[] =>
  existsSync(fileOf(dir, stream)) ? JSON.parse(readFileSync(fileOf(dir, stream), 'utf8')) : [];

export default defineDestination({
  spec: { name: 'rows', config: z.strictObject({ dir: z.string() }) },
  destinationSyncModes: ['append_dedup'],
  async connect(config) {
    return {
      async writeBatch(ops) {
        const touched = new Map<string, Row[]>();
        for (const op of ops) {
          const rows = (touched.get(op.stream) ?? load(config.dir, op.stream)).filter((r) => r.documentId !== op.documentId);
          if (op.type === 'DOCUMENT')
            rows.push(...op.chunks.map((c) => ({ documentId: op.documentId, chunkIndex: c.chunkIndex, content: c.content })));
          touched.set(op.stream, rows);
        }
        for (const [stream, rows] of touched) {
          writeFileSync(fileOf(config.dir, stream) + '.tmp', JSON.stringify(rows));
          renameSync(fileOf(config.dir, stream) + '.tmp', fileOf(config.dir, stream));
        }
      },
      async close() {},
    };
  },
});
`;
const readBackExport = `
export async function readBack(config: { dir: string }, _ctx: unknown, stream: string) {
  return load(config.dir, stream);
}
`;

describe('sluice test-connector: skips, --strict and readBack', () => {
  const dir = tempDir('sluice-kit-cli-', true);
  const store = tempDir('sluice-kit-cli-store-');
  writeFileSync(join(dir, 'rows.ts'), destination);
  writeFileSync(join(dir, 'rows-readback.ts'), destination + readBackExport);
  const config = JSON.stringify({ dir: store });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('counts skipped checks apart from passed ones; without CI they do not fail the run', async () => {
    const r = await runCli(['test-connector', join(dir, 'rows.ts'), '--config', config], { cwd: REPO, env: { CI: '' } });
    expect(r.stdout).toContain('destination rows: PASSED');
    expect(r.stdout).toMatch(/- write\.every-batch-stored \(skipped: the destination has neither readBack\(\) nor search\(\)/);
    expect(r.stdout).toContain('· write.overwrite (not applicable: overwrite is not supported)');
    expect(r.stdout).toContain('7 passed, 0 failed, 7 skipped, 8 not applicable (22 checks)');
    expect(r.code).toBe(0);
  });

  it('--strict, and CI=true by default, fail a run with a skipped check', async () => {
    for (const run of [
      runCli(['test-connector', join(dir, 'rows.ts'), '--config', config, '--strict'], { cwd: REPO, env: { CI: '' } }),
      runCli(['test-connector', join(dir, 'rows.ts'), '--config', config], { cwd: REPO, env: { CI: 'true' } }),
    ]) {
      const r = await run;
      expect(r.stdout).toContain('destination rows: FAILED');
      expect(r.stdout).toContain('strict mode: a skipped check is a failure');
      expect(r.code).toBe(1);
    }
    const allowed = await runCli(['test-connector', join(dir, 'rows.ts'), '--config', config, '--no-strict'], {
      cwd: REPO,
      env: { CI: 'true' },
    });
    expect(allowed.code).toBe(0);
  });

  it('reads back through the module’s readBack export: every check runs and passes', async () => {
    const r = await runCli(['test-connector', join(dir, 'rows-readback.ts'), '--config', config, '--strict'], { cwd: REPO });
    expect(r.stdout).toContain('destination rows: PASSED');
    expect(r.stdout).toContain('14 passed, 0 failed, 0 skipped, 8 not applicable (22 checks)');
    expect(r.stdout).toMatch(/✓ cleanup\.test-data-removed: deleted the \d+ test documents/);
    expect(r.code).toBe(0);
  });

  it('a scaffolded destination exports readBack, so its pipeline passes --strict with nothing skipped', async () => {
    const project = tempDir('sluice-kit-cli-scaffold-', true);
    expect((await runCli(['init', 'connector', 'my-store', '--kind', 'destination', '--dir', project])).code).toBe(0);
    const r = await runCli(['test-connector', 'my-store.pipeline.yaml', '--strict'], { cwd: project });
    expect(r.stdout).toContain('15 passed, 0 failed, 0 skipped, 7 not applicable (22 checks)');
    expect(r.code).toBe(0);
  });
});
