// Everything sluice prints passes through here: secrets are redacted, errors are for people,
// logs are JSON (pino) unless a person is watching a terminal.
import pino from 'pino';
import { Writable } from 'node:stream';
import type { Logger } from '../protocol/connector.ts';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import { ConfigError, formatPath } from '../config/load.ts';
import { redact } from '../config/secrets.ts';
import { closest } from '../config/suggest.ts';
import { red } from './color.ts';

let installed = false;
/** Redacts registered secrets from every write to stdout/stderr, including third-party output. */
export function installRedaction(): void {
  if (installed) return;
  installed = true;
  for (const stream of [process.stdout, process.stderr]) {
    const original = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (typeof chunk === 'string') return original(redact(chunk), ...rest);
      if (chunk instanceof Uint8Array) return original(redact(Buffer.from(chunk).toString('utf8')), ...rest);
      return original(chunk, ...rest);
    }) as typeof stream.write;
  }
}

export interface OutputOptions {
  json?: boolean;
  debug?: boolean;
  quiet?: boolean;
}

/** Human log lines on a terminal; JSON lines (pino) otherwise. Always on stderr. */
export function createLogger(opts: OutputOptions): Logger {
  const level = opts.debug ? 'debug' : logLevelFromEnv();
  if (humanLogs(opts)) {
    const human = new Writable({
      write(chunk, _enc, cb) {
        try {
          const rec = JSON.parse(String(chunk)) as Record<string, unknown>;
          clearProgressLine();
          process.stderr.write(humanLogLine(rec));
        } catch {
          process.stderr.write(String(chunk));
        }
        cb();
      },
    });
    return pino({ level, base: undefined }, human) as unknown as Logger;
  }
  // Through process.stderr (not pino.destination, which writes to fd 2 directly): installRedaction
  // hooks stderr's write, so secrets in log lines are redacted too. A pipe or file stderr is
  // written synchronously on POSIX, as before.
  return pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, process.stderr) as unknown as Logger;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
/** SLUICE_LOG_LEVEL, checked: pino would otherwise throw its own internal message. */
export function logLevelFromEnv(): string {
  const raw = process.env.SLUICE_LOG_LEVEL;
  if (raw === undefined || raw === '') return 'info';
  const level = raw.trim().toLowerCase();
  if (!LEVELS.includes(level)) {
    const guess = closest(level, LEVELS);
    throw new SluiceError(
      `SLUICE_LOG_LEVEL="${raw}" is not a log level; expected one of: ${LEVELS.join(', ')}${guess ? ` — did you mean "${guess}"?` : ''}`,
      { kind: 'config', where: 'environment variable SLUICE_LOG_LEVEL' },
    );
  }
  return level;
}

/** Whether log lines go to a person (human lines on a terminal) rather than JSON lines. */
export function humanLogs(opts: OutputOptions): boolean {
  return !!process.stderr.isTTY && !opts.json;
}

let progressLines = 0;
/** Erases the progress lines drawn last (cursor back to the start of the first one). */
const eraseProgress = () => (progressLines ? '\r\x1b[2K' + '\x1b[1A\x1b[2K'.repeat(progressLines - 1) : '');
/** Redraws the progress block (one line per stream; lines must fit the terminal width). */
export function showProgress(lines: string | string[]): void {
  if (!process.stderr.isTTY) return;
  const list = typeof lines === 'string' ? [lines] : lines;
  process.stderr.write(eraseProgress() + list.join('\n'));
  progressLines = list.length;
}
export function clearProgressLine(): void {
  if (progressLines) process.stderr.write(eraseProgress());
  progressLines = 0;
}

const LOG_RECORD_KEYS = new Set(['level', 'time', 'msg', 'hint', 'err', 'where']);
/** A pino record as a person reads it: "info: built vector index (stream docs, index hnsw)". */
export function humanLogLine(rec: Record<string, unknown>): string {
  const level = Number(rec.level);
  const tag = level >= 50 ? 'error' : level >= 40 ? 'warn' : level >= 30 ? 'info' : 'debug';
  const msg = String(rec.msg ?? '');
  const fields = Object.entries(rec)
    .filter(([k, v]) => !LOG_RECORD_KEYS.has(k) && v !== undefined && v !== null && typeof v !== 'object')
    .map(([k, v]) => `${k} ${String(v)}`);
  const err = typeof rec.err === 'string' && !msg.includes(rec.err) ? `: ${rec.err}` : '';
  let line = `${tag}: ${msg}${err}${fields.length ? ` (${fields.join(', ')})` : ''}\n`;
  if (rec.where) line += `  where: ${String(rec.where)}\n`;
  if (rec.hint) line += `  hint: ${String(rec.hint)}\n`;
  return line;
}

/** An error as JSON (for `--json`): what failed, where, what to do; each pipeline-file problem on its own. */
export function errorJson(err: unknown): Record<string, unknown> {
  const e = err instanceof SluiceError ? err : undefined;
  return {
    status: 'failed',
    exit_code: exitCodeFor(err),
    error: {
      kind: e?.kind ?? 'internal',
      message: err instanceof ConfigError ? 'invalid pipeline file' : describeUnknown(err),
      ...(e?.where ? { where: e.where } : {}),
      ...(e?.hint ? { hint: e.hint } : {}),
      ...(err instanceof ConfigError
        ? {
            file: err.file,
            problems: err.problems.map((p) => ({
              ...(p.line ? { line: p.line } : {}),
              path: formatPath(p.path),
              message: p.message,
            })),
          }
        : {}),
    },
  };
}

/** Prints an error the way a person wants it: what failed, where, what to do. Stack only with --debug. */
export function printError(err: unknown, opts: OutputOptions): void {
  clearProgressLine();
  // With --json a program reads stdout: it gets the error as an object there (people still see stderr).
  if (opts.json) printJson(errorJson(err));
  if (err instanceof ConfigError) {
    process.stderr.write(
      `${red('error:')} invalid pipeline file\n${err.message
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n')}\n`,
    );
  } else if (err instanceof SluiceError) {
    process.stderr.write(`${red('error:')} ${err.message}\n`);
    if (err.where) process.stderr.write(`  where: ${err.where}\n`);
  } else {
    process.stderr.write(
      `${red('error:')} ${describeUnknown(err)}\n  (this looks like a bug in sluice; rerun with --debug and report it)\n`,
    );
  }
  if (err instanceof SluiceError && err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
  if (opts.debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof SluiceError) return err.kind === 'config' ? 2 : err.kind === 'interrupted' ? 130 : 1;
  return 1;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
