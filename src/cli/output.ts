// Everything sluice prints passes through here: secrets are redacted, errors are for people,
// logs are JSON (pino) unless a person is watching a terminal.
import pino from 'pino';
import { Writable } from 'node:stream';
import type { Logger } from '../protocol/connector.ts';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import { ConfigError } from '../config/load.ts';
import { redact } from '../config/secrets.ts';
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
  const level = opts.debug ? 'debug' : (process.env.SLUICE_LOG_LEVEL ?? 'info');
  if (process.stderr.isTTY && !opts.json) {
    const human = new Writable({
      write(chunk, _enc, cb) {
        try {
          const rec = JSON.parse(String(chunk)) as { level: number; msg?: string; err?: string; hint?: string };
          const tag = rec.level >= 50 ? 'error' : rec.level >= 40 ? 'warn' : rec.level >= 30 ? 'info' : 'debug';
          clearProgressLine();
          process.stderr.write(`${tag}: ${rec.msg ?? ''}${rec.hint ? `\n  hint: ${rec.hint}` : ''}\n`);
        } catch {
          process.stderr.write(String(chunk));
        }
        cb();
      },
    });
    return pino({ level, base: undefined }, human) as unknown as Logger;
  }
  return pino(
    { level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ dest: 2, sync: true }),
  ) as unknown as Logger;
}

let progressShown = false;
export function showProgress(line: string): void {
  if (!process.stderr.isTTY) return;
  process.stderr.write(`\r\x1b[2K${line}`);
  progressShown = true;
}
export function clearProgressLine(): void {
  if (progressShown) process.stderr.write('\r\x1b[2K');
  progressShown = false;
}

/** Prints an error the way a person wants it: what failed, where, what to do. Stack only with --debug. */
export function printError(err: unknown, opts: OutputOptions): void {
  clearProgressLine();
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
