// The real CLI entry point (main) run inside the test process, for tests with hundreds of cases
// where a process each would take minutes. process.exit and stdout/stderr are captured while the
// tests of the calling file run (install with useInProcessCli() at the top level of the file).
import { afterAll, beforeAll } from 'vitest';
import { main } from '../../src/cli/main.ts';

class Exited extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

let captured = { stdout: '', stderr: '' };

export function useInProcessCli(): void {
  const originals = { stdout: process.stdout.write, stderr: process.stderr.write, exit: process.exit };
  beforeAll(() => {
    // Installed before main() adds its secret redaction on top, so what is captured is what users see.
    process.stdout.write = ((chunk: unknown) => ((captured.stdout += String(chunk)), true)) as typeof process.stdout.write;
    process.stderr.write = ((chunk: unknown) => ((captured.stderr += String(chunk)), true)) as typeof process.stderr.write;
    process.exit = ((code?: number) => {
      throw new Exited(code ?? 0);
    }) as typeof process.exit;
  });
  afterAll(() => {
    process.stdout.write = originals.stdout;
    process.stderr.write = originals.stderr;
    process.exit = originals.exit;
  });
}

/** `sluice <args>` in this process: its exit code and output. */
export async function runInProcess(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  captured = { stdout: '', stderr: '' };
  let code = 0;
  try {
    await main(['node', 'sluice', ...args]);
  } catch (err) {
    if (!(err instanceof Exited)) throw err;
    code = err.code;
  }
  return { code, ...captured };
}
