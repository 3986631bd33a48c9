// Loads a pipeline file: YAML → ${VAR} interpolation → schema validation → connector config
// validation → cross checks. Every problem is reported as `file:line: yaml.path: what was expected`.
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { z } from 'zod';
import type { Destination, Source } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import { loadConnector } from '../engine/registry.ts';
import { PipelineSchema, type ConnectionConfig, type PipelineConfig } from './schema.ts';
import { collectSecrets } from './config-secrets.ts';
import { looksSecret, registerSecret, registerUrlPassword } from './secrets.ts';
import { closest } from './suggest.ts';
import { toJsChecked } from './yaml-aliases.ts';

export interface ConfigProblem {
  path: (string | number)[];
  message: string;
  line?: number;
}

export class ConfigError extends SluiceError {
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(problems.map((p) => `${file}${p.line ? `:${p.line}` : ''}: ${formatPath(p.path) || '(top level)'}: ${p.message}`).join('\n'), {
      kind: 'config',
      hint: 'fix the pipeline file and run `sluice validate <file>`',
    });
  }
}

export interface LoadedConnection {
  config: ConnectionConfig;
  /** Index in `connections:` (for error paths). */
  index: number;
  source: Source;
  destination: Destination;
  sourceConfig: unknown;
  destinationConfig: unknown;
}

export interface LoadedPipeline {
  file: string;
  baseDir: string;
  config: PipelineConfig;
  stateDir: string;
  connections: LoadedConnection[];
  /** Line of a YAML path in the file (for problems found after loading, e.g. against discovered schemas). */
  lineOf?: (path: (string | number)[]) => number | undefined;
}

export function formatPath(path: readonly (string | number)[]): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : String(p)), '');
}

export async function loadPipeline(file: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedPipeline> {
  const abs = resolve(file);
  let text: string;
  try {
    text = decodeUtf8(file, await readFile(abs));
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new SluiceError(
      code === 'ENOENT' ? `pipeline file not found: ${file}` : `cannot read pipeline file ${file}: ${(err as Error).message}`,
      {
        kind: 'config',
        hint: 'pass the path of a pipeline YAML file, e.g. `sluice sync examples/quickstart.yaml`',
      },
    );
  }
  const lines = new LineCounter();
  // `${VAR}` is not valid YAML inside flow mappings ({ path: ${DIR} }); people write it anyway, so
  // each reference becomes a flow-safe placeholder (same line) and is substituted after parsing.
  const refs: VarRef[] = [];
  const protectedText = text.replace(VAR, (match: string, name: string | undefined, op: string | undefined, arg: string | undefined) => {
    refs.push(
      name === undefined
        ? { literal: match.slice(1) }
        : { name, fallback: op === ':-' ? arg : undefined, required: op === ':?' ? arg : undefined },
    );
    return `__sluice_var_${refs.length - 1}__`;
  });
  const doc = parseDocument(protectedText, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new ConfigError(
      file,
      doc.errors.slice(0, 5).map((e) => ({ path: [], line: e.linePos?.[0]?.line, message: `YAML syntax: ${e.message.split('\n')[0]}` })),
    );
  }
  const lineOf = (path: (string | number)[]): number | undefined => nodeLine(doc, lines, path);

  const interpolationProblems = interpolate(doc, refs, env, lineOf);
  if (interpolationProblems.length) throw new ConfigError(file, interpolationProblems);

  const js = toJsChecked(doc, lines);
  if ('problems' in js) throw new ConfigError(file, js.problems);
  const raw = js.value;
  if (raw === null || typeof raw !== 'object') {
    throw new ConfigError(file, [{ path: [], message: 'expected a mapping with `version: 1` and `connections:`' }]);
  }
  const parsed = PipelineSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) throw new ConfigError(file, zodProblems(parsed.error, PipelineSchema, [], lineOf));
  const config = parsed.data;

  const baseDir = dirname(abs);
  const problems: ConfigProblem[] = [];
  stateProblems(config, lineOf, problems);
  const connections: LoadedConnection[] = [];
  const seen = new Set<string>();
  for (const [index, conn] of config.connections.entries()) {
    const at = (...p: (string | number)[]) => ['connections', index, ...p];
    if (seen.has(conn.name))
      problems.push({ path: at('name'), line: lineOf(at('name')), message: `duplicate connection name "${conn.name}"` });
    seen.add(conn.name);
    if (conn.embedding?.api_key) registerSecret(conn.embedding.api_key);

    const source = await loadRef('source', conn.source.type, baseDir, at('source', 'type'), lineOf, problems);
    const destination = await loadRef('destination', conn.destination.type, baseDir, at('destination', 'type'), lineOf, problems);
    const sourceConfig = source ? validateConnectorConfig(source, conn.source.config, at('source', 'config'), lineOf, problems) : undefined;
    const validateSource = (source as Source | undefined)?.validateConfig;
    if (validateSource && sourceConfig !== undefined) {
      const r = await validateSource.call(source, sourceConfig, { baseDir });
      for (const s of r.secrets ?? []) registerSecret(s);
      for (const p of r.problems)
        problems.push({ path: at('source', 'config', ...p.path), line: lineOf(at('source', 'config', ...p.path)), message: p.message });
    }
    const destinationConfig = destination
      ? validateConnectorConfig(destination, conn.destination.config, at('destination', 'config'), lineOf, problems)
      : undefined;
    if (source && destination) {
      crossCheck(conn, source, destination, at, lineOf, problems);
      connections.push({ config: conn, index, source, destination, sourceConfig, destinationConfig });
    }
  }
  if (problems.length) throw new ConfigError(file, problems);
  return { file, baseDir, config, stateDir: resolve(baseDir, config.state.path), connections, lineOf };
}

