// Loading an Airbyte declarative manifest the way the CDK does before building components:
//   1. references: `$ref: "#/definitions/x"` (JSON pointer; sibling keys override the referenced
//      mapping) and the older `"*ref(definitions.x)"` strings;
//   2. default component types by parent field (a `retriever:` without `type` is a SimpleRetriever);
//   3. `$parameters` flow from a component to its sub-components (the child's own win), and a
//      parameter also fills a field the component leaves unset (`$parameters: { path: /x }`).
// Then every component is checked against what sluice implements, so an unsupported one is an
// error at `sluice validate` time with its YAML path — never a silently wrong read.
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { isTemplate, templateError } from './interpolation.ts';

export type Component = Record<string, any>;

export interface Manifest {
  version?: string;
  spec?: { connection_specification?: Record<string, unknown>; documentation_url?: string };
  check?: Component;
  streams: Component[];
  definitions?: Record<string, unknown>;
  /** Directory of the manifest file (schema files are relative to it). */
  dir: string;
  file: string;
}

export class ManifestError extends Error {
  constructor(
    message: string,
    readonly path: string,
  ) {
    super(path ? `${path}: ${message}` : message);
  }
}

/** `streams[3].retriever.paginator` from path parts. */
export function yamlPath(parts: readonly (string | number)[]): string {
  return parts.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

export function readManifest(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ManifestError(
      code === 'ENOENT' ? `manifest file not found: ${file}` : `cannot read manifest ${file}: ${(err as Error).message}`,
      '',
    );
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 1000 });
  } catch (err) {
    throw new ManifestError(`manifest ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`, '');
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new ManifestError(`manifest ${file} is not a YAML mapping`, '');
  return doc as Record<string, unknown>;
}

// ---- 1. references -------------------------------------------------------------------------------

function lookupPointer(root: Record<string, unknown>, pointer: string, at: string): unknown {
  const parts = pointer.startsWith('#/')
    ? pointer
        .slice(2)
        .split('/')
        .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    : pointer.split('.');
  let node: unknown = root;
  for (const p of parts) {
    if (!node || typeof node !== 'object' || !(p in (node as object)))
      throw new ManifestError(`reference "${pointer}" points to nothing`, at);
    node = (node as Record<string, unknown>)[p];
  }
  return node;
}

function resolveRefs(root: Record<string, unknown>): Record<string, unknown> {
  const walk = (node: unknown, path: (string | number)[], stack: string[]): unknown => {
    if (typeof node === 'string') {
      const m = /^\*ref\(([^)]+)\)$/.exec(node.trim());
      if (!m) return node;
      return follow(m[1], path, stack);
    }
    if (Array.isArray(node)) return node.map((v, i) => walk(v, [...path, i], stack));
    if (!node || typeof node !== 'object') return node;
    const obj = node as Record<string, unknown>;
    let base: Record<string, unknown> = {};
    if (typeof obj.$ref === 'string') {
      const target = follow(obj.$ref, [...path, '$ref'], stack);
      if (!target || typeof target !== 'object' || Array.isArray(target))
        throw new ManifestError(`"$ref: ${obj.$ref}" must point to a mapping`, yamlPath(path));
      base = { ...(target as Record<string, unknown>) };
    }
    const out: Record<string, unknown> = base;
    for (const [k, v] of Object.entries(obj)) {
      if (k === '$ref') continue;
      out[k] = walk(v, [...path, k], stack);
    }
    return out;
  };
  const follow = (ref: string, path: (string | number)[], stack: string[]): unknown => {
    if (stack.includes(ref)) throw new ManifestError(`circular reference: ${[...stack, ref].join(' -> ')}`, yamlPath(path));
    if (!ref.startsWith('#/') && ref.includes('://'))
      throw new ManifestError(`only references inside the manifest are supported, not "${ref}"`, yamlPath(path));
    const target = lookupPointer(root, ref, yamlPath(path));
    return walk(target, path, [...stack, ref]);
  };
  return walk(root, [], []) as Record<string, unknown>;
}

