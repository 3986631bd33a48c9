// Checks a config against a JSON Schema that comes from outside the connector's own zod schema:
// an Airbyte program's connectionSpecification, a low-code manifest's spec. Problems name the path
// and what was expected, never the value, so a secret in a wrong place is not echoed.
import { Ajv, type ValidateFunction } from 'ajv';

export interface JsonSchemaConfigProblem {
  path: (string | number)[];
  message: string;
}

export interface JsonSchemaConfigOptions {
  /** Where the schema comes from, for messages: "the program's spec" → `(from the program's spec)`. */
  origin: string;
  /** Its name when it is not a valid JSON Schema (default: `origin`). */
  schemaName?: string;
  /** Fill in the schema's `default`s in `config` (it is modified), as Airbyte's CDK does. */
  useDefaults?: boolean;
  /** Put in front of the path of every problem found in `config` (e.g. `['config']`). */
  pathPrefix?: (string | number)[];
}

// Draft-07 as Airbyte specs are written; unknown keywords (airbyte_secret, order…) allowed, and
// `format` not enforced since specs use it loosely.
const validators = new Map<boolean, Ajv>();
function ajvFor(useDefaults: boolean): Ajv {
  let ajv = validators.get(useDefaults);
  if (!ajv) validators.set(useDefaults, (ajv = new Ajv({ allErrors: true, strict: false, useDefaults, validateFormats: false })));
  return ajv;
}

/** Every problem of `config` against `schema` (none when it matches). */
export function configProblemsAgainstJsonSchema(
  schema: Record<string, unknown>,
  config: Record<string, unknown>,
  opts: JsonSchemaConfigOptions,
): JsonSchemaConfigProblem[] {
  const prefix = opts.pathPrefix ?? [];
  const { $schema: _ignored, ...rest } = schema;
  let validate: ValidateFunction;
  try {
    validate = ajvFor(opts.useDefaults ?? false).compile(rest);
  } catch (err) {
    return [{ path: [], message: `${opts.schemaName ?? opts.origin} is not a valid JSON Schema: ${(err as Error).message}` }];
  }
  if (validate(config)) return [];
  return (validate.errors ?? []).map((e) => {
    const path: (string | number)[] = [
      ...prefix,
      ...e.instancePath
        .split('/')
        .filter(Boolean)
        .map((p) => (/^\d+$/.test(p) ? Number(p) : p)),
    ];
    const missing = (e.params as { missingProperty?: string }).missingProperty;
    if (missing) return { path, message: `missing required field "${missing}" (from ${opts.origin})` };
    const extra = (e.params as { additionalProperty?: string }).additionalProperty;
    if (extra) return { path: [...path, extra], message: `unknown field "${extra}" (not in ${opts.origin})` };
    return { path, message: `${e.message ?? 'invalid'} (from ${opts.origin})` };
  });
}

/** Config values whose schema says `airbyte_secret` (in any branch of oneOf/anyOf/allOf), for redaction. */
export function airbyteSecretValues(schema: unknown, value: unknown, out: unknown[] = []): unknown[] {
  if (!schema || typeof schema !== 'object' || value === undefined || value === null) return out;
  const s = schema as Record<string, unknown>;
  if (s.airbyte_secret === true) out.push(value);
  for (const key of ['oneOf', 'anyOf', 'allOf'] as const)
    if (Array.isArray(s[key])) for (const alt of s[key] as unknown[]) airbyteSecretValues(alt, value, out);
  if (Array.isArray(value)) for (const v of value) airbyteSecretValues(s.items, v, out);
  else if (typeof value === 'object') {
    const props = (s.properties ?? {}) as Record<string, unknown>;
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) airbyteSecretValues(props[k], v, out);
  }
  return out;
}
