// Source `declarative`: runs an Airbyte low-code (declarative) manifest as it is — no Python, no
// Airbyte platform. Config: { manifest: <path relative to the pipeline file>, config: {...} }, where
// `config` is what the manifest's spec.connection_specification describes (validated against it;
// `airbyte_secret` fields are treated as secrets). See docs/declarative.md.
//
//   manifest.ts      loading, $ref / *ref, default types, $parameters, unsupported components
//   interpolation.ts Jinja expressions and macros (sandboxed interpreter)
//   requester.ts     HttpRequester, authenticators, error handler + backoff
//   pagination.ts    DefaultPaginator strategies
//   records.ts       RecordSelector, DpathExtractor, RecordFilter, AddFields, RemoveFields
//   cursor.ts        DatetimeBasedCursor
//   stream.ts        partitions × windows × pages, and per-stream / per-partition state
import { statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { SluiceError, airbyteSecretValues, configProblemsAgainstJsonSchema, defineSource, message, z } from '../../src/cdk/index.ts';
import type { AirbyteMessage, AirbyteStream, ConnectorContext, JsonSchemaConfigProblem } from '../../src/cdk/index.ts';
import { loadManifest, ManifestError, type Manifest } from './manifest.ts';
import { DeclarativeStream } from './stream.ts';

const ConfigSchema = z.strictObject({
  manifest: z
    .string()
    .min(1)
    .describe(
      "Path of the Airbyte declarative manifest (manifest.yaml), relative to the pipeline file. Use it unchanged from Airbyte's registry.",
    ),
  config: z
    .record(z.string(), z.unknown())
    .default({})
    .describe(
      "The connector's config, as the manifest's spec.connection_specification describes it (e.g. { api_key: ..., start_date: ... }).",
    ),
});
type Config = z.output<typeof ConfigSchema>;

const manifests = new Map<string, { mtimeMs: number; manifest: Manifest }>();

function manifestPath(config: Config, baseDir: string): string {
  return isAbsolute(config.manifest) ? config.manifest : resolve(baseDir, config.manifest);
}

/** The resolved manifest (cached while the file is unchanged); errors name the file. */
export function openManifest(file: string): Manifest {
  let mtimeMs = 0;
  try {
    mtimeMs = statSync(file).mtimeMs;
  } catch {
    /* reported by loadManifest */
  }
  const hit = manifests.get(file);
  if (hit && hit.mtimeMs === mtimeMs) return hit.manifest;
  try {
    const manifest = loadManifest(file, dirname(file));
    manifests.set(file, { mtimeMs, manifest });
    return manifest;
  } catch (err) {
    if (err instanceof ManifestError)
      throw new SluiceError(`manifest ${file}:\n${err.message}`, {
        kind: 'config',
        hint: 'see docs/declarative.md for the components sluice implements',
      });
    throw err;
  }
}

function checkConfig(manifest: Manifest, config: Record<string, unknown>): JsonSchemaConfigProblem[] {
  const schema = manifest.spec?.connection_specification;
  if (!schema) return [];
  return configProblemsAgainstJsonSchema(schema as Record<string, unknown>, config, {
    origin: "the manifest's spec.connection_specification",
    useDefaults: true,
    pathPrefix: ['config'],
  });
}

function prepare(config: Config, baseDir: string): Manifest {
  const manifest = openManifest(manifestPath(config, baseDir));
  const problems = checkConfig(manifest, config.config);
  if (problems.length)
    throw new SluiceError(
      `source config does not match the manifest's spec: ${problems.map((p) => `${p.path.join('.')}: ${p.message}`).join('; ')}`,
      {
        kind: 'config',
      },
    );
  return manifest;
}

function streamsOf(
  manifest: Manifest,
  config: Config,
  ctx: ConnectorContext,
  limits?: { maxRetries: number; maxBackoffMs: number },
): DeclarativeStream[] {
  return manifest.streams.map(
    (c) => new DeclarativeStream(c, { config: config.config, manifest, logger: ctx.logger, signal: ctx.signal, limits }),
  );
}

function toAirbyte(s: DeclarativeStream): AirbyteStream {
  const cursor = s.cursor?.cursorField;
  return {
    name: s.name,
    json_schema: s.schema(),
    supported_sync_modes: s.supportsIncremental ? ['full_refresh', 'incremental'] : ['full_refresh'],
    ...(s.supportsIncremental ? { source_defined_cursor: true } : {}),
    ...(cursor ? { default_cursor_field: [cursor] } : {}),
    ...(s.primaryKey.length ? { source_defined_primary_key: s.primaryKey } : {}),
  };
}

/** `sluice spec ./x.manifest.yaml`: the manifest's own connection specification. */
export function manifestSpecification(file: string): Record<string, unknown> {
  const m = openManifest(resolve(file));
  return {
    documentationUrl: m.spec?.documentation_url,
    connectionSpecification: m.spec?.connection_specification ?? { type: 'object', properties: {} },
  };
}

export default defineSource({
  spec: {
    name: 'declarative',
    title: 'Airbyte declarative (low-code) manifest',
    description: "Runs an Airbyte low-code connector's manifest.yaml: HTTP APIs with auth, pagination, partitions and incremental cursors.",
    documentationUrl: 'docs/declarative.md',
    config: ConfigSchema,
  },
  capabilities: { syncModes: ['full_refresh', 'incremental'], sourceDefinedCursor: true },

  validateConfig(config, { baseDir }) {
    let manifest: Manifest;
    try {
      manifest = openManifest(manifestPath(config, baseDir));
    } catch (err) {
      return { problems: [{ path: ['manifest'], message: (err as Error).message }] };
    }
    const secrets = airbyteSecretValues(manifest.spec?.connection_specification, config.config);
    const problems = checkConfig(manifest, config.config);
    if (!problems.length) {
      // Building the streams evaluates names, cursors and durations: bad values show up now.
      try {
        const ctx = { logger: { debug() {}, info() {}, warn() {}, error() {} }, signal: new AbortController().signal };
        const names = new Set<string>();
        for (const s of manifest.streams.map((c) => new DeclarativeStream(c, { config: config.config, manifest, ...ctx }))) {
          if (names.has(s.name)) problems.push({ path: ['manifest'], message: `the manifest declares stream "${s.name}" twice` });
          names.add(s.name);
        }
      } catch (err) {
        problems.push({ path: ['manifest'], message: (err as Error).message });
      }
    }
    return { problems, secrets };
  },

  async check(config, ctx) {
    const manifest = prepare(config, ctx.baseDir);
    const streams = streamsOf(manifest, config, ctx, { maxRetries: 2, maxBackoffMs: 2000 });
    const names: string[] = manifest.check?.stream_names ?? [streams[0]?.name];
    for (const name of names) {
      const s = streams.find((x) => x.name === name);
      if (!s) return { ok: false, message: `the manifest's check names stream "${name}", which it does not declare` };
      // Like the CDK's CheckStream: the first page must be readable.
      for await (const _ of s.read({ incremental: false, maxPages: 1 })) break;
    }
    return { ok: true, message: `read the first page of ${names.join(', ')}` };
  },

  async discover(config, ctx) {
    const manifest = prepare(config, ctx.baseDir);
    return { streams: streamsOf(manifest, config, ctx).map(toAirbyte) };
  },

  async *read(config, catalog, state, ctx): AsyncGenerator<AirbyteMessage> {
    const manifest = prepare(config, ctx.baseDir);
    const streams = new Map(streamsOf(manifest, config, ctx).map((s) => [s.name, s]));
    for (const configured of catalog.streams) {
      const s = streams.get(configured.stream.name);
      if (!s)
        throw new SluiceError(`the manifest has no stream "${configured.stream.name}"`, {
          kind: 'config',
          hint: `its streams: ${[...streams.keys()].join(', ')}`,
        });
      if (ctx.signal.aborted) return;
      const incremental = configured.sync_mode === 'incremental';
      if (incremental && !s.supportsIncremental)
        throw new SluiceError(`stream "${s.name}" has no incremental_sync in the manifest`, {
          kind: 'config',
          hint: 'use sync_mode: full_refresh for it',
        });
      yield message.streamStatus(s.name, 'STARTED');
      let count = 0;
      try {
        for await (const item of s.read({ incremental, state: state?.streams?.[s.name] })) {
          if ('record' in item) {
            count++;
            yield message.record(s.name, item.record);
          } else yield message.streamState(s.name, item.state);
        }
      } catch (err) {
        if (ctx.signal.aborted) break;
        if (err instanceof SluiceError)
          throw new SluiceError(err.message, {
            kind: err.kind,
            hint: err.hint,
            where: `stream ${s.name}${err.where && !err.where.includes(s.name) ? `, ${err.where}` : ''}`,
            transient: err.transient,
            cause: err,
          });
        throw new SluiceError(`stream ${s.name}: ${(err as Error).message}`, { kind: 'source', where: `stream ${s.name}`, cause: err });
      }
      if (ctx.signal.aborted) {
        yield message.streamStatus(s.name, 'INCOMPLETE');
        return;
      }
      ctx.logger.debug({ stream: s.name, records: count }, 'declarative: stream read');
      yield message.streamStatus(s.name, 'COMPLETE');
    }
  },
});
