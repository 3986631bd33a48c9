// JSON Schema of a connector's config, derived from its zod schema (the single source of truth).
import type { z } from 'zod';
import { configJsonSchema } from '../protocol/spec.ts';

export { configJsonSchema, connectorSpecification } from '../protocol/spec.ts';

/** Paths (dot-joined) of the config fields marked secret, e.g. for redacting values in output. */
export function secretPaths(schema: z.ZodType): string[] {
  const out: string[] = [];
  const walk = (node: unknown, path: string[]): void => {
    if (!node || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    if (n.airbyte_secret === true) out.push(path.join('.'));
    if (n.properties && typeof n.properties === 'object') {
      for (const [k, v] of Object.entries(n.properties as Record<string, unknown>)) walk(v, [...path, k]);
    }
    for (const key of ['anyOf', 'oneOf', 'allOf'] as const) {
      if (Array.isArray(n[key])) for (const v of n[key] as unknown[]) walk(v, path);
    }
  };
  walk(configJsonSchema(schema), []);
  return [...new Set(out)];
}