// ---- 2 + 3. default types and $parameters ----------------------------------------------------------

/** The CDK's default component types, by "<parent type>.<field>". */
const DEFAULT_TYPES: Record<string, string> = {
  'CompositeErrorHandler.error_handlers': 'DefaultErrorHandler',
  'CursorPagination.decoder': 'JsonDecoder',
  'DatetimeBasedCursor.end_datetime': 'MinMaxDatetime',
  'DatetimeBasedCursor.end_time_option': 'RequestOption',
  'DatetimeBasedCursor.start_datetime': 'MinMaxDatetime',
  'DatetimeBasedCursor.start_time_option': 'RequestOption',
  'DeclarativeSource.check': 'CheckStream',
  'DeclarativeSource.spec': 'Spec',
  'DeclarativeSource.streams': 'DeclarativeStream',
  'DeclarativeStream.retriever': 'SimpleRetriever',
  'DeclarativeStream.schema_loader': 'JsonFileSchemaLoader',
  'DefaultErrorHandler.response_filters': 'HttpResponseFilter',
  'DefaultPaginator.decoder': 'JsonDecoder',
  'DefaultPaginator.page_size_option': 'RequestOption',
  'DpathExtractor.decoder': 'JsonDecoder',
  'HttpRequester.error_handler': 'DefaultErrorHandler',
  'ListPartitionRouter.request_option': 'RequestOption',
  'ParentStreamConfig.request_option': 'RequestOption',
  'ParentStreamConfig.stream': 'DeclarativeStream',
  'RecordSelector.extractor': 'DpathExtractor',
  'RecordSelector.record_filter': 'RecordFilter',
  'SimpleRetriever.paginator': 'NoPagination',
  'SimpleRetriever.record_selector': 'RecordSelector',
  'SimpleRetriever.requester': 'HttpRequester',
  'SubstreamPartitionRouter.parent_stream_configs': 'ParentStreamConfig',
  'AddFields.fields': 'AddedFieldDefinition',
};

/** Fields that hold data, not sub-components: parameters are not pushed into them. */
const DATA_FIELDS = new Set([
  'schema',
  'connection_specification',
  'request_parameters',
  'request_headers',
  'request_body_json',
  'request_body_data',
  'values',
  'refresh_request_body',
  'spec',
]);

function propagate(node: unknown, parentType: string, field: string, parentParams: Record<string, unknown>): unknown {
  if (Array.isArray(node)) return node.map((v) => propagate(v, parentType, field, parentParams));
  if (!node || typeof node !== 'object') return node;
  const obj = { ...(node as Record<string, unknown>) };
  if (!obj.type) {
    const dflt = DEFAULT_TYPES[`${parentType}.${field}`];
    if (dflt) obj.type = dflt;
  }
  // Only components (mappings with a type) take part in parameter propagation.
  if (typeof obj.type !== 'string') return obj;
  const own = (obj.$parameters && typeof obj.$parameters === 'object' ? obj.$parameters : {}) as Record<string, unknown>;
  const params = { ...parentParams, ...own };
  for (const [k, v] of Object.entries(params)) {
    if (obj[k] === undefined || obj[k] === null || obj[k] === '') obj[k] = v;
  }
  obj.$parameters = params;
  for (const [k, v] of Object.entries(obj)) {
    if (k === '$parameters' || k === 'type' || DATA_FIELDS.has(k)) continue;
    if (v && typeof v === 'object') obj[k] = propagate(v, obj.type, k, params);
  }
  return obj;
}

// ---- 4. supported components ------------------------------------------------------------------------

