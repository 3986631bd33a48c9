// SchemaTracker.record on the per-record path: a closed schema without ignored columns hands the
// record on as it is; an ignored column is still stripped.
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SchemaTracker } from '../../src/engine/schema-changes.ts';
import type { LoadedConnection } from '../../src/config/load.ts';
import type { ConfiguredCatalog } from '../../src/protocol/messages.ts';

const quiet = { debug() {}, info() {}, warn() {}, error() {}, child: () => quiet } as never;
const conn = (policy: string) =>
  ({ config: { name: 'c', schema_changes: policy, processing: { text_fields: ['title'] } } }) as unknown as LoadedConnection;
const catalog = (properties: Record<string, unknown>, additionalProperties: boolean): ConfiguredCatalog =>
  ({
    streams: [
      {
        stream: { name: 's', json_schema: { type: 'object', properties, additionalProperties }, supported_sync_modes: ['full_refresh'] },
        sync_mode: 'full_refresh',
        destination_sync_mode: 'append_dedup',
        primary_key: [['id']],
      },
    ],
  }) as unknown as ConfiguredCatalog;

/** A state dir whose kept schema of stream `s` has id and title. */
function keptState(learnt: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'schema-record-'));
  mkdirSync(join(dir, 'schema'));
  const columns = { id: { type: 'number', nullable: false }, title: { type: 'string', nullable: false }, ...learnt };
  writeFileSync(join(dir, 'schema', 'c.json'), JSON.stringify({ version: 1, streams: { s: columns }, primary_keys: { s: [['id']] } }));
  return dir;
}

describe('SchemaTracker.record', () => {
  it('hands the record itself on for a closed schema with nothing ignored, even with a column it does not announce', async () => {
    const t = await SchemaTracker.start(
      keptState(),
      conn('ignore'),
      catalog({ id: { type: 'number' }, title: { type: 'string' } }, false),
      quiet,
    );
    const data = { id: 1, title: 'a', extra: 'x' };
    expect(t.record('s', data)).toBe(data);
    expect(data).toEqual({ id: 1, title: 'a', extra: 'x' });
    expect(t.changes).toEqual([]);
  });

  it('still strips a column ignored at the start from the records of a closed schema', async () => {
    const props = { id: { type: 'number' }, title: { type: 'string' }, secret: { type: 'string' } };
    const t = await SchemaTracker.start(keptState(), conn('ignore'), catalog(props, false), quiet);
    expect(t.changes).toMatchObject([{ column: 'secret', change: 'added', action: 'ignored' }]);
    const data = { id: 1, title: 'a', secret: 's' };
    expect(t.record('s', data)).toEqual({ id: 1, title: 'a' });
    expect(data.secret).toBe('s'); // the source's record is not changed
  });

  it('learns a column of an open schema from its records', async () => {
    const t = await SchemaTracker.start(
      keptState(),
      conn('ignore'),
      catalog({ id: { type: 'number' }, title: { type: 'string' } }, true),
      quiet,
    );
    expect(t.record('s', { id: 1, title: 'a', extra: 'x' })).toEqual({ id: 1, title: 'a' });
    expect(t.changes).toMatchObject([{ column: 'extra', change: 'added', action: 'ignored' }]);
  });

  it("compares a learnt column's value type with the kept one, but not an announced column's", async () => {
    const learnt = { extra: { type: 'string', nullable: true, observed: true } };
    const t = await SchemaTracker.start(
      keptState(learnt),
      conn('ignore'),
      catalog({ id: { type: 'number' }, title: { type: 'string' } }, true),
      quiet,
    );
    const data = { id: 1, title: 2, extra: 'x' };
    expect(t.record('s', data)).toBe(data);
    expect(t.changes).toEqual([]);
    t.record('s', { id: 2, title: 'b', extra: 3 });
    expect(t.changes).toMatchObject([{ column: 'extra', change: 'retyped', from: 'string', to: 'number', action: 'ignored' }]);
  });
});
