// A connector's zod config schema as JSON Schema and as an Airbyte ConnectorSpecification.
import { z } from 'zod';
import type { Connector } from './connector.ts';
import type { ConnectorSpecification } from './messages.ts';

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

/** What `sluice spec` prints and specs/ holds. */
export function connectorSpecification(c: Connector): ConnectorSpecification {
  const spec: ConnectorSpecification = {
    ...(c.spec.documentationUrl ? { documentationUrl: c.spec.documentationUrl } : {}),
    connectionSpecification: {
      title: c.spec.title ?? c.spec.name,
      ...(c.spec.description ? { description: c.spec.description } : {}),
      ...configJsonSchema(c.spec.config),
    },
  };
  if (c.kind === 'source') spec.supportsIncremental = c.capabilities.syncModes.includes('incremental');
  else spec.supported_destination_sync_modes = c.capabilities.destinationSyncModes;
  return spec;
}