/** What sluice implements. */
export const SUPPORTED = new Set([
  'DeclarativeStream',
  'SimpleRetriever',
  'HttpRequester',
  'ApiKeyAuthenticator',
  'BearerAuthenticator',
  'BasicHttpAuthenticator',
  'OAuthAuthenticator',
  'SelectiveAuthenticator',
  'NoAuth',
  'DefaultPaginator',
  'CursorPagination',
  'OffsetIncrement',
  'PageIncrement',
  'RequestOption',
  'RequestPath',
  'NoPagination',
  'RecordSelector',
  'DpathExtractor',
  'RecordFilter',
  'AddFields',
  'AddedFieldDefinition',
  'RemoveFields',
  'DatetimeBasedCursor',
  'MinMaxDatetime',
  'ListPartitionRouter',
  'SubstreamPartitionRouter',
  'ParentStreamConfig',
  'DefaultErrorHandler',
  'CompositeErrorHandler',
  'HttpResponseFilter',
  'ExponentialBackoffStrategy',
  'ConstantBackoffStrategy',
  'WaitTimeFromHeader',
  'InlineSchemaLoader',
  'JsonFileSchemaLoader',
  'JsonDecoder',
  'CheckStream',
  'Spec',
]);

/** Component types of the language that sluice does not implement yet, with why. */
const NOT_YET: Record<string, string> = {
  AsyncRetriever: 'asynchronous report jobs are not implemented in sluice',
  StateDelegatingStream: 'not implemented in sluice',
  DynamicDeclarativeStream: 'streams generated at run time are not implemented in sluice',
  HttpComponentsResolver: 'streams generated at run time are not implemented in sluice',
  ConfigComponentsResolver: 'streams generated at run time are not implemented in sluice',
  GroupingPartitionRouter: 'not implemented in sluice',
  IncrementingCountCursor: 'not implemented in sluice',
  SessionTokenAuthenticator: 'not implemented in sluice',
  JwtAuthenticator: 'not implemented in sluice',
  LegacySessionTokenAuthenticator: 'not implemented in sluice',
  DynamicSchemaLoader: 'schemas fetched from the API are not implemented in sluice',
  XmlDecoder: 'only JSON responses are implemented in sluice',
  CsvDecoder: 'only JSON responses are implemented in sluice',
  JsonlDecoder: 'only JSON responses are implemented in sluice',
  GzipDecoder: 'only JSON responses are implemented in sluice',
  ZipfileDecoder: 'only JSON responses are implemented in sluice',
  IterableDecoder: 'only JSON responses are implemented in sluice',
  CompositeRawDecoder: 'only JSON responses are implemented in sluice',
  WaitUntilTimeFromHeader: 'not implemented in sluice',
  KeysToLower: 'not implemented in sluice',
  KeysToSnakeCase: 'not implemented in sluice',
  KeysReplace: 'not implemented in sluice',
  FlattenFields: 'not implemented in sluice',
  DpathFlattenFields: 'not implemented in sluice',
  ComponentMappingDefinition: 'not implemented in sluice',
  PropertiesFromEndpoint: 'not implemented in sluice',
  QueryProperties: 'not implemented in sluice',
  GzipJsonDecoder: 'only JSON responses are implemented in sluice',
  StreamSlicer: 'not implemented in sluice',
  DatetimeBasedCursorWithGlobalState: 'not implemented in sluice',
  ConcurrencyLevel: 'accepted by Airbyte only for concurrency tuning; not implemented in sluice',
};

/** Components that are accepted but change nothing about what is read. */
const IGNORED = new Set(['ConcurrencyLevel', 'Spec', 'JsonDecoder']);

interface Problem {
  path: string;
  message: string;
}

/** Field-level features of supported components that sluice does not implement. */
function unsupportedFields(c: Component): string[] {
  const out: string[] = [];
  const t = c.type as string;
  if (t === 'OAuthAuthenticator' && c.refresh_token_updater)
    out.push('refresh_token_updater (rotating refresh tokens written back to the config)');
  if (t === 'DatetimeBasedCursor' && c.global_substream_cursor) out.push('global_substream_cursor');
  if (t === 'DeclarativeStream' && c.state_migrations?.length) out.push('state_migrations');
  if (t === 'SimpleRetriever' && c.partition_router && Array.isArray(c.partition_router) && c.partition_router.length > 1)
    out.push('several partition routers (a list of more than one)');
  if (t === 'HttpRequester' && c.request_options_provider) out.push('request_options_provider');
  if (t === 'RecordSelector' && c.schema_normalization && typeof c.schema_normalization === 'object')
    out.push('a custom schema_normalization');
  if (t === 'DeclarativeStream' && c.file_uploader) out.push('file_uploader');
  return out;
}

