// Checks shared by source and destination conformance: the spec and how config is accepted/refused.
import type { ConnectorContext, Destination, Source } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import { configJsonSchema } from '../cdk/spec.ts';
import type { ReportBuilder } from './report.ts';
import { formatAjvErrors, schemaValidator } from './schema.ts';

const SECRET_NAME = /(pass(word)?|secret|token|api_?key|private_?key|credentials?)$/i;

function zodIssues(error: unknown): string {
  const issues = (error as { issues?: { path: PropertyKey[]; message: string }[] }).issues ?? [];
  return (
    issues
      .slice(0, 3)
      .map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`)
      .join('; ') || 'invalid'
  );
}

/** Runs the spec.* checks; returns the parsed config, or undefined when it does not parse. */
export function checkSpec(connector: Source | Destination, rawConfig: unknown, report: ReportBuilder): unknown {
  let schema: Record<string, unknown> | undefined;
  try {
    schema = configJsonSchema(connector.spec.config);
    const ajv = schemaValidator();
    const problems: string[] = [];
    if (!ajv.validateSchema(schema)) problems.push(`the config JSON Schema is invalid: ${ajv.errorsText(ajv.errors)}`);
    if (schema.type !== 'object')
      problems.push(`the config schema must describe an object (type: object), not ${JSON.stringify(schema.type)}`);
    if (!connector.spec.name || !/^[a-z0-9][a-z0-9-_]*$/i.test(connector.spec.name))
      problems.push(`spec.name ${JSON.stringify(connector.spec.name)} is not a simple name`);
    report.result('spec.json-schema', problems);
  } catch (err) {
    report.fail(
      'spec.json-schema',
      `the config schema cannot be turned into JSON Schema: ${err instanceof Error ? err.message : String(err)}`,
    );
  }

  if (!schema) report.skip('spec.secrets-marked', 'no JSON Schema');
  else {
    const unmarked: string[] = [];
    const walk = (node: Record<string, unknown>, path: string[]) => {
      for (const [k, v] of Object.entries((node.properties ?? {}) as Record<string, Record<string, unknown>>)) {
        const p = [...path, k];
        const types = ([] as unknown[]).concat(v.type ?? v.anyOf ?? []);
        const stringy = v.type === 'string' || types.some((t) => t === 'string' || (t as { type?: string })?.type === 'string');
        if (SECRET_NAME.test(k) && stringy && v.airbyte_secret !== true)
          unmarked.push(`config field "${p.join('.')}" looks like a secret but is not marked: add .meta({ secret: true })`);
        if (v.properties) walk(v, p);
      }
    };
    walk(schema, []);
    report.result('spec.secrets-marked', unmarked);
  }

  const parsed = connector.spec.config.safeParse(rawConfig);
  if (!parsed.success) {
    report.fail('spec.accepts-config', `the test config does not match the spec: ${zodIssues(parsed.error)}`);
    return undefined;
  }
  if (schema) {
    const ajv = schemaValidator();
    try {
      const validate = ajv.compile(schema);
      if (!validate(rawConfig)) {
        report.fail(
          'spec.accepts-config',
          `the zod schema accepts the test config but its JSON Schema does not: ${formatAjvErrors(validate.errors)}`,
        );
        return parsed.data;
      }
    } catch {
      /* reported by spec.json-schema */
    }
  }
  report.pass('spec.accepts-config');
  return parsed.data;
}

/** The key the unknown-key probe adds to the good config. */
export const UNKNOWN_KEY = '__sluice_conformance_unknown_key__';

/**
 * check.rejects-bad-config: a good config with one unknown key merged in must be refused by the
 * schema (configs are strict so typos are caught; a loose object silently drops the key), and each
 * bad config must be refused by the schema, by check() returning ok:false or throwing a
 * SluiceError — never by a crash.
 */
export async function checkConfigRejected(
  connector: Source | Destination,
  goodConfig: unknown,
  badConfigs: unknown[] | undefined,
  ctx: ConnectorContext,
  report: ReportBuilder,
): Promise<void> {
  const problems: string[] = [];
  const notes: string[] = [];
  const base = goodConfig && typeof goodConfig === 'object' && !Array.isArray(goodConfig) ? goodConfig : {};
  const probe = connector.spec.config.safeParse({ ...base, [UNKNOWN_KEY]: true });
  if (probe.success)
    problems.push(
      `a config with an unknown key was accepted by the config schema (the good config plus "${UNKNOWN_KEY}"); use z.strictObject so misspelt keys are reported`,
    );
  else notes.push(`a config with an unknown key: refused by the schema (${zodIssues(probe.error)})`);
  for (const [i, bad] of (badConfigs ?? []).entries()) {
    const label = `bad config #${i + 1}`;
    const parsed = connector.spec.config.safeParse(bad);
    if (!parsed.success) {
      notes.push(`${label}: refused by the schema (${zodIssues(parsed.error)})`);
      continue;
    }
    try {
      const r = await connector.check(parsed.data, ctx);
      if (r.ok) problems.push(`${label}: check() returned ok:true`);
      else if (!r.message) problems.push(`${label}: check() returned ok:false without a message saying what is wrong`);
      else notes.push(`${label}: ${r.message}`);
    } catch (err) {
      if (err instanceof SluiceError) notes.push(`${label}: ${err.message}`);
      else
        problems.push(
          `${label}: check() crashed with ${err instanceof Error ? err.constructor.name : typeof err}: ${err instanceof Error ? err.message : String(err)} — return { ok: false, message } or throw a SluiceError`,
        );
    }
  }
  report.result('check.rejects-bad-config', problems, notes.join('\n'));
}
