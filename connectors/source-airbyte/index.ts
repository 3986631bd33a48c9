// Source `airbyte`: runs any program that speaks the Airbyte protocol — `command: [python, main.py]`
// or `image: airbyte/source-x:1.2.3` (through `docker run -i --rm`, config/catalog/state mounted as
// files, as Airbyte's platform does). spec/check/discover/read map to the protocol's commands; the
// program's RECORD / STATE (per-stream, GLOBAL, legacy) / LOG / TRACE messages flow through
// sluice's engine. stdout is read as a stream (never buffered whole); stderr is logged; a crash is
// an error with the exit code and the last log lines; SIGINT/SIGTERM reach the program.
// See docs/airbyte-connectors.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SluiceError, defineSource, message, z } from '../../src/cdk/index.ts';
import type { AirbyteCatalog, AirbyteMessage, ConfiguredCatalog, ConnectorContext, SourceState } from '../../src/cdk/index.ts';
import { describeProblems, programSpecification, validateAgainstSpec } from './program-spec.ts';

const ConfigSchema = z
  .strictObject({
    command: z
      .array(z.string().min(1))
      .min(1)
      .optional()
      .describe('The program and its arguments, e.g. [python3, main.py]; run in the pipeline file’s directory.'),
    image: z.string().min(1).optional().describe('A Docker image, e.g. airbyte/source-github:1.8.0 (run with `docker run -i --rm`).'),
    docker_args: z.array(z.string()).default([]).describe('Extra `docker run` arguments, e.g. ["--network", "host"].'),
    env: z.record(z.string(), z.string()).default({}).describe('Extra environment variables for the program.'),
    config: z.record(z.string(), z.unknown()).default({}).describe("The connector's own config (its spec's connectionSpecification)."),
  })
  .refine((c) => !!c.command !== !!c.image, { message: 'set exactly one of `command` or `image`' });
type Config = z.output<typeof ConfigSchema>;

/** Where the files the program reads live: inside the container, or on the host. */
const CONTAINER_DIR = '/airbyte/sluice';

/**
 * The argv that runs one protocol command. With `image`, files are mounted read-only at
 * /airbyte/sluice as the platform mounts its job directory.
 */
export function protocolCommand(
  config: Pick<Config, 'command' | 'image'> & Partial<Pick<Config, 'docker_args' | 'env'>>,
  args: string[],
  filesDir: string,
): string[] {
  if (config.command) return [...config.command, ...args.map((a) => (a.startsWith('@') ? join(filesDir, a.slice(1)) : a))];
  const envArgs = Object.keys(config.env ?? {}).flatMap((k) => ['-e', k]);
  return [
    'docker',
    'run',
    '-i',
    '--rm',
    '--init',
    '-v',
    `${filesDir}:${CONTAINER_DIR}:ro`,
    ...envArgs,
    ...(config.docker_args ?? []),
    config.image!,
    ...args.map((a) => (a.startsWith('@') ? `${CONTAINER_DIR}/${a.slice(1)}` : a)),
  ];
}

interface RunOptions {
  config: Config;
  ctx: ConnectorContext;
  args: string[];
  /** Files to write first (name → JSON value); refer to them in args as `@name`. */
  files?: Record<string, unknown>;
}