/** The file's text; a file in another encoding (latin1 "café") would silently turn into "caf\uFFFD" names. */
function decodeUtf8(file: string, bytes: Buffer): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    const text = bytes.toString('utf8');
    const line = text.slice(0, text.indexOf('\uFFFD')).split('\n').length;
    throw new ConfigError(file, [
      {
        path: [],
        line,
        message: 'the file is not valid UTF-8 (saved as latin1/Windows-1252?); save it as UTF-8, e.g. iconv -f latin1 -t utf-8',
      },
    ]);
  }
}

/** `state:` / `cache:` checks the schema cannot express (and the state URL's password is a secret). */
function stateProblems(config: PipelineConfig, lineOf: (p: (string | number)[]) => number | undefined, problems: ConfigProblem[]) {
  const add = (path: string[], message: string) => problems.push({ path, line: lineOf(path), message });
  if (config.state.type === 'postgres') {
    registerUrlPassword(config.state.url);
    if (!/^postgres(ql)?:\/\//.test(config.state.url))
      add(['state', 'url'], 'expected a PostgreSQL URL (postgres://user:password@host:5432/database)');
  } else if (config.cache?.type === 'postgres') {
    add(['cache', 'type'], 'cache type postgres keeps embeddings in the state database: set state: { type: postgres, url: ... }');
  }
}

async function loadRef(
  kind: 'source' | 'destination',
  type: string,
  baseDir: string,
  path: (string | number)[],
  lineOf: (p: (string | number)[]) => number | undefined,
  problems: ConfigProblem[],
) {
  try {
    return (await loadConnector(kind, type, baseDir)) as never;
  } catch (err) {
    problems.push({
      path,
      line: lineOf(path),
      message: err instanceof SluiceError ? err.message + (err.hint ? ` (${err.hint})` : '') : String(err),
    });
    return undefined;
  }
}

function validateConnectorConfig(
  connector: Source | Destination,
  value: unknown,
  path: (string | number)[],
  lineOf: (p: (string | number)[]) => number | undefined,
  problems: ConfigProblem[],
): unknown {
  const schema = connector.spec.config as z.ZodType;
  collectSecrets(schema, value);
  const r = schema.safeParse(value, { reportInput: true });
  if (!r.success) {
    problems.push(...zodProblems(r.error, schema, path, lineOf));
    return undefined;
  }
  return r.data;
}

function crossCheck(
  conn: ConnectionConfig,
  source: Source,
  destination: Destination,
  at: (...p: (string | number)[]) => (string | number)[],
  lineOf: (p: (string | number)[]) => number | undefined,
  problems: ConfigProblem[],
) {
  const add = (path: (string | number)[], message: string) => problems.push({ path, line: lineOf(path), message });
  if (destination.capabilities.vectors && !conn.embedding) {
    add(
      at('destination', 'type'),
      `destination "${conn.destination.type}" stores vectors: add an \`embedding:\` block (e.g. { provider: hash, dimensions: 384 })`,
    );
  }
  const names = new Set<string>();
  for (const [i, s] of (conn.streams ?? []).entries()) {
    if (names.has(s.name)) add(at('streams', i, 'name'), `duplicate stream "${s.name}"`);
    names.add(s.name);
    if (s.sync_mode && !source.capabilities.syncModes.includes(s.sync_mode)) {
      add(
        at('streams', i, 'sync_mode'),
        `source "${conn.source.type}" does not support sync_mode "${s.sync_mode}"; expected one of: ${source.capabilities.syncModes.join(', ')}`,
      );
    }
    if (s.destination_sync_mode && !destination.capabilities.destinationSyncModes.includes(s.destination_sync_mode)) {
      add(
        at('streams', i, 'destination_sync_mode'),
        `destination "${conn.destination.type}" does not support "${s.destination_sync_mode}"; expected one of: ${destination.capabilities.destinationSyncModes.join(', ')}`,
      );
    }
    if (s.sync_mode === 'incremental' && !source.capabilities.sourceDefinedCursor && !s.cursor_field) {
      add(
        at('streams', i),
        `sync_mode incremental needs a cursor_field (e.g. cursor_field: [updated_at]) for source "${conn.source.type}"`,
      );
    }
    if (s.sync_mode === 'cdc' && s.cursor_field)
      add(at('streams', i, 'cursor_field'), 'cdc streams follow the database log; remove cursor_field');
  }
}

// ---- ${VAR} interpolation on the parsed document (line numbers and YAML structure stay intact) ---

// Compose's syntax: ${VAR}, ${VAR:-default} (unset or empty), ${VAR:?message} (unset or empty is
// an error saying message); $${…} is the literal text ${…}.
const VAR = /\$\$\{[^}\n]*\}?|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}/g;
const PLACEHOLDER = /__sluice_var_(\d+)__/g;
type VarRef = { literal: string } | { name: string; fallback: string | undefined; required: string | undefined; literal?: undefined };

