// A connector's zod config schema as an Airbyte ConnectorSpecification (JSON Schema).
import { z } from 'zod';
import type { Connector } from './connector.ts';
import type { ConnectorSpecification } from './messages.ts';

/** JSON Schema of a zod schema; `secret: true` metadata also becomes Airbyte's `airbyte_secret`. */
export function jsonSchemaOf(schema: z.ZodType): Record<string, unknown> {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  const mark = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(mark);
    else if (node && typeof node === 'object') {
      const o = node as Record<string, unknown>;
      if (o.secret === true) o.airbyte_secret = true;
      Object.values(o).forEach(mark);
    }
  };
  mark(json);
  return json;
}

export function connectorSpecification(c: Connector): ConnectorSpecification {
  const spec: ConnectorSpecification = {
    connectionSpecification: { title: c.spec.title ?? c.spec.name, ...(c.spec.description ? { description: c.spec.description } : {}), ...jsonSchemaOf(c.spec.config) },
    ...(c.spec.documentationUrl ? { documentationUrl: c.spec.documentationUrl } : {}),
  };
  if (c.kind === 'source') spec.supportsIncremental = c.capabilities.syncModes.includes('incremental');
  else spec.supported_destination_sync_modes = c.capabilities.destinationSyncModes;
  return spec;
}
