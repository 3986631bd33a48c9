// JSON Schema of a connector's config, derived from its zod schema (the single source of truth).
import { z } from 'zod';
import type { ConnectorSpec } from '../protocol/connector.ts';

/**
 * The config schema as JSON Schema (draft 2020-12). Fields marked `.meta({ secret: true })` carry
 * `airbyte_secret: true`, which is how Airbyte-style UIs and sluice's own output know to hide them.
 * `io: 'input'` describes what a user may write, so fields with defaults are not required.
 */
export function configJsonSchema(schema: z.ZodType): Record<string, unknown> {
  return z.toJSONSchema(schema, {
    io: 'input',
    unrepresentable: 'any',
    override: (ctx) => {
      const js = ctx.jsonSchema as Record<string, unknown>;
      if (js.secret === true) {
        delete js.secret;
        js.airbyte_secret = true;
      }
    },
  }) as Record<string, unknown>;
}

/** An Airbyte `ConnectorSpecification` for a connector spec (what `sluice spec` and specs/ show). */
export function connectorSpecification(
  spec: ConnectorSpec<unknown>,
  extra: { supportsIncremental?: boolean; destinationSyncModes?: string[] } = {},
): Record<string, unknown> {
  return {
    ...(spec.documentationUrl ? { documentationUrl: spec.documentationUrl } : {}),
    connectionSpecification: { title: spec.title ?? spec.name, ...(spec.description ? { description: spec.description } : {}), ...configJsonSchema(spec.config) },
    ...(extra.supportsIncremental !== undefined ? { supportsIncremental: extra.supportsIncremental } : {}),
    ...(extra.destinationSyncModes ? { supported_destination_sync_modes: extra.destinationSyncModes } : {}),
  };
}

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
