// The JSON Schema of a pipeline file for editors (yaml-language-server, VS Code): the file's own
// shape plus, for each built-in connector, the schema of its `config`, so `tabel:` for `table:`
// or a string where a number belongs is flagged while typing. Custom connectors (a path or an npm
// package in `type:`) keep a free-form config.
import { PipelineSchema } from '../src/config/schema.ts';
import type { Connector } from '../src/protocol/connector.ts';
import { configJsonSchema } from '../src/protocol/spec.ts';

type Json = Record<string, unknown>;

/** Where the schema can be found: inside the installed package (see package.json "exports"). */
export const PIPELINE_SCHEMA_ID = 'sluice/specs/pipeline.schema.json';

/** A `${VAR}` or `${VAR:-default}` reference: any value may be one, whatever its type after interpolation. */
const INTERPOLATED = { type: 'string', pattern: '\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}' };

/** Lets every constrained scalar also be a `${VAR}` reference (checked after interpolation by sluice). */
function allowInterpolation(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(allowInterpolation);
  if (!node || typeof node !== 'object') return node;
  const out: Json = {};
  for (const [k, v] of Object.entries(node as Json)) {
    // Keys of `properties` are names, not schemas; their values are.
    out[k] =
      k === 'properties' && v && typeof v === 'object'
        ? Object.fromEntries(Object.entries(v as Json).map(([name, s]) => [name, allowInterpolation(s)]))
        : allowInterpolation(v);
  }
  const scalar = ['number', 'integer', 'boolean', 'string'].includes(out.type as string);
  const constrained = out.type !== 'string' || ['enum', 'const', 'pattern', 'format', 'minLength'].some((k) => k in out);
  if (scalar && constrained) {
    const { description, default: dflt, ...rest } = out;
    return { ...(description ? { description } : {}), ...(dflt !== undefined ? { default: dflt } : {}), anyOf: [rest, INTERPOLATED] };
  }
  return out;
}

export function pipelineJsonSchema(builtins: { source: Map<string, Connector>; destination: Map<string, Connector> }): Json {
  const { $schema, ...base } = configJsonSchema(PipelineSchema) as Json & { $schema: string };
  const defs: Json = {};
  const conn = ((base.properties as Json).connections as Json).items as Json;
  for (const kind of ['source', 'destination'] as const) {
    const ref = (conn.properties as Json)[kind] as Json;
    const names = [...builtins[kind].keys()];
    const rules: Json[] = [];
    for (const [name, connector] of builtins[kind]) {
      const { $schema: _ignored, ...config } = configJsonSchema(connector.spec.config);
      if (JSON.stringify(config).includes('"$ref"'))
        throw new Error(`${kind} ${name}: its config schema has $ref, which cannot be embedded as is`);
      defs[`${kind}-${name}`] = {
        title: `${kind} ${name}: config`,
        ...(connector.spec.description ? { description: connector.spec.description } : {}),
        ...config,
      };
      rules.push({
        if: { properties: { type: { const: name } }, required: ['type'] },
        then: { properties: { config: { $ref: `#/$defs/${kind}-${name}` } } },
      });
    }
    (ref.properties as Json).type = {
      type: 'string',
      minLength: 1,
      description: `A built-in ${kind} (${names.join(', ')}) or a custom connector: a path (./my-${kind}.ts) or an npm package`,
      examples: names,
    };
    ref.allOf = rules;
  }
  return allowInterpolation({
    $schema,
    $id: PIPELINE_SCHEMA_ID,
    title: 'sluice pipeline file',
    description: 'Point your editor at it: `# yaml-language-server: $schema=<path to this file>` as the first line of a pipeline file',
    ...base,
    $defs: defs,
  }) as Json;
}
