// `sluice verify` memory: verify streams the source and the stored chunks through a scratch LMDB
// on disk (src/engine/verify.ts), so its memory must not grow with the index. Two indexes, of
// 10k and 100k documents (SLUICE_BENCH_VERIFY_DOCS), are built by `sluice sync` (file source: one
// JSONL data file → hash embeddings → jsonl destination with vectors), then each is verified by
// `sluice verify --json` in a child process of its own, side by side:
//   - peak RSS (getrusage maxRSS of the child, which counts the LMDB pages it has mapped too);
//   - peak anonymous memory (RssAnon of /proc/<pid>/status, sampled every 20 ms): the heap and
//     buffers, what would grow if verify held the index in memory.
// Target: at 10× the documents, peak RSS < 1.5× the smaller run's. Not part of `npm test`.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
const WORK = join(ROOT, '.bench', 'verify');
const SIZES = (process.env.SLUICE_BENCH_VERIFY_DOCS ?? '10000,100000').split(',').map(Number).filter(Boolean);
const DIMENSIONS = 64;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
  maxRssKb: number;
  peakAnonKb: number;
}

/** Runs `sluice <args>` as a child process; its own peak RSS comes from getrusage at its exit. */
async function sluice(args: string[]): Promise<Run> {
  const rssHook = `data:text/javascript,process.on("exit",()=>process.stderr.write("\\nSLUICE_MAXRSS_KB "+process.resourceUsage().maxRSS+"\\n"))`;
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', rssHook, 'bin/sluice.js', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  let peakAnonKb = 0;
  const sample = setInterval(() => {
    try {
      const anon = /RssAnon:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (anon) peakAnonKb = Math.max(peakAnonKb, Number(anon[1]));
    } catch {
      // exited between two samples
    }
  }, 20);
  const code = await new Promise<number | null>((ok, fail) => {
    child.on('error', fail);
    child.on('exit', ok);
  });
  clearInterval(sample);
  return {
    code,
    stdout,
    stderr,
    seconds: (Date.now() - started) / 1000,
    maxRssKb: Number(/SLUICE_MAXRSS_KB (\d+)/.exec(stderr)?.[1] ?? NaN),
    peakAnonKb,
  };
}

/** A project of `n` records (about 600 bytes of text each: one or two chunks), synced once. */
async function indexOf(n: number): Promise<{ yaml: string; syncSeconds: number }> {
  const dir = join(WORK, String(n));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'data'), { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const body = `Record ${i} describes pump model ${i % 997} and valve ${(i * 7) % 313}. `.repeat(8);
    lines.push(JSON.stringify({ sku: `sku-${i}`, title: `Item ${i}`, body }));
  }
  writeFileSync(join(dir, 'data/items.jsonl'), lines.join('\n') + '\n');
  const yaml = join(dir, 'pipeline.yaml');
  writeFileSync(
    yaml,
    `version: 1
connections:
  - name: bench
    source: { type: file, config: { path: ./data, stream: items, checkpoint_every: 1000000 } }
    destination: { type: jsonl, config: { path: ./out/items.jsonl } }
    embedding: { provider: hash, dimensions: ${DIMENSIONS} }
    processing: { text_fields: [title, body], chunk_size: 400, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: items, primary_key: [[sku]], sync_mode: full_refresh, destination_sync_mode: overwrite } ]
`,
  );
  const synced = await sluice(['sync', yaml, '--json']);
  if (synced.code !== 0) throw new Error(`sluice sync failed (${synced.code}): ${synced.stderr.slice(-2000)}`);
  return { yaml, syncSeconds: synced.seconds };
}

export default async function verifyMemory(): Promise<Record<string, unknown>> {
  const load = loadavg()[0];
  const bySize: Record<string, Record<string, unknown>> = {};
  const peaks: number[] = [];
  const anon: number[] = [];
  let clean = true;
  for (const n of SIZES) {
    const { yaml, syncSeconds } = await indexOf(n);
    const run = await sluice(['verify', yaml, '--json']);
    if (run.code !== 0 && run.code !== 1) throw new Error(`sluice verify failed (${run.code}): ${run.stderr.slice(-2000)}`);
    const report = JSON.parse(run.stdout) as { clean: boolean; streams: { items: { documents_checked: number; chunks_checked: number } } };
    clean &&= report.clean && run.code === 0;
    peaks.push(run.maxRssKb);
    anon.push(run.peakAnonKb);
    bySize[n] = {
      documents_checked: report.streams.items.documents_checked,
      chunks_checked: report.streams.items.chunks_checked,
      clean: report.clean,
      'sync (s, to build the index)': Number(syncSeconds.toFixed(1)),
      'verify (s)': Number(run.seconds.toFixed(1)),
      'verify peak RSS (MB)': Math.round(run.maxRssKb / 1024),
      'verify peak anonymous memory (MB, sampled)': Math.round(run.peakAnonKb / 1024),
    };
  }
  rmSync(WORK, { recursive: true, force: true });
  const ratio = peaks.length > 1 ? peaks[peaks.length - 1] / peaks[0] : NaN;
  const anonRatio = anon.length > 1 ? anon[anon.length - 1] / anon[0] : NaN;
  const documentsRatio = SIZES.length > 1 ? SIZES[SIZES.length - 1] / SIZES[0] : NaN;
  return {
    node: process.version,
    'load average (1 min) at start': Number(load.toFixed(1)),
    destination: `jsonl, hash embedder ${DIMENSIONS} dimensions, vectors in the file`,
    bySize,
    'documents ratio (largest/smallest)': documentsRatio,
    'peak RSS ratio (largest/smallest)': Number(ratio.toFixed(2)),
    'peak anonymous memory ratio (largest/smallest)': Number(anonRatio.toFixed(2)),
    targets: {
      'verify clean at every size': clean,
      'peak RSS at 10x the documents < 1.5x': SIZES.length > 1 && documentsRatio >= 10 ? ratio < 1.5 : 'needs two sizes 10x apart',
      // Anonymous memory (heap, native buffers) is what the kernel cannot reclaim; the mapped scratch
      // pages RSS also counts are file-backed and go first under a pod's memory limit. Both reported.
      'peak anonymous memory at 10x the documents < 1.5x':
        SIZES.length > 1 && documentsRatio >= 10 ? anonRatio < 1.5 : 'needs two sizes 10x apart',
    },
  };
}
