// check · discover · spec · validate · connectors
// The engine (embedders, state stores, LMDB) is imported by the commands that connect, at their
// start: `validate` reads files only and starts without it.
import type { Command } from 'commander';
import { dirname, extname, join } from 'node:path';
import { ConfigError, loadPipeline, type LoadedConnection, type LoadedPipeline } from '../../config/load.ts';
import { configureCatalog } from '../../engine/catalog.ts';
import { pathToFileURL } from 'node:url';
import { UnknownConnectorError, availableBuiltins, builtinPath, loadConnector } from '../../engine/registry.ts';
import { formatProblem, plannedCatalog, processingFieldProblems } from '../../engine/preflight.ts';
import { SluiceError, describeUnknown } from '../../protocol/errors.ts';
import { connectorSpecification } from '../../protocol/spec.ts';
import { ExitCode } from '../main.ts';
import { createLogger, printJson } from '../output.ts';
import { pickConnection } from './shared.ts';

export function register(program: Command) {
  program
    .command('validate')
    .description('Check a pipeline file (YAML, variables, connector configs) without connecting anywhere')
    .argument('<pipeline>', 'pipeline YAML file')
    .option('--json', 'print JSON (errors too, as { status: "failed", error })')
    .action(async (file: string, opts: { json?: boolean }) => {
      const p = await loadPipeline(file);
      // Sources that discover without connecting (local files) have their field names checked now;
      // the others are checked by `check` and before every sync.
      const problems = [];
      for (const conn of p.connections.filter((c) => c.source.capabilities.offlineDiscover)) {
        // validate creates nothing: the work directory is named, not made (offline discovery reads files only).
        const ctx = {
          logger: createLogger({}),
          baseDir: p.baseDir,
          signal: new AbortController().signal,
          connection: conn.config.name,
          follow: false,
          workDir: join(p.stateDir, 'work', encodeURIComponent(conn.config.name)),
        };
        const planned = await plannedCatalog(conn, ctx);
        problems.push(...(planned.problems ?? []), ...(planned.catalog ? processingFieldProblems(conn, planned.catalog) : []));
      }
      if (problems.length)
        throw new ConfigError(
          file,
          problems.map((pr) => ({ ...pr, line: p.lineOf?.(pr.path) })),
        );
      if (opts.json) {
        printJson({
          status: 'valid',
          file,
          connections: p.connections.map((c) => ({
            name: c.config.name,
            source: c.config.source.type,
            destination: c.config.destination.type,
            ...(c.config.streams ? { streams: c.config.streams.map((s) => s.name) } : {}),
          })),
        });
        return;
      }
      process.stdout.write(
        `${file}: valid (${p.connections.length} connection${p.connections.length === 1 ? '' : 's'}: ${p.connections.map((c) => c.config.name).join(', ')})\n`,
      );
    });

  program
    .command('check')
    .description("Test each connection's source and destination (connectivity, credentials, permissions)")
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'only this connection')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { connection?: string; json?: boolean }) => {
      const pipeline = await loadPipeline(file);
      const [{ connectorContext, embedderFor, embedderShape }, { IndexChangedError, refuseChangedIndex }] = await Promise.all([
        import('../../engine/sync.ts'),
        import('../../engine/index-identity.ts'),
      ]);
      const logger = createLogger({ json: opts.json });
      const conns = opts.connection ? [pickConnection(pipeline, opts.connection)] : pipeline.connections;
      const results = [];
      let indexChanged = false;
      for (const conn of conns) {
        const ctx = await connectorContext(pipeline, conn, { signal: new AbortController().signal, logger });
        // The configured streams (when the source can be discovered) let the source check exactly
        // what their modes need, and the processing fields be checked against their schemas.
        const planned = await plannedCatalog(conn, ctx);
        const fieldProblems = planned.catalog ? processingFieldProblems(conn, planned.catalog) : [];
        const run = async (what: 'source' | 'destination') => {
          try {
            if (what === 'source') {
              const result = await conn.source.check(conn.sourceConfig, ctx, { catalog: planned.catalog });
              const problems = [...(planned.problems ?? []), ...fieldProblems];
              if (!problems.length) return result;
              const lines = problems.map((p) => formatProblem(p));
              return { ...result, ok: false, message: [result.ok ? undefined : result.message, ...lines].filter(Boolean).join('; ') };
            }
            const embedder = embedderFor(conn, logger);
            // A changed embedder or processing setting would be refused by sync: check says so too (exit 2).
            // Not when a field name is wrong: that typo, reported above, is what to fix (as sync says).
            // After the destination's own check, whose failures (a missing privilege) say what to grant.
            const result = await conn.destination.check(conn.destinationConfig, ctx, embedderShape(embedder));
            if (result.ok && !fieldProblems.length) await refuseChangedIndex(pipeline, conn, ctx, embedder);
            return result;
          } catch (err) {
            if (err instanceof IndexChangedError) {
              indexChanged = true;
              return { ok: false, message: `${err.message} (${err.hint})` };
            }
            return { ok: false, message: describeUnknown(err), ...(err instanceof SluiceError && err.hint ? { hint: err.hint } : {}) };
          }
        };
        results.push({
          connection: conn.config.name,
          source: await run('source'),
          destination: await run('destination'),
          // Only where a sync writes letters (tolerance all): a bad store would otherwise surface at the first bad record.
          ...(conn.config.errors?.tolerance === 'all' ? { dead_letters: await checkDeadLetters(pipeline, conn) } : {}),
        });
      }
      if (opts.json) printJson(results);
      else
        for (const r of results) {
          for (const side of ['source', 'destination', 'dead_letters'] as const) {
            const x = r[side] as { ok: boolean; message?: string; warnings?: string[] } | undefined;
            if (!x) continue;
            const label = side === 'dead_letters' ? 'dead letters' : side;
            process.stdout.write(`${r.connection} ${label}: ${x.ok ? 'ok' : 'FAILED'}${x.message ? ` — ${x.message}` : ''}\n`);
            for (const w of x.warnings ?? []) process.stdout.write(`  warning: ${w}\n`);
          }
        }
      if (indexChanged) throw new ExitCode(2);
      if (results.some((r) => !r.source.ok || !r.destination.ok || (r.dead_letters && !r.dead_letters.ok))) throw new ExitCode(1);
    });

  program
    .command('discover')
    .description("List a connection's source streams (schemas, keys, sync modes) as an Airbyte catalog")
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'the connection (required when the file has several)')
    .option('--configured', 'show the configured catalog sluice would run (defaults filled in)')
    .action(async (file: string, opts: { connection?: string; configured?: boolean }) => {
      const pipeline = await loadPipeline(file);
      const conn = pickConnection(pipeline, opts.connection);
      const { connectorContext } = await import('../../engine/sync.ts');
      const ctx = await connectorContext(pipeline, conn, { signal: new AbortController().signal, logger: createLogger({ json: true }) });
      const catalog = await conn.source.discover(conn.sourceConfig, ctx);
      printJson(opts.configured ? configureCatalog(conn, catalog, {}) : { type: 'CATALOG', catalog });
    });

  program
    .command('spec')
    .description("Print a connector's config specification (JSON Schema)")
    .argument('<connector>', 'a built-in name (file, postgres, pgvector, …) or a module path')
    .option('--kind <kind>', 'source or destination, when the name is ambiguous')
    .option('--pipeline <file>', "with `airbyte`: run the pipeline's program and print its own spec")
    .option('-c, --connection <name>', 'with --pipeline: the connection (required when the file has several)')
    .action(async (name: string, opts: { kind?: 'source' | 'destination'; pipeline?: string; connection?: string }) => {
      // An Airbyte-protocol program (source or destination `airbyte`): the program's own `spec`.
      if (opts.pipeline) {
        const pipeline = await loadPipeline(opts.pipeline);
        const conn = pickConnection(pipeline, opts.connection);
        const side = opts.kind ?? (conn.config.source.type === name ? 'source' : 'destination');
        const type = side === 'source' ? conn.config.source.type : conn.config.destination.type;
        if (name !== 'airbyte' || type !== 'airbyte')
          throw new SluiceError(`--pipeline shows an \`airbyte\` program's own spec; the connection's ${side} is "${type}"`, {
            kind: 'config',
            hint: 'run `sluice spec airbyte --pipeline <file>` for a connection whose source or destination type is airbyte',
          });
        const index = builtinPath('source', 'airbyte');
        const mod = (await import(pathToFileURL(join(dirname(index), `program-spec${extname(index)}`)).href)) as {
          programSpecification(config: unknown, baseDir: string): Promise<Record<string, unknown>>;
        };
        printJson({
          type: 'SPEC',
          spec: await mod.programSpecification(side === 'source' ? conn.sourceConfig : conn.destinationConfig, pipeline.baseDir),
        });
        return;
      }
      // An Airbyte declarative manifest: its own connection specification.
      if (/\.ya?ml$/i.test(name)) {
        const mod = (await import(pathToFileURL(builtinPath('source', 'declarative')).href)) as {
          manifestSpecification(file: string): Record<string, unknown>;
        };
        printJson({ type: 'SPEC', spec: mod.manifestSpecification(name) });
        return;
      }
      if (opts.kind !== undefined && opts.kind !== 'source' && opts.kind !== 'destination')
        throw new SluiceError(`--kind must be "source" or "destination", not "${String(opts.kind)}"`, { kind: 'config' });
      const kinds = opts.kind ? [opts.kind] : (['source', 'destination'] as const);
      const failures: unknown[] = [];
      for (const kind of kinds) {
        try {
          const c = await loadConnector(kind, name, process.cwd());
          printJson({ type: 'SPEC', spec: connectorSpecification(c) });
          return;
        } catch (err) {
          failures.push(err);
        }
      }
      // A module that exists but is broken says so; only an unknown name gets the generic answer.
      const real = failures.find((e) => !(e instanceof UnknownConnectorError));
      if (real) throw real;
      throw new SluiceError(`no connector named "${name}"`, { kind: 'config', hint: 'run `sluice connectors` to list the built-ins' });
    });

  program
    .command('connectors')
    .description('List the built-in connectors')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const list = [];
      for (const kind of ['source', 'destination'] as const) {
        for (const name of availableBuiltins(kind)) {
          const c = await loadConnector(kind, name, process.cwd());
          list.push({
            kind,
            name,
            title: c.spec.title ?? name,
            modes: c.kind === 'source' ? c.capabilities.syncModes : c.capabilities.destinationSyncModes,
          });
        }
      }
      if (opts.json) printJson(list);
      else for (const c of list) process.stdout.write(`${c.kind.padEnd(12)} ${c.name.padEnd(10)} ${c.title} (${c.modes.join(', ')})\n`);
    });
}

/** `check` of a connection's dead-letter store: a sync with tolerance all writes its letters there. */
async function checkDeadLetters(
  pipeline: LoadedPipeline,
  conn: LoadedConnection,
): Promise<{ ok: boolean; message: string; hint?: string }> {
  const { openDeadLetterStore } = await import('../../engine/dead-letters.ts');
  const store = openDeadLetterStore(conn.config.errors, pipeline.stateDir, pipeline.baseDir);
  try {
    return { ok: true, message: await store.check() };
  } catch (err) {
    return { ok: false, message: describeUnknown(err), ...(err instanceof SluiceError && err.hint ? { hint: err.hint } : {}) };
  } finally {
    await store.close();
  }
}
