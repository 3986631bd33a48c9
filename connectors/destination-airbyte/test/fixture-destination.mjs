#!/usr/bin/env node
// A destination connector speaking the Airbyte protocol, standard library only, for the `airbyte`
// destination's tests. `write` keeps records by id in config.path (rewritten at every STATE, then
// the STATE is echoed = committed). Config: { path, crash_after_records, no_echo }.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const [command, ...rest] = process.argv.slice(2);
const arg = (name) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const out = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);
const config = arg('--config') ? JSON.parse(readFileSync(arg('--config'), 'utf8')) : {};

if (command === 'spec') {
  out({ type: 'SPEC', spec: { connectionSpecification: { type: 'object', properties: { path: { type: 'string' } } } } });
} else if (command === 'check') {
  out({
    type: 'CONNECTION_STATUS',
    connectionStatus: config.path ? { status: 'SUCCEEDED' } : { status: 'FAILED', message: 'path is required' },
  });
} else if (command === 'write') {
  const catalog = JSON.parse(readFileSync(arg('--catalog'), 'utf8'));
  const stored = existsSync(config.path) ? JSON.parse(readFileSync(config.path, 'utf8')) : {};
  for (const s of catalog.streams) if (s.destination_sync_mode === 'overwrite') stored[s.stream.name] = {};
  let records = 0;
  const pk = Object.fromEntries(catalog.streams.map((s) => [s.stream.name, (s.primary_key ?? [['id']]).map((p) => p[0])]));
  out({ type: 'LOG', log: { level: 'INFO', message: `writing ${catalog.streams.length} stream(s)` } });
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    const m = JSON.parse(line);
    if (m.type === 'RECORD') {
      if (config.crash_after_records && ++records > config.crash_after_records) {
        process.stderr.write(`disk full after ${records - 1} records\n`);
        process.exit(4);
      }
      const key = pk[m.record.stream].map((k) => m.record.data[k]).join('|');
      const table = (stored[m.record.stream] ??= {});
      if (m.record.data._ab_cdc_deleted_at) delete table[key];
      else table[key] = m.record.data;
    } else if (m.type === 'STATE') {
      writeFileSync(`${config.path}.tmp`, JSON.stringify(stored));
      renameSync(`${config.path}.tmp`, config.path);
      if (!config.no_echo) out(m);
    }
  }
  writeFileSync(`${config.path}.tmp`, JSON.stringify(stored));
  renameSync(`${config.path}.tmp`, config.path);
}
