// Runs the real `sluice` CLI in a child process, as users do.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { scratchDir } from '../../src/testing/context.ts';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = join(REPO, 'bin/sluice.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function startCli(
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: opts.cwd ?? REPO,
    env: { ...process.env, SLUICE_LOG_LEVEL: 'warn', NO_COLOR: '1', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<CliResult>((res) => child.on('close', (code, signal) => res({ code, signal, stdout, stderr })));
  return { child, done };
}

export function runCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return startCli(args, opts).done;
}

/** A fresh directory; `inRepo` puts it under test/.tmp so modules there resolve the repo's packages. */
export function tempDir(prefix = 'sluice-test-', inRepo = false): string {
  const parent = inRepo ? join(REPO, 'test/.tmp') : undefined;
  if (parent) mkdirSync(parent, { recursive: true });
  return scratchDir(prefix, parent);
}

export function writeFiles(root: string, files: Record<string, string>): void {
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, name)), { recursive: true });
    writeFileSync(join(root, name), content);
  }
}

/** A stack trace line ("    at foo (file:1:2)") must never reach a user. */
/**
 * The smallest pipeline the CLI tests run: `files` (markdown under docs/) written into `dir`, a file
 * source over ./docs into ./out.jsonl, one connection (`name`) with `connection` merged in.
 * Returns the path of `dir`/p.yaml.
 */
export function fileToJsonlPipeline(
  dir: string,
  opts: { files: Record<string, string>; name?: string; connection?: Record<string, unknown> },
): string {
  writeFiles(dir, opts.files);
  return writePipeline(dir, [
    {
      name: opts.name ?? 'c',
      source: { type: 'file', config: { path: './docs', stream: 'docs' } },
      destination: { type: 'jsonl', config: { path: './out.jsonl' } },
      ...opts.connection,
    },
  ]);
}

/** Writes `dir`/p.yaml (version 1, these connections) and returns its path. */
export function writePipeline(dir: string, connections: Record<string, unknown>[]): string {
  const file = join(dir, 'p.yaml');
  writeFileSync(file, stringify({ version: 1, connections }));
  return file;
}

export const STACK_LINE = /^\s+at .+(:\d+:\d+\)?|<anonymous>)$/m;
