#!/usr/bin/env node
// A source connector speaking the Airbyte protocol, standard library only, for the `airbyte`
// source's tests. Config: { password, records, state_every, crash_at, legacy_state, slow_ms, sigterm_marker,
// text_bytes, echo_password } (text_bytes pads each record's text, generated on the fly, for the memory test).
// Stream `notes`: records { id, n, text } for n = 1..records, resumed after the saved cursor.
import { readFileSync, writeFileSync } from 'node:fs';

const [command, ...rest] = process.argv.slice(2);
const arg = (name) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const out = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);
const readJson = (name) => (arg(name) ? JSON.parse(readFileSync(arg(name), 'utf8')) : undefined);
const config = readJson('--config') ?? {};

const stream = {
  name: 'notes',
  json_schema: { type: 'object', properties: { id: { type: 'string' }, n: { type: 'integer' }, text: { type: 'string' } } },
  supported_sync_modes: ['full_refresh', 'incremental'],
  source_defined_cursor: true,
  default_cursor_field: ['n'],
  source_defined_primary_key: [['id']],
};

if (command === 'spec') {
  out({
    type: 'SPEC',
    spec: {
      connectionSpecification: {
        type: 'object',
        properties: {
          password: { type: 'string', airbyte_secret: true },
          records: { type: 'integer', minimum: 0 },
          state_every: { type: 'integer', minimum: 1 },
          crash_at: { type: 'integer' },
          legacy_state: { type: 'boolean' },
          slow_ms: { type: 'integer' },
          sigterm_marker: { type: 'string' },
          text_bytes: { type: 'integer', minimum: 0 },
          echo_password: { type: 'boolean' },
        },
      },
    },
  });
} else if (command === 'check') {
  out({ type: 'LOG', log: { level: 'INFO', message: 'checking the password' } });
  // A careless connector that logs its secret: sluice must still never print it.
  if (config.echo_password) out({ type: 'LOG', log: { level: 'ERROR', message: `password was ${config.password}` } });
  out({
    type: 'CONNECTION_STATUS',
    connectionStatus: config.password === 'right' ? { status: 'SUCCEEDED' } : { status: 'FAILED', message: 'wrong password' },
  });
} else if (command === 'discover') {
  out({ type: 'CATALOG', catalog: { streams: [stream] } });
} else if (command === 'read') {
  const catalog = readJson('--catalog');
  const state = readJson('--state');
  const incremental = catalog.streams.find((s) => s.stream.name === 'notes')?.sync_mode === 'incremental';
  let after = 0;
  if (incremental && state) {
    if (Array.isArray(state)) after = state.find((s) => s.stream?.stream_descriptor?.name === 'notes')?.stream?.stream_state?.cursor ?? 0;
    else after = state.notes?.cursor ?? 0; // legacy: one blob for the whole source
  }
  if (config.sigterm_marker)
    process.on('SIGTERM', () => {
      writeFileSync(config.sigterm_marker, 'got SIGTERM');
      process.exit(0);
    });
  const total = config.records ?? 10;
  const every = config.state_every ?? 5;
  const emitState = (n) =>
    out(
      config.legacy_state
        ? { type: 'STATE', state: { data: { notes: { cursor: n } } } }
        : { type: 'STATE', state: { type: 'STREAM', stream: { stream_descriptor: { name: 'notes' }, stream_state: { cursor: n } } } },
    );
  process.stderr.write(`reading notes after ${after}\n`);
  out({
    type: 'TRACE',
    trace: { type: 'STREAM_STATUS', emitted_at: Date.now(), stream_status: { stream_descriptor: { name: 'notes' }, status: 'STARTED' } },
  });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const padding = 'x'.repeat(config.text_bytes ?? 0);
  for (let n = after + 1; n <= total; n++) {
    if (config.crash_at === n) {
      process.stderr.write(`boom: the API went away at note ${n}\n`);
      process.exit(3);
    }
    out({
      type: 'RECORD',
      record: { stream: 'notes', data: { id: `note-${n}`, n, text: `Note number ${n}.${padding}` }, emitted_at: Date.now() },
    });
    if (incremental && n % every === 0) emitState(n);
    if (config.slow_ms) await sleep(config.slow_ms);
  }
  if (incremental && total > after) emitState(total);
  out({
    type: 'TRACE',
    trace: { type: 'STREAM_STATUS', emitted_at: Date.now(), stream_status: { stream_descriptor: { name: 'notes' }, status: 'COMPLETE' } },
  });
} else {
  process.stderr.write(`unknown command ${command}\n`);
  process.exit(2);
}
