// A ConnectorContext for tests and the conformance kit: quiet logger that remembers what was
// logged, a private work directory, and an abort signal the caller controls.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConnectorContext, Logger } from '../protocol/connector.ts';

export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  fields?: object;
}

export interface TestContext extends ConnectorContext {
  logs: LogEntry[];
  abort(): void;
}

/** Work directories made here, removed when the process exits (a test run makes thousands). */
const workDirs: string[] = [];
process.once('exit', () => {
  for (const dir of workDirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * A fresh directory under `parent`: by default $SLUICE_SCRATCH_DIR (sluice's own test run sets it
 * and removes it at the end) or the system temp dir. Removed when the process exits normally too.
 */
export function scratchDir(prefix = 'sluice-test-', parent = process.env.SLUICE_SCRATCH_DIR ?? tmpdir()): string {
  const dir = mkdtempSync(join(parent, prefix));
  workDirs.push(dir);
  return dir;
}

export function testContext(overrides: Partial<ConnectorContext> = {}): TestContext {
  const logs: LogEntry[] = [];
  const log =
    (level: LogEntry['level']) =>
    (obj: object | string, msg?: string): void => {
      if (logs.length > 1000) logs.shift();
      logs.push(typeof obj === 'string' ? { level, msg: obj } : { level, msg: msg ?? '', fields: obj });
    };
  const logger: Logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
  const controller = new AbortController();
  return {
    logger,
    baseDir: process.cwd(),
    signal: controller.signal,
    connection: 'conformance',
    follow: false,
    workDir: overrides.workDir ?? scratchDir('sluice-conformance-'),
    ...overrides,
    logs,
    abort: () => controller.abort(),
  };
}
