// `sluice test-connector <pipeline.yaml|module>`: runs the conformance kit against a connector and
// prints the report; exits non-zero when a check fails.
import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { extname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { validateConnectorModule } from '../../cdk/validate.ts';
import { loadPipeline } from '../../config/load.ts';
import { importConnectorFile, isPackageSpecifier, resolvePackageEntry } from '../../engine/load-module.ts';
import { BUILTIN } from '../../engine/registry.ts';
import type { Destination, Source } from '../../protocol/connector.ts';
import { SluiceError } from '../../protocol/errors.ts';
import { runDestinationConformance, type DestinationConformanceOptions } from '../../testing/destination.ts';
import { formatReport, strictOk, type ConformanceReport } from '../../testing/report.ts';
import type { EmbeddingConfig } from '../../embedding/config.ts';
import { HASH_DEFAULT_DIMENSIONS } from '../../embedding/hash.ts';
import { modelInfo } from '../../embedding/models.ts';
import { runSourceConformance } from '../../testing/source.ts';
import { ExitCode } from '../main.ts';
import { printJson } from '../output.ts';
import { pickConnection } from './shared.ts';

interface Options {
  connection?: string;
  side?: string;
  config?: string;
  badConfig?: string[];
  streams?: string;
  json?: boolean;
  strict?: boolean;
}

type ReadBack = NonNullable<DestinationConformanceOptions['readBack']>;

/** A `readBack` the connector module exports next to its connector (for custom destinations). */
function readBackExport(mod: unknown): ReadBack | undefined {
  const m = mod as { readBack?: unknown; default?: { readBack?: unknown } } | undefined;
  const fn = m?.readBack ?? m?.default?.readBack;
  return typeof fn === 'function' ? (fn as ReadBack) : undefined;
}

/** The module file behind a pipeline's custom `type:` (a path or an npm package), for its other exports. */
async function customModule(type: string, baseDir: string): Promise<unknown> {
  try {
    // Through the engine's loader: a .ts connector in a CommonJS project (or with no package.json)
    // cannot be import()ed as it is, and a package resolves through its exports as `import` does.
    const file = type.startsWith('.') || isAbsolute(type) ? resolve(baseDir, type) : resolvePackageEntry(type, baseDir);
    return file ? await importConnectorFile(file) : undefined;
  } catch {
    return undefined; // the loader already loaded it; only optional exports are looked for here
  }
}

/** The vector size the connection's embedder produces, so the test vectors fit the user's index. */
function embeddingDimensions(embedding: EmbeddingConfig | undefined): number | undefined {
  if (!embedding) return undefined;
  if (embedding.dimensions) return embedding.dimensions;
  if (embedding.provider === 'hash') return HASH_DEFAULT_DIMENSIONS;
  return embedding.model ? modelInfo(embedding.model)?.dimensions : undefined;
}

/** `{"a":1}`, or a .json/.yaml file holding the config. */
function parseConfigArg(value: string, what: string): unknown {
  const trimmed = value.trim();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try {
      return JSON.parse(trimmed);
    } catch (err) {
      throw new SluiceError(`${what} is not valid JSON: ${(err as Error).message}`, { kind: 'config' });
    }
  }
  const file = resolve(value);
  if (!existsSync(file))
    throw new SluiceError(`${what}: no such file ${file}`, { kind: 'config', hint: 'pass inline JSON or a .json/.yaml file' });
  const text = readFileSync(file, 'utf8');
  try {
    return extname(file) === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new SluiceError(`${what}: ${file} does not parse: ${(err as Error).message}`, { kind: 'config' });
  }
}

async function importModule(target: string): Promise<{ file: string; mod: unknown }> {
  if (target.startsWith('.') || target.startsWith('/') || /\.[cm]?[jt]s$/.test(target)) {
    const file = resolve(target);
    if (!existsSync(file)) throw new SluiceError(`connector module not found: ${file}`, { kind: 'config' });
    try {
      return { file, mod: await importConnectorFile(file) };
    } catch (err) {
      throw new SluiceError(`cannot load ${file}: ${(err as Error).message}`, { kind: 'config', where: file });
    }
  }
  const file = isPackageSpecifier(target) ? resolvePackageEntry(target, process.cwd()) : undefined;
  if (!file || !existsSync(file)) {
    throw new SluiceError(`cannot find "${target}" as a file or an installed npm package`, {
      kind: 'config',
      hint: 'pass a pipeline .yaml, a ./path/to/connector.ts, or an installed package name',
    });
  }
  try {
    return { file, mod: await importConnectorFile(file) };
  } catch (err) {
    throw new SluiceError(`cannot load package "${target}": ${(err as Error).message}`, { kind: 'config' });
  }
}

