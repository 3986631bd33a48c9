// Destination `airbyte`: an Airbyte destination program (command or Docker image) used as a
// sluice destination. sluice runs `write --config --catalog`, sends each document's source record
// as a RECORD (a deletion as a RECORD with `_ab_cdc_deleted_at`) and each checkpoint as a STATE on
// the program's stdin, and acknowledges a STATE only when the program echoes it on stdout — as
// Airbyte's platform does, so the checkpoint rule holds. See docs/airbyte-connectors.md.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SluiceError, defineDestination, z } from '../../src/cdk/index.ts';
import type { ConnectorContext, DestinationEvent, DestinationMessage, DestinationStream, DestinationWriter } from '../../src/cdk/index.ts';
import { protocolCommand } from '../source-airbyte/index.ts';
import { describeProblems, programSpecification, validateAgainstSpec } from '../source-airbyte/program-spec.ts';

const ConfigSchema = z
  .strictObject({
    command: z.array(z.string().min(1)).min(1).optional().describe('The program and its arguments; run in the pipeline file’s directory.'),
    image: z
      .string()
      .min(1)
      .optional()
      .describe('A Docker image, e.g. airbyte/destination-postgres:2.0.0 (run with `docker run -i --rm`).'),
    docker_args: z.array(z.string()).default([]).describe('Extra `docker run` arguments.'),
    env: z.record(z.string(), z.string()).default({}).describe('Extra environment variables for the program.'),
    config: z.record(z.string(), z.unknown()).default({}).describe("The destination's own config."),
  })
  .refine((c) => !!c.command !== !!c.image, { message: 'set exactly one of `command` or `image`' });
type Config = z.output<typeof ConfigSchema>;

function prepareFiles(ctx: ConnectorContext, files: Record<string, unknown>): string {
  const dir = join(ctx.workDir, 'airbyte-destination');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [name, value] of Object.entries(files)) writeFileSync(join(dir, name), JSON.stringify(value), { mode: 0o600 });
  return dir;
}

/** A deletion's key fields from the document id (the primary key, serialised by sluice). */
function keyFields(stream: DestinationStream, documentId: string): Record<string, unknown> {
  const pk = stream.primaryKey.map((p) => p[p.length - 1]);
  if (pk.length <= 1) return { [pk[0] ?? 'id']: documentId };
  try {
    const parts = JSON.parse(documentId) as unknown[];
    return Object.fromEntries(pk.map((k, i) => [k, parts[i]]));
  } catch {
    return { [pk[0]]: documentId };
  }
}

class ProcessWriter implements DestinationWriter {
  constructor(
    private readonly config: Config,
    private readonly ctx: ConnectorContext,
    private readonly streams: DestinationStream[],
  ) {}

  async *write(input: AsyncIterable<DestinationMessage>): AsyncGenerator<DestinationEvent> {
    const catalog = {
      streams: this.streams.map((s) => ({
        stream: { name: s.name, json_schema: { type: 'object' }, supported_sync_modes: ['full_refresh', 'incremental'] },
        sync_mode: 'incremental',
        destination_sync_mode: s.destinationSyncMode,
        ...(s.primaryKey.length ? { primary_key: s.primaryKey } : {}),
      })),
    };
    const dir = prepareFiles(this.ctx, { 'config.json': this.config.config, 'catalog.json': catalog });
    const argv = protocolCommand(this.config, ['write', '--config', '@config.json', '--catalog', '@catalog.json'], dir);
    const what = this.config.image ? `image ${this.config.image}` : `command ${this.config.command!.join(' ')}`;
    const child = spawn(argv[0], argv.slice(1), {
      cwd: this.ctx.baseDir,
      env: { ...process.env, ...this.config.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const recent: string[] = [];
    const remember = (l: string) => {
      recent.push(l.slice(0, 500));
      if (recent.length > 20) recent.shift();
    };
    let spawnError: Error | undefined;
    child.on('error', (e) => (spawnError = e));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      child.on('close', (code, signal) => r({ code, signal })),
    );
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      for (const l of d.split('\n'))
        if (l.trim()) {
          remember(l);
          this.ctx.logger.info({ program: what }, `airbyte destination stderr: ${l}`);
        }
    });
    const byName = new Map(this.streams.map((s) => [s.name, s]));
    // STATEs sent and not yet echoed, oldest first.
    const pending: { key: string; event: Extract<DestinationEvent, { type: 'STATE_COMMITTED' }>; counts: Map<string, number> }[] = [];
    let counts = new Map<string, number>();
    const events: DestinationEvent[] = [];
    let wake: (() => void) | undefined;
    const notify = () => {
      wake?.();
      wake = undefined;
    };

    // A program that exits while input is still coming makes writes fail with EPIPE; its exit
    // code and last lines (below) are the error to report, not the broken pipe.
    let stdinBroken = false;
    child.stdin.on('error', () => (stdinBroken = true));
    // Pump: sluice's messages → the program's stdin, with backpressure.
    const send = async (m: unknown) => {
      if (stdinBroken) return;
      if (!child.stdin.write(`${JSON.stringify(m)}\n`)) await Promise.race([once(child.stdin, 'drain').catch(() => undefined), exited]);
    };
    let pumpError: unknown;
    const pump = (async () => {
      try {
        for await (const m of input) {
          if (child.exitCode !== null || spawnError || stdinBroken) break;
          if (m.type === 'DOCUMENT') {
            await send({ type: 'RECORD', record: { stream: m.stream, data: m.record, emitted_at: Date.now() } });
            counts.set(m.stream, (counts.get(m.stream) ?? 0) + 1);
          } else if (m.type === 'DELETE') {
            const s = byName.get(m.stream);
            const data = { ...(s ? keyFields(s, m.documentId) : { id: m.documentId }), _ab_cdc_deleted_at: new Date().toISOString() };
            await send({ type: 'RECORD', record: { stream: m.stream, data, emitted_at: Date.now() } });
            counts.set(m.stream, (counts.get(m.stream) ?? 0) + 1);
          } else if (m.type === 'STATE') {
            pending.push({
              key: JSON.stringify(m.state),
              event: { type: 'STATE_COMMITTED', state: m.state, connection: m.connection },
              counts,
            });
            counts = new Map();
            await send({ type: 'STATE', state: stripExtensions(m.state) });
          }
        }
      } catch (err) {
        pumpError = err;
      } finally {
        child.stdin.end();
      }
    })();

    // Reader: the program's stdout → acknowledgements.
    const reader = (async () => {
      let tail = '';
      child.stdout.setEncoding('utf8');
      for await (const chunk of child.stdout as AsyncIterable<string>) {
        const lines = (tail + chunk).split('\n');
        tail = lines.pop() ?? '';
        for (const line of lines) this.onLine(line, pending, events, remember);
        notify();
      }
      this.onLine(tail, pending, events, remember);
      notify();
    })();
    let done = false;
    void Promise.all([reader, exited]).then(() => {
      done = true;
      notify();
    });
    while (!done || events.length) {
      if (events.length) {
        yield events.shift()!;
        continue;
      }
      await new Promise<void>((r) => (wake = r));
    }
    await pump;
    const { code, signal } = await exited;
    if (spawnError) throw new SluiceError(`cannot start ${what}: ${spawnError.message}`, { kind: 'config' });
    if (pumpError) throw pumpError;
    if (code !== 0)
      throw new SluiceError(
        `${what} (write) exited with ${signal ? `signal ${signal}` : `code ${code}`}${recent.length ? `; last output:\n  ${recent.slice(-10).join('\n  ')}` : ''}`,
        { kind: 'destination', hint: 'states it did not echo were not saved; the next sync resumes from the last one it did' },
      );
  }