function interpolate(
  doc: Document,
  refs: VarRef[],
  env: NodeJS.ProcessEnv,
  lineOf: (p: (string | number)[]) => number | undefined,
): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const visit = (node: unknown, path: (string | number)[]) => {
    if (isMap(node)) {
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
        visit(pair.value, [...path, key]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => visit(item, [...path, i]));
    } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('__sluice_var_')) {
      const original = node.value;
      let variables = 0;
      const replaced = original.replace(PLACEHOLDER, (_m, i: string) => {
        const ref = refs[Number(i)];
        if (ref.literal !== undefined) return ref.literal;
        variables++;
        const { name, fallback, required } = ref;
        const v = env[name];
        if (v === undefined || v === '') {
          if (fallback !== undefined) return fallback;
          problems.push({
            path,
            line: lineOf(path),
            message:
              required !== undefined
                ? `environment variable ${name} is not set: ${required || 'it is required'}`
                : `environment variable ${name} is not set (use \${${name}:-default} for a default)`,
          });
          return '';
        }
        if (looksSecret(name) || looksSecret(String(path[path.length - 1] ?? ''))) registerSecret(v);
        registerUrlPassword(v);
        return v;
      });
      // An unquoted value that is exactly one variable gets the type YAML would give it (numbers,
      // booleans); a quoted one ("${PW}") stays a string whatever the variable holds.
      const plain = node.type === undefined || node.type === 'PLAIN';
      node.value = plain && variables === 1 && /^__sluice_var_\d+__$/.test(original) ? coerce(replaced) : replaced;
    }
  };
  visit(doc.contents, []);
  return problems;
}

