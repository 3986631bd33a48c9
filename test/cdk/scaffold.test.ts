// `sluice init connector` output works unchanged: its own conformance tests pass (they are
// imported and run right here), the kit passes through the CLI, and its pipeline syncs into jsonl.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { scaffoldConnector } from '../../src/cdk/scaffold.ts';
import { runDestinationConformance, runSourceConformance } from 'sluice/testing';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/sluice.js');
// Inside the repository so the generated `import … from 'sluice/cdk'` resolves by self-reference.
const dir = mkdtempSync(join(ROOT, '.tmp-cdk-scaffold-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, NO_COLOR: '1' }, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

// Generated through the CLI, as a user would.
const made = await cli(['init', 'connector', 'my-api', '--kind', 'source', '--dir', dir], ROOT);
const madeDest = await cli(['init', 'connector', 'my-store', '--kind', 'destination', '--dir', dir], ROOT);

// The generated test files, unchanged, register their conformance suites in this file.
await import(join(dir, 'connectors/my-api.test.ts'));
await import(join(dir, 'connectors/my-store.test.ts'));

describe('sluice init connector', () => {
  it('writes connector, test and pipeline files and says what to do next', () => {
    expect(made.code).toBe(0);
    expect(madeDest.code).toBe(0);
    for (const f of [
      'connectors/my-api.ts',
      'connectors/my-api.test.ts',
      'my-api.pipeline.yaml',
      'connectors/my-store.ts',
      'connectors/my-store.test.ts',
      'my-store.pipeline.yaml',
      'docs/example.md', // the sample input the destination's pipeline reads
    ]) {
      expect(existsSync(join(dir, f)), f).toBe(true);
    }
    expect(made.stdout).toContain('sluice test-connector');
    expect(readFileSync(join(dir, 'connectors/my-api.ts'), 'utf8')).toContain("from 'sluice/cdk'");
    expect(readFileSync(join(dir, 'connectors/my-api.test.ts'), 'utf8')).toContain("from 'sluice/testing'");
  });

  it('refuses to overwrite files and rejects bad names and kinds', async () => {
    await expect(scaffoldConnector({ name: 'my-api', kind: 'source', dir })).rejects.toThrow(/not overwriting .*my-api\.ts/);
    await expect(scaffoldConnector({ name: 'My API', kind: 'source', dir })).rejects.toThrow('connector name "My API" is not valid');
    const bad = await cli(['init', 'connector', 'x', '--kind', 'sink', '--dir', dir], ROOT);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('--kind must be "source" or "destination", not "sink"');
    expect(bad.stderr).not.toMatch(/\n\s+at /);
  });

  it('the generated source passes the kit through `sluice test-connector <pipeline>`', async () => {
    const r = await cli(['test-connector', 'my-api.pipeline.yaml'], dir);
    expect(r.stdout).toContain('source my-api: PASSED');
    expect(r.stdout).toContain('14 passed, 0 failed, 0 skipped, 3 not applicable (17 checks)');
    expect(r.code).toBe(0);
  });

  it('a pipeline using the generated source syncs into jsonl, and a second sync reads nothing new', async () => {
    const first = await cli(['sync', 'my-api.pipeline.yaml', '--json'], dir);
    expect(first.code, first.stderr).toBe(0);
    const summary = JSON.parse(first.stdout);
    expect(summary.connections[0].streams.items.records_written).toBe(30);
    const lines = readFileSync(join(dir, 'out/my-api.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.document_id).sort((a: string, b: string) => Number(a) - Number(b))).toEqual(
      Array.from({ length: 30 }, (_, i) => String(i + 1)),
    );
    expect(lines[0].content).toContain('Item');
    const second = JSON.parse((await cli(['sync', 'my-api.pipeline.yaml', '--json'], dir)).stdout);
    expect(second.connections[0].streams.items.records_read).toBe(0);
  });

  it('a pipeline into the generated destination syncs files into it', async () => {
    mkdirSync(join(dir, 'docs'), { recursive: true });
    writeFileSync(join(dir, 'docs/a.md'), '# A\n\nFirst document.\n');
    writeFileSync(join(dir, 'docs/b.md'), '# B\n\nSecond document.\n');
    const r = await cli(['sync', 'my-store.pipeline.yaml', '--json'], dir);
    expect(r.code, r.stderr).toBe(0);
    const { readStream } = (await import(join(dir, 'connectors/my-store.ts'))) as {
      readStream: (root: string, s: string) => Promise<{ documentId: string; chunks: { embedding?: number[] }[] }[]>;
    };
    const docs = await readStream(join(dir, 'out/my-store'), 'docs');
    expect(docs.map((d) => d.documentId).sort()).toEqual(['a.md', 'b.md', 'example.md']);
    expect(docs[0].chunks[0].embedding).toHaveLength(64);
  });

  it('the kit functions pass on the generated connectors directly', async () => {
    const src = (await import(join(dir, 'connectors/my-api.ts'))).default;
    expect((await runSourceConformance(src, { config: { count: 7 } })).ok).toBe(true);
    const dest = (await import(join(dir, 'connectors/my-store.ts'))).default;
    const report = await runDestinationConformance(dest, { config: { path: join(dir, 'out/kit') } });
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    // The fingerprint methods are a commented example: not applicable until opted in.
    expect(report.checks.find((c) => c.name === 'fingerprints.stored-with-document')?.notApplicable).toBe(true);
  });

  it('uncommenting the fingerprint example opts the destination in, and it keeps the contract', async () => {
    const code = readFileSync(join(dir, 'connectors/my-store.ts'), 'utf8');
    expect(code).toContain('docs/fingerprints.md');
    // Uncomment each block that follows its explaining comment, as an author would.
    const lines = code.split('\n');
    for (const marker of ['// Skip unchanged documents:', '// Every stored document with its fingerprint']) {
      let i = lines.findIndex((l) => l.trim().startsWith(marker)) + 1;
      expect(i, marker).toBeGreaterThan(0);
      for (; lines[i].trim().startsWith('//'); i++) {
        lines[i] = lines[i].replace('// ', '');
        if (lines[i].trim() === '},') break;
      }
    }
    writeFileSync(join(dir, 'connectors/my-store-fp.ts'), lines.join('\n'));
    const mod = await import(join(dir, 'connectors/my-store-fp.ts'));
    const report = await runDestinationConformance(mod.default, { config: { path: join(dir, 'out/kit-fp') }, readBack: mod.readBack });
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    const fingerprintChecks = report.checks.filter((c) => c.name.startsWith('fingerprints.'));
    expect(fingerprintChecks).toHaveLength(6);
    // The scaffold lists through documents() only: documentBatches() is an optional speed-up it does not offer.
    for (const c of fingerprintChecks)
      expect([c.name, c.ok, c.skipped ?? false, c.notApplicable ?? false]).toEqual([
        c.name,
        true,
        false,
        c.name === 'fingerprints.document-batches-listed',
      ]);
  });
});
