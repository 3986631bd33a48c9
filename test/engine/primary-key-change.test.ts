// A changed primary_key would leave every old document's chunks behind under ids no record names
// again. The engine refuses it for every destination (here jsonl) unless the stream runs in
// overwrite mode, which rebuilds the generation under the new key.
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';

const pipeline = (key: string, mode = 'append_dedup') => `version: 1
connections:
  - name: rows
    source: { type: file, config: { path: ./data, stream: items } }
    destination: { type: jsonl, config: { path: ./out/rows.jsonl } }
    embedding: { provider: hash, dimensions: 16 }
    processing: { text_fields: [title, body] }
    streams: [ { name: items, primary_key: [[${key}]], destination_sync_mode: ${mode} } ]
`;

/** Every file under the state directory with its bytes, to show a refused run changed nothing. */
function files(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = readFileSync(p, 'utf8');
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

const sync = (dir: string, ...args: string[]) => runCli(['sync', join(dir, 'p.yaml'), '--json', ...args], { cwd: dir });
const ids = (dir: string) => [...new Set(readJsonl(join(dir, 'out/rows.jsonl')).map((l) => l.document_id as string))].sort();

describe('primary_key change (every destination)', () => {
  it('is refused before any write unless an overwrite run re-keys the stream', async () => {
    const dir = tempDir();
    writeFiles(dir, {
      'p.yaml': pipeline('id'),
      'data/a.jsonl':
        '{"id":"1","slug":"kettle","title":"Kettle","body":"Boils water"}\n{"id":"2","slug":"mug","title":"Mug","body":"Holds tea"}\n',
    });
    const first = await sync(dir);
    expect(first.code, first.stderr).toBe(0);
    expect(ids(dir)).toEqual(['1', '2']);
    const out = readFileSync(join(dir, 'out/rows.jsonl'));
    const state = files(join(dir, '.sluice'));
    expect(Object.keys(state).some((f) => f.includes('schema'))).toBe(true);

    writeFiles(dir, { 'p.yaml': pipeline('slug') });
    const refused = await sync(dir);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(
      'connection rows, stream items: primary_key changed from [id] to [slug], but the destination holds documents keyed by the old one',
    );
    expect(refused.stderr).toContain('set destination_sync_mode: overwrite on stream items, run sluice sync <pipeline> --full-refresh');
    expect(readFileSync(join(dir, 'out/rows.jsonl')).equals(out)).toBe(true);
    expect(files(join(dir, '.sluice'))).toEqual(state);

    // A dry run refuses the same way and records nothing either.
    const dry = await sync(dir, '--dry-run');
    expect(dry.code).toBe(1);
    expect(dry.stderr).toContain('primary_key changed from [id] to [slug]');
    expect(files(join(dir, '.sluice'))).toEqual(state);

    // One overwrite run re-keys everything: only the new-key documents remain.
    writeFiles(dir, { 'p.yaml': pipeline('slug', 'overwrite') });
    const rekey = await sync(dir, '--full-refresh');
    expect(rekey.code, rekey.stderr).toBe(0);
    expect(ids(dir)).toEqual(['kettle', 'mug']);

    // Back to append_dedup with the new key: accepted, and the old key is now the refused one.
    writeFiles(dir, { 'p.yaml': pipeline('slug') });
    const after = await sync(dir, '--full-refresh');
    expect(after.code, after.stderr).toBe(0);
    expect(ids(dir)).toEqual(['kettle', 'mug']);
    writeFiles(dir, { 'p.yaml': pipeline('id') });
    const back = await sync(dir);
    expect(back.code).toBe(1);
    expect(back.stderr).toContain('primary_key changed from [slug] to [id]');
  });

  it('a snapshot kept before keys were recorded just records the key', async () => {
    const dir = tempDir();
    writeFiles(dir, {
      'p.yaml': pipeline('id'),
      'data/a.jsonl': '{"id":"1","slug":"kettle","title":"Kettle","body":"Boils water"}\n',
    });
    expect((await sync(dir)).code).toBe(0);
    const schemaFile = join(dir, '.sluice/state/schema/rows.json');
    const kept = JSON.parse(readFileSync(schemaFile, 'utf8')) as { primary_keys?: unknown };
    expect(kept.primary_keys).toEqual({ items: [['id']] });
    delete kept.primary_keys;
    writeFiles(dir, { '.sluice/state/schema/rows.json': JSON.stringify(kept), 'p.yaml': pipeline('slug') });
    const r = await sync(dir);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(schemaFile, 'utf8')).primary_keys).toEqual({ items: [['slug']] });
  });
});