export function register(program: Command) {
  program
    .command('test-connector')
    .description(
      'Run the conformance checks (spec, check, discover, records vs schema, protocol, incremental state; ' +
        'for destinations: acks after durable writes, every batch stored and counted, same-batch updates, replay, deletes, ' +
        'overwrite) against a connector, under a connection and test streams of its own (removed afterwards)',
    )
    .argument('<target>', 'a pipeline YAML file (tests its custom connector), a connector module path, or an npm package')
    .option('-c, --connection <name>', 'pipeline: which connection')
    .option('--side <side>', 'pipeline: source, destination or both (default: the custom one(s), else the source)')
    .option('--config <json|file>', 'module: the connector config (inline JSON or a .json/.yaml file)')
    .option('--bad-config <json|file...>', 'configs that must be refused')
    .option('--streams <names>', 'source: only these streams (comma-separated)')
    .option('--json', 'print the reports as JSON')
    .option('--strict', 'fail when any check is skipped (the default when the CI environment variable is set)')
    .option('--no-strict', 'allow skipped checks')
    .action(async (target: string, opts: Options) => {
      const strict = opts.strict ?? (!!process.env.CI && process.env.CI !== 'false' && process.env.CI !== '0');
      const reports: ConformanceReport[] = [];
      const badConfigs = opts.badConfig?.map((b, i) => parseConfigArg(b, `--bad-config #${i + 1}`));
      const streams = opts.streams
        ?.split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      if (/\.ya?ml$/i.test(target)) {
        const pipeline = await loadPipeline(target);
        const conn = pickConnection(pipeline, opts.connection);
        const custom = (kind: 'source' | 'destination') => !(BUILTIN[kind] as readonly string[]).includes(conn.config[kind].type);
        const side = opts.side ?? (custom('source') && custom('destination') ? 'both' : custom('destination') ? 'destination' : 'source');
        if (!['source', 'destination', 'both'].includes(side))
          throw new SluiceError(`--side must be source, destination or both, not "${side}"`, { kind: 'config' });
        // The kit runs under a connection name and test streams of its own (never this
        // connection's), so its state and data are left exactly as they are.
        const ctx = { baseDir: pipeline.baseDir };
        if (side !== 'destination') {
          reports.push(
            await runSourceConformance(conn.source, {
              config: conn.config.source.config,
              badConfigs,
              streams: streams ?? conn.config.streams?.map((s) => s.name),
              ctx,
            }),
          );
        }
        if (side !== 'source') {
          const type = conn.config.destination.type;
          const custom = (BUILTIN.destination as readonly string[]).includes(type) ? undefined : await customModule(type, pipeline.baseDir);
          const readBack = readBackExport(custom);
          const dimensions = conn.destination.capabilities.vectors ? embeddingDimensions(conn.config.embedding) : undefined;
          reports.push(
            await runDestinationConformance(conn.destination, {
              config: conn.config.destination.config,
              badConfigs: side === 'destination' ? badConfigs : undefined,
              ctx,
              ...(readBack ? { readBack } : {}),
              ...(dimensions ? { dimensions } : {}),
            }),
          );
        }
      } else {
        const { file, mod } = await importModule(target);
        const connector = validateConnectorModule(mod, file) as Source | Destination;
        const config = opts.config ? parseConfigArg(opts.config, '--config') : {};
        const ctx = { baseDir: process.cwd() };
        const readBack = readBackExport(mod);
        reports.push(
          connector.kind === 'source'
            ? await runSourceConformance(connector, { config, badConfigs, streams, ctx })
            : await runDestinationConformance(connector, { config, badConfigs, ctx, ...(readBack ? { readBack } : {}) }),
        );
      }
      if (opts.json) printJson(reports.length === 1 ? reports[0] : reports);
      else process.stdout.write(reports.map((r) => formatReport(r, { strict })).join('\n\n') + '\n');
      if (!reports.every((r) => (strict ? strictOk(r) : r.ok))) throw new ExitCode(1);
    });
}
