// Starts the real servers tests need (PostgreSQL, PGlite, Kafka mock cluster…) once per run.
// Each `test/servers/<name>.global.ts` exports `setup(provide)` returning a teardown; values it
// provides are read in tests with `inject('<key>')` from vitest.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';

export default async function setup(project: TestProject) {
  const dir = join(dirname(fileURLToPath(import.meta.url)), 'servers');
  const teardowns: Array<() => Promise<void> | void> = [];
  // Scratch directories of this run (src/testing scratchDir) go under one root, removed at the end.
  const scratch = mkdtempSync(join(tmpdir(), 'sluice-test-run-'));
  process.env.SLUICE_SCRATCH_DIR = scratch;
  teardowns.push(() => rmSync(scratch, { recursive: true, force: true }));
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.global.ts'))
    .sort();
  for (const f of files) {
    const mod = (await import(join(dir, f))) as {
      setup: (provide: (k: string, v: unknown) => void) => Promise<() => Promise<void> | void>;
    };
    teardowns.push(await mod.setup((k, v) => project.provide(k as never, v as never)));
  }
  return async () => {
    for (const t of teardowns.reverse()) await t();
  };
}