  private onLine(
    line: string,
    pending: { key: string; event: Extract<DestinationEvent, { type: 'STATE_COMMITTED' }>; counts: Map<string, number> }[],
    events: DestinationEvent[],
    remember: (l: string) => void,
  ): void {
    const t = line.trim();
    if (!t) return;
    let m: Record<string, any>;
    try {
      m = JSON.parse(t) as Record<string, any>;
    } catch {
      remember(t);
      return;
    }
    if (m.type === 'LOG') {
      remember(String(m.log?.message ?? ''));
      this.ctx.logger.info({ destination: 'airbyte' }, String(m.log?.message ?? ''));
    } else if (m.type === 'STATE') {
      // The echo commits that state and every one sent before it.
      const key = JSON.stringify(stripExtensions(m.state));
      const i = pending.findIndex((p) => JSON.stringify(stripExtensions(JSON.parse(p.key))) === key);
      if (i < 0) return;
      for (const p of pending.splice(0, i + 1)) {
        for (const [stream, records] of p.counts) events.push({ type: 'WRITTEN', stream, records, chunksWritten: 0, chunksDeleted: 0 });
        events.push(p.event);
      }
    } else if (m.type === 'TRACE' && m.trace?.type === 'ERROR') {
      remember(String(m.trace.error?.message ?? ''));
      this.ctx.logger.error({ destination: 'airbyte' }, String(m.trace.error?.message ?? ''));
    }
  }

  async close(): Promise<void> {}
}

/** sluice's own fields on a state (sourceStats…) stay out of what the program sees. */
function stripExtensions(state: unknown): unknown {
  if (!state || typeof state !== 'object') return state;
  const { sourceStats: _s, ...rest } = state as Record<string, unknown>;
  return rest;
}

export default defineDestination({
  spec: {
    name: 'airbyte',
    title: 'Airbyte protocol destination (program or Docker image)',
    description: 'Writes records through an Airbyte destination connector; a STATE is saved only once the connector echoes it.',
    documentationUrl: 'docs/airbyte-connectors.md',
    config: ConfigSchema,
  },
  destinationSyncModes: ['overwrite', 'append', 'append_dedup'],
  async check(config, ctx) {
    // The program's own spec validates its config first (destinations have no load-time hook).
    const validation = validateAgainstSpec(await programSpecification(config, ctx.baseDir), config.config);
    if (validation.problems.length) return { ok: false, message: describeProblems(validation.problems) };
    const dir = prepareFiles(ctx, { 'config.json': config.config });
    const argv = protocolCommand(config, ['check', '--config', '@config.json'], dir);
    const child = spawn(argv[0], argv.slice(1), {
      cwd: ctx.baseDir,
      env: { ...process.env, ...config.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (out += d.length + out.length < 1_000_000 ? d : ''));
    const [code] = (await Promise.race([once(child, 'close'), once(child, 'error').then(([e]) => Promise.reject(e))])) as [number | null];
    for (const line of out.split('\n')) {
      try {
        const m = JSON.parse(line) as Record<string, any>;
        if (m.type === 'CONNECTION_STATUS')
          return {
            ok: m.connectionStatus?.status === 'SUCCEEDED',
            ...(m.connectionStatus?.message ? { message: String(m.connectionStatus.message) } : {}),
          };
      } catch {
        /* not a protocol line */
      }
    }
    return { ok: false, message: `the connector sent no CONNECTION_STATUS (exit code ${code})` };
  },
  async open(config, ctx, options) {
    return new ProcessWriter(config, ctx, options.streams);
  },
});
