// JSON Schema validation for the conformance kit: connector specs and stream schemas (ajv, draft
// 2020-12, lenient about Airbyte's extra keywords) and protocol messages against Airbyte's own
// airbyte_protocol.yaml (draft-07).
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse as parseYaml } from 'yaml';
import { PACKAGE_ROOT } from '../runtime-paths.ts';

const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$/;

function addFormats(ajv: Ajv | Ajv2020): void {
  ajv.addFormat('date-time', { validate: (s: string) => DATE_TIME.test(s) && Number.isFinite(Date.parse(s)) });
  ajv.addFormat('date', /^\d{4}-\d{2}-\d{2}$/);
  ajv.addFormat('time', /^\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$/);
  ajv.addFormat('uri', { validate: (s: string) => URL.canParse(s) });
  ajv.addFormat('email', /^[^\s@]+@[^\s@]+$/);
  ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
}

/** For connector specs and stream schemas. Unknown keywords (airbyte_secret, airbyte_type) are allowed. */
export function schemaValidator(): Ajv2020 {
  const ajv = new Ajv2020({ strict: false, allErrors: true, allowUnionTypes: true });
  addFormats(ajv);
  return ajv;
}

export function formatAjvErrors(errors: ErrorObject[] | null | undefined, max = 3): string {
  if (!errors?.length) return 'invalid';
  const parts = errors.slice(0, max).map((e) => {
    const at = e.instancePath || '/';
    if (e.keyword === 'additionalProperties')
      return `${at} has unexpected property "${(e.params as { additionalProperty: string }).additionalProperty}"`;
    if (e.keyword === 'required')
      return `${at} is missing required property "${(e.params as { missingProperty: string }).missingProperty}"`;
    if (e.keyword === 'enum') return `${at} must be one of ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`;
    return `${at} ${e.message}`;
  });
  return parts.join('; ') + (errors.length > max ? ` (+${errors.length - max} more)` : '');
}

/**
 * Where the Airbyte protocol schema is read from: SLUICE_SHARED_SPECS when set, else the package's
 * own specs/ (airbyte_protocol.yaml ships with sluice, so the check never depends on a checkout).
 */
export function sharedSpecsDir(): string {
  return process.env.SLUICE_SHARED_SPECS ?? resolve(PACKAGE_ROOT, 'specs');
}

/** $SLUICE_SHARED_SPECS/airbyte_protocol.yaml when that exists, else the copy in the package. */
function defaultProtocolSchema(): string {
  const shared = process.env.SLUICE_SHARED_SPECS && resolve(process.env.SLUICE_SHARED_SPECS, 'airbyte_protocol.yaml');
  return shared && existsSync(shared) ? shared : PROTOCOL_SCHEMA;
}

export interface ProtocolValidators {
  file: string;
  message: ValidateFunction;
  stream: ValidateFunction;
}

const cache = new Map<string, ProtocolValidators>();

/** Validators for AirbyteMessage and AirbyteStream, or undefined when the schema file is absent. */
export const PROTOCOL_SCHEMA = resolve(PACKAGE_ROOT, 'specs', 'airbyte_protocol.yaml');

export function protocolValidators(file = defaultProtocolSchema()): ProtocolValidators | undefined {
  const hit = cache.get(file);
  if (hit) return hit;
  if (!existsSync(file)) return undefined;
  const doc = parseYaml(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const id = (doc.$id as string | undefined) ?? 'airbyte_protocol.yaml';
  delete doc.$schema;
  const ajv = new Ajv({ strict: false, allErrors: true, allowUnionTypes: true });
  addFormats(ajv);
  ajv.addSchema({ ...doc, $id: id });
  const get = (def: string): ValidateFunction => {
    const v = ajv.getSchema(`${id}#/definitions/${def}`);
    if (!v) throw new Error(`${file} has no definition ${def}`);
    return v;
  };
  const validators = { file, message: get('AirbyteMessage'), stream: get('AirbyteStream') };
  cache.set(file, validators);
  return validators;
}
