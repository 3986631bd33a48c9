// The program's own `spec`: its connectionSpecification validates the `config:` block sluice hands
// it, and its `airbyte_secret` fields are secrets (never printed). Shared by the `airbyte` source
// and destination. See docs/airbyte-connectors.md ("The program's spec").
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SluiceError, airbyteSecretValues, configProblemsAgainstJsonSchema } from '../../src/cdk/index.ts';
import { protocolCommand } from './index.ts';

export interface ProgramConfig {
  command?: string[];
  image?: string;
  docker_args?: string[];
  env?: Record<string, string>;
  config?: Record<string, unknown>;
}

/** What validateConfig returns (paths relative to the program's config). */
export interface ConfigValidation {
  problems: { path: (string | number)[]; message: string }[];
  secrets?: unknown[];
}

/** A slow `spec` (a Docker pull, a hung program) must not hang `sluice validate` forever. */
const SPEC_TIMEOUT_MS = 60_000;

/** Runs the program's `spec` command and returns its SPEC message's `spec` (connectionSpecification, …). */
export async function programSpecification(config: ProgramConfig, baseDir: string): Promise<Record<string, any>> {
  const filesDir = mkdtempSync(join(tmpdir(), 'sluice-airbyte-spec-'));
  const argv = protocolCommand(config, ['spec'], filesDir);
  const what = config.image ? `image ${config.image}` : `command ${config.command!.join(' ')}`;
  try {
    const child = spawn(argv[0], argv.slice(1), {
      cwd: baseDir,
      env: { ...process.env, ...config.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => child.kill('SIGTERM'), SPEC_TIMEOUT_MS);
    let spec: Record<string, any> | undefined;
    let traceError: string | undefined;
    const stderr: string[] = [];
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => stderr.push(...d.split('\n').filter((l) => l.trim())) && stderr.splice(0, stderr.length - 5));
    // A program that cannot start emits 'error' (and may never 'close'): settle on either, and
    // keep the rejection handled until it is awaited after stdout ends.
    const exited = new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve(code));
    });
    exited.catch(() => {});
    let tail = '';
    child.stdout.setEncoding('utf8');
    try {
      for await (const chunk of child.stdout as AsyncIterable<string>) {
        const lines = (tail + chunk).split('\n');
        tail = lines.pop() ?? '';
        for (const line of lines) {
          const m = parse(line);
          if (m?.type === 'SPEC' && !spec) spec = m.spec ?? {};
          if (m?.type === 'TRACE' && m.trace?.type === 'ERROR') traceError = m.trace.error?.message;
        }
      }
      const m = parse(tail);
      if (m?.type === 'SPEC' && !spec) spec = m.spec ?? {};
      const code = await exited;
      if (spec) return spec;
      throw new SluiceError(
        `${what} (spec) sent no SPEC message (exit code ${code})${traceError ? `: ${traceError}` : stderr.length ? `; last output: ${stderr.join(' | ')}` : ''}`,
        { kind: 'config' },
      );
    } catch (err) {
      if (err instanceof SluiceError) throw err;
      throw new SluiceError(`cannot start ${what}: ${(err as Error).message}`, {
        kind: 'config',
        hint: config.image
          ? 'install Docker, or use `command:` to run the connector directly'
          : 'check the command path (relative to the pipeline file)',
      });
    } finally {
      clearTimeout(timer);
    }
  } finally {
    rmSync(filesDir, { recursive: true, force: true });
  }
}

function parse(line: string): Record<string, any> | undefined {
  try {
    const m = JSON.parse(line.trim()) as unknown;
    return m && typeof m === 'object' ? (m as Record<string, any>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Checks `config` against the program's connectionSpecification. Problems name the path and what
 * was expected, never the value; `secrets` are the values the spec marks `airbyte_secret`.
 */
export function validateAgainstSpec(spec: Record<string, any>, config: Record<string, unknown>): ConfigValidation {
  const schema = spec.connectionSpecification as Record<string, unknown> | undefined;
  if (!schema || typeof schema !== 'object') return { problems: [] };
  return {
    problems: configProblemsAgainstJsonSchema(schema, config, {
      origin: "the program's spec",
      schemaName: "the program's connectionSpecification",
    }),
    secrets: airbyteSecretValues(schema, config),
  };
}

/** One line for a failed check: each problem's path under `config.` and what was expected. */
export function describeProblems(problems: ConfigValidation['problems']): string {
  return `config does not match the program's spec: ${problems.map((p) => `config${p.path.length ? `.${p.path.join('.')}` : ''}: ${p.message}`).join('; ')}`;
}