function validateComponents(node: unknown, path: (string | number)[], problems: Problem[], owner: string): void {
  if (Array.isArray(node)) {
    node.forEach((v, i) => validateComponents(v, [...path, i], problems, owner));
    return;
  }
  if (typeof node === 'string') {
    if (isTemplate(node)) {
      const err = templateError(node);
      if (err)
        problems.push({
          path: yamlPath(path),
          message: `${owner || 'manifest'} at ${yamlPath(path)}: invalid Jinja expression ${JSON.stringify(node)}: ${err}`,
        });
    }
    return;
  }
  if (!node || typeof node !== 'object') return;
  const obj = node as Component;
  let here = owner;
  if (typeof obj.type === 'string') {
    const t = obj.type;
    if (t.startsWith('Custom')) {
      problems.push({
        path: yamlPath(path),
        message: `${owner || 'manifest'} at ${yamlPath(path)}: unsupported component '${t}' (needs Python code${obj.class_name ? `: ${obj.class_name}` : ''})`,
      });
      return;
    }
    if (!SUPPORTED.has(t) && !IGNORED.has(t)) {
      problems.push({
        path: yamlPath(path),
        message: `${owner || 'manifest'} at ${yamlPath(path)}: unsupported component '${t}' (${NOT_YET[t] ?? 'unknown component type'})`,
      });
      return;
    }
    for (const f of unsupportedFields(obj))
      problems.push({ path: yamlPath(path), message: `${t} at ${yamlPath(path)}: ${f} is not supported by sluice` });
    if (t === 'DeclarativeStream') here = `DeclarativeStream${obj.name ? ` "${obj.name}"` : ''}`;
  }
  for (const [k, v] of Object.entries(obj)) {
    if (k === '$parameters' || (DATA_FIELDS.has(k) && k !== 'request_parameters' && k !== 'request_headers')) {
      if (k === 'request_body_json' || k === 'request_body_data' || k === 'refresh_request_body')
        validateComponents(v, [...path, k], problems, here);
      continue;
    }
    validateComponents(v, [...path, k], problems, here);
  }
}

/** Loads, resolves and checks a manifest; throws a ManifestError listing every problem. */
export function loadManifest(file: string, dir: string): Manifest {
  const raw = readManifest(file);
  const { definitions: _defs, ...rest } = resolveRefs(raw);
  const resolved = propagate({ ...rest, type: 'DeclarativeSource' }, '', '', {}) as Component;
  const problems: Problem[] = [];
  if (!Array.isArray(resolved.streams) || resolved.streams.length === 0) {
    if (resolved.dynamic_streams)
      problems.push({ path: 'dynamic_streams', message: 'dynamic_streams: streams generated at run time are not supported by sluice' });
    else problems.push({ path: 'streams', message: 'streams: the manifest declares no streams' });
  }
  for (const key of ['streams', 'check', 'spec'] as const) if (resolved[key]) validateComponents(resolved[key], [key], problems, '');
  for (const [i, s] of ((resolved.streams ?? []) as Component[]).entries()) {
    if (!s || typeof s !== 'object') continue;
    if (!s.name)
      problems.push({ path: `streams[${i}]`, message: `DeclarativeStream at streams[${i}]: has no name (set name: or $parameters.name)` });
    if (s.type === 'DeclarativeStream' && !s.retriever)
      problems.push({ path: `streams[${i}]`, message: `DeclarativeStream at streams[${i}]: has no retriever` });
  }
  if (problems.length) throw new ManifestError(problems.map((p) => p.message).join('\n'), '');
  return {
    version: resolved.version,
    spec: resolved.spec,
    check: resolved.check,
    streams: resolved.streams,
    definitions: _defs as Record<string, unknown> | undefined,
    dir,
    file,
  };
}