function coerce(v: string): unknown {
  if (/^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  if (v === 'true' || v === 'false') return v === 'true';
  return v;
}

function nodeLine(doc: Document, lines: LineCounter, path: (string | number)[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as Node | undefined;
    const range = (node as { range?: [number, number, number] } | undefined)?.range;
    if (range) return lines.linePos(range[0]).line;
  }
  return undefined;
}

// ---- zod issues → people's messages --------------------------------------------------------------

export function zodProblems(
  error: z.ZodError,
  schema: z.ZodType,
  prefix: (string | number)[],
  lineOf: (p: (string | number)[]) => number | undefined,
): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  for (const issue of flattenIssues(error.issues)) {
    const path = [...prefix, ...(issue.path as (string | number)[])];
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') {
      const known = objectKeysAt(schema, issue.path as (string | number)[]);
      for (const key of issue.keys) {
        const guess = closest(key, known);
        const keyPath = [...path, key];
        out.push({
          path: keyPath,
          line: lineOf(keyPath),
          message: `unknown key "${key}"${guess ? ` — did you mean "${guess}"?` : known.length ? ` (expected one of: ${known.join(', ')})` : ''}`,
        });
      }
      continue;
    }
    if (issue.code === 'invalid_value' && 'values' in issue) {
      const values = (issue.values as unknown[]).map(String);
      const got = (issue as { input?: unknown }).input;
      const guess = typeof got === 'string' ? closest(got, values) : undefined;
      message = `${got !== undefined ? `"${String(got)}" is not valid; ` : ''}expected one of: ${values.join(', ')}${guess ? ` — did you mean "${guess}"?` : ''}`;
    } else if (issue.code === 'invalid_type') {
      const expected = (issue as { expected?: string }).expected;
      message =
        (issue as { input?: unknown }).input === undefined
          ? `missing required key (expected ${expected})`
          : `expected ${expected}, got ${describeType((issue as { input?: unknown }).input)}`;
    }
    out.push({ path, line: lineOf(path), message });
  }
  // A misspelt key shows up twice (unknown "destinaton", missing "destination"): keep the one that explains it.
  const guessed = new Set(
    out
      .filter((p) => p.message.includes('did you mean'))
      .map((p) => formatPath([...p.path.slice(0, -1), /did you mean "([^"]+)"/.exec(p.message)![1]])),
  );
  const kept = out.filter((p) => !(p.message.startsWith('missing required key') && guessed.has(formatPath(p.path))));
  return kept.length ? kept : [{ path: prefix, line: lineOf(prefix), message: error.message }];
}

type Issue = z.core.$ZodIssue;
function flattenIssues(issues: readonly Issue[], base: PropertyKey[] = []): Issue[] {
  const out: Issue[] = [];
  for (const issue of issues) {
    const path = [...base, ...issue.path];
    if (issue.code === 'invalid_union' && issue.errors.length) {
      // Report the alternative that got furthest (the user most likely meant it).
      const best = [...issue.errors].sort((a, b) => depth(b) - depth(a))[0];
      out.push(...flattenIssues(best, path));
    } else out.push({ ...issue, path } as Issue);
  }
  return out;
}
const depth = (issues: readonly Issue[]) => Math.max(0, ...issues.map((i) => i.path.length));

function describeType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** The keys an object schema accepts at `path` (for "did you mean"). */
function objectKeysAt(schema: z.ZodType, path: (string | number)[]): string[] {
  let s: unknown = schema;
  const unwrap = (x: unknown): unknown => {
    for (let i = 0; i < 10; i++) {
      const def = (x as { _zod?: { def?: Record<string, unknown> } })?._zod?.def;
      if (!def) return x;
      if (def.innerType) x = def.innerType;
      else if (def.type === 'pipe') x = def.in;
      else return x;
    }
    return x;
  };
  for (const p of path) {
    s = unwrap(s);
    const def = (s as { _zod: { def: Record<string, unknown> } })._zod?.def;
    if (!def) return [];
    if (def.type === 'array') s = def.element;
    else if (def.type === 'object') s = (def.shape as Record<string, unknown>)[String(p)];
    else if (def.type === 'union') {
      const opts = (def.options as unknown[])
        .map(unwrap)
        .filter((o) => (o as { _zod: { def: { type: string } } })._zod?.def?.type === (typeof p === 'number' ? 'array' : 'object'));
      if (!opts.length) return [];
      const o = (opts[0] as { _zod: { def: Record<string, unknown> } })._zod.def;
      s = typeof p === 'number' ? o.element : (o.shape as Record<string, unknown>)[String(p)];
    } else return [];
  }
  s = unwrap(s);
  const def = (s as { _zod?: { def?: Record<string, unknown> } })?._zod?.def;
  if (def?.type === 'object') return Object.keys(def.shape as object);
  if (def?.type === 'union') {
    for (const o of def.options as unknown[]) {
      const d = (unwrap(o) as { _zod?: { def?: Record<string, unknown> } })?._zod?.def;
      if (d?.type === 'object') return Object.keys(d.shape as object);
    }
  }
  return [];
}