/** Runs one protocol command and yields its stdout messages as they come, with backpressure. */
async function* runProtocol({ config, ctx, args, files }: RunOptions): AsyncGenerator<Record<string, any>> {
  const dir = join(ctx.workDir, 'airbyte');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Config files hold secrets: only the owner may read them; they are rewritten on every run.
  for (const [name, value] of Object.entries(files ?? {})) writeFileSync(join(dir, name), JSON.stringify(value), { mode: 0o600 });
  const argv = protocolCommand(config, args, dir);
  const what = config.image ? `image ${config.image}` : `command ${config.command!.join(' ')}`;
  let child: ChildProcess;
  try {
    child = spawn(argv[0], argv.slice(1), {
      cwd: ctx.baseDir,
      env: { ...process.env, ...config.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    throw new SluiceError(`cannot start ${what}: ${(err as Error).message}`, { kind: 'config' });
  }
  const recent: string[] = [];
  const remember = (line: string) => {
    recent.push(line.length > 500 ? `${line.slice(0, 500)}…` : line);
    if (recent.length > 20) recent.shift();
  };
  let spawnError: Error | undefined;
  child.on('error', (err) => (spawnError = err));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  let stderrTail = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    const lines = (stderrTail + d).split('\n');
    stderrTail = lines.pop() ?? '';
    for (const l of lines)
      if (l.trim()) {
        remember(l);
        ctx.logger.info({ program: what }, `airbyte stderr: ${l}`);
      }
  });
  // SIGINT/SIGTERM reach the program: it may checkpoint and stop.
  const onAbort = () => child.kill('SIGTERM');
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  let finished = false;
  try {
    let tail = '';
    child.stdout!.setEncoding('utf8');
    for await (const chunk of child.stdout! as AsyncIterable<string>) {
      const lines = (tail + chunk).split('\n');
      tail = lines.pop() ?? '';
      for (const line of lines) {
        const parsed = parseLine(line, remember, ctx);
        if (parsed) yield parsed;
      }
    }
    const last = parseLine(tail, remember, ctx);
    if (last) yield last;
    const { code, signal } = await exited;
    finished = true;
    if (spawnError) {
      const enoent = (spawnError as NodeJS.ErrnoException).code === 'ENOENT';
      throw new SluiceError(`cannot start ${what}: ${spawnError.message}`, {
        kind: 'config',
        hint: enoent
          ? config.image
            ? 'install Docker, or use `command:` to run the connector directly'
            : 'check the command path (relative to the pipeline file)'
          : undefined,
      });
    }
    if (ctx.signal.aborted) return;
    if (code !== 0)
      throw new SluiceError(
        `${what} (${args[0]}) exited with ${signal ? `signal ${signal}` : `code ${code}`}${recent.length ? `; last output:\n  ${recent.slice(-10).join('\n  ')}` : ''}`,
        { kind: 'source', hint: 'see the connector’s own log lines above' },
      );
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    // The consumer stopped early (or failed): do not leave the program running.
    if (!finished && child.exitCode === null) child.kill('SIGTERM');
  }
}

function parseLine(line: string, remember: (l: string) => void, ctx: ConnectorContext): Record<string, any> | undefined {
  const t = line.trim();
  if (!t) return undefined;
  let m: unknown;
  try {
    m = JSON.parse(t);
  } catch {
    // Connectors sometimes print plain text to stdout; the platform ignores it too.
    remember(t);
    ctx.logger.info(`airbyte stdout (not a protocol message): ${t.slice(0, 500)}`);
    return undefined;
  }
  if (!m || typeof m !== 'object' || typeof (m as { type?: unknown }).type !== 'string') return undefined;
  const msg = m as Record<string, any>;
  if (msg.type === 'LOG') {
    const text = String(msg.log?.message ?? '');
    remember(text);
    const level = String(msg.log?.level ?? 'INFO').toUpperCase();
    const log =
      level === 'ERROR' || level === 'FATAL'
        ? ctx.logger.error
        : level === 'WARN'
          ? ctx.logger.warn
          : level === 'DEBUG' || level === 'TRACE'
            ? ctx.logger.debug
            : ctx.logger.info;
    log.call(ctx.logger, { source: 'airbyte' }, text);
    return undefined;
  }
  return msg;
}

async function single(opts: RunOptions, type: string): Promise<Record<string, any>> {
  let found: Record<string, any> | undefined;
  let error: string | undefined;
  for await (const m of runProtocol(opts)) {
    if (m.type === type && !found) found = m;
    if (m.type === 'TRACE' && m.trace?.type === 'ERROR') error = m.trace.error?.message;
  }
  if (!found)
    throw new SluiceError(`the connector sent no ${type} message for \`${opts.args[0]}\`${error ? `: ${error}` : ''}`, { kind: 'source' });
  return found;
}

/** sluice's saved state → the state file the protocol's `read` takes. */
export function toProtocolState(state: SourceState | undefined): unknown[] | Record<string, unknown> | undefined {
  if (!state) return undefined;
  if (state.shared && '__airbyte_legacy' in state.shared) return state.shared.__airbyte_legacy as Record<string, unknown>;
  if (state.shared)
    return [
      {
        type: 'GLOBAL',
        global: {
          shared_state: state.shared,
          stream_states: Object.entries(state.streams ?? {}).map(([name, s]) => ({ stream_descriptor: { name }, stream_state: s })),
        },
      },
    ];
  const streams = Object.entries(state.streams ?? {});
  if (!streams.length) return undefined;
  return streams.map(([name, s]) => ({ type: 'STREAM', stream: { stream_descriptor: { name }, stream_state: s } }));
}

export default defineSource({
  spec: {
    name: 'airbyte',
    title: 'Airbyte protocol connector (program or Docker image)',
    description: 'Runs an Airbyte source connector — a program or a Docker image speaking the Airbyte protocol — and syncs its records.',
    documentationUrl: 'docs/airbyte-connectors.md',
    config: ConfigSchema,
  },
  // Whether a stream needs a cursor_field is the program's to say (its catalog); one set in the
  // pipeline is passed on in the configured catalog.
  capabilities: { syncModes: ['full_refresh', 'incremental'], sourceDefinedCursor: true },

  // A local program's `spec` is cheap: run it whenever the pipeline is loaded, so `sluice validate`
  // reports config problems with the YAML path and its airbyte_secret values are never printed.
  // An image's spec would mean a Docker pull on every load: that waits for `check`.
  async validateConfig(config, { baseDir }) {
    if (!config.command) return { problems: [] };
    try {
      const r = validateAgainstSpec(await programSpecification(config, baseDir), config.config);
      return { problems: r.problems.map((p) => ({ ...p, path: ['config', ...p.path] })), secrets: r.secrets };
    } catch (err) {
      return { problems: [{ path: ['command'], message: (err as Error).message }] };
    }
  },

  async check(config, ctx) {
    const validation = validateAgainstSpec(await programSpecification(config, ctx.baseDir), config.config);
    if (validation.problems.length) return { ok: false, message: describeProblems(validation.problems) };
    const m = await single(
      { config, ctx, args: ['check', '--config', '@config.json'], files: { 'config.json': config.config } },
      'CONNECTION_STATUS',
    );
    const status = m.connectionStatus ?? {};
    return { ok: status.status === 'SUCCEEDED', ...(status.message ? { message: String(status.message) } : {}) };
  },

  async discover(config, ctx): Promise<AirbyteCatalog> {
    const m = await single(
      { config, ctx, args: ['discover', '--config', '@config.json'], files: { 'config.json': config.config } },
      'CATALOG',
    );
    return m.catalog as AirbyteCatalog;
  },

  async *read(config, catalog: ConfiguredCatalog, state, ctx): AsyncGenerator<AirbyteMessage> {
    const protocolState = toProtocolState(state);
    // sluice's configured streams carry extensions (cdc); the program gets plain Airbyte fields.
    const configured = {
      streams: catalog.streams.map((s) => ({
        stream: s.stream,
        sync_mode: s.sync_mode,
        destination_sync_mode: s.destination_sync_mode,
        ...(s.cursor_field ? { cursor_field: s.cursor_field } : {}),
        ...(s.primary_key ? { primary_key: s.primary_key } : {}),
      })),
    };
    const files: Record<string, unknown> = { 'config.json': config.config, 'catalog.json': configured };
    const args = ['read', '--config', '@config.json', '--catalog', '@catalog.json'];
    if (protocolState !== undefined) {
      files['state.json'] = protocolState;
      args.push('--state', '@state.json');
    }
    for await (const m of runProtocol({ config, ctx, args, files })) {
      switch (m.type) {
        case 'RECORD':
          yield message.record(m.record.stream, m.record.data ?? {}, m.record.emitted_at ?? Date.now());
          break;
        case 'STATE': {
          const s = m.state ?? {};
          if (s.type === 'STREAM' && s.stream?.stream_descriptor?.name)
            yield message.streamState(s.stream.stream_descriptor.name, s.stream.stream_state ?? {});
          else if (s.type === 'GLOBAL')
            yield message.globalState(
              s.global?.shared_state ?? {},
              Object.fromEntries(((s.global?.stream_states ?? []) as any[]).map((x) => [x.stream_descriptor.name, x.stream_state ?? {}])),
            );
          // Legacy (no type): one blob for the whole source, handed back as it was.
          else if (!s.type || s.type === 'LEGACY') yield message.globalState({ __airbyte_legacy: s.data ?? {} });
          break;
        }
        case 'TRACE':
          if (m.trace?.type === 'ERROR') {
            const e = m.trace.error ?? {};
            ctx.logger.error({ stream: e.stream_descriptor?.name }, `connector error: ${e.message ?? ''}`);
          }
          yield m as AirbyteMessage;
          break;
        default:
          // SPEC / CATALOG / CONNECTION_STATUS / CONTROL have no place in a read.
          break;
      }
    }
  },
});
