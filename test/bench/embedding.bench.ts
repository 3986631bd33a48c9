// Embedding throughput against the OpenAI-compatible fixture at 50 ms latency per request:
// sluice's openai embedder (driven the way the engine drives it) vs LangChain.js
// OpenAIEmbeddings with default settings, on the same inputs, in the same run.
//
// The fixture runs in a child process so the server's CPU work (JSON, vectors, base64) does not
// compete with the client under test on the same event loop.
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { availableParallelism, loadavg } from 'node:os';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import pLimit from 'p-limit';
import { OpenAIEmbeddings } from '@langchain/openai';
import { createEmbedder } from '../../src/embedding/index.ts';
import { OPENAI_DEFAULTS } from '../../src/embedding/openai.ts';

const LATENCY_MS = 50;
const INPUTS = Number(process.env.SLUICE_BENCH_EMBED_INPUTS ?? 80_000);
const DIMENSIONS = Number(process.env.SLUICE_BENCH_EMBED_DIMENSIONS ?? 256);
const MODEL = 'text-embedding-3-small';
const API_KEY = 'sk-bench';

v8.setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

const silent = { debug() {}, info() {}, warn() {}, error() {} };

async function startFixtureProcess(): Promise<{ url: string; origin: string; child: ChildProcess }> {
  const fixture = resolve(import.meta.dirname, '../fixtures/openai-server.ts');
  const script = `
    const { startOpenAIServer } = await import(${JSON.stringify(fixture)});
    const s = await startOpenAIServer({ latencyMs: ${LATENCY_MS}, tokenCounting: 'estimate', constantVectors: true, trackInputs: false });
    process.stdout.write(JSON.stringify({ url: s.url, origin: s.origin }) + '\\n');
    process.stdin.resume();
    process.stdin.on('end', () => process.exit(0));
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise<string>((ok, fail) => {
    let buf = '';
    child.stdout!.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) ok(buf.split('\n')[0]);
    });
    child.on('exit', (code) => fail(new Error(`fixture exited ${code}`)));
  });
  return { ...(JSON.parse(line) as { url: string; origin: string }), child };
}

async function serverStats(origin: string): Promise<{ requests: number; inputs: number; processCpuMs: number }> {
  return (await fetch(`${origin}/_stats`)).json() as Promise<{ requests: number; inputs: number; processCpuMs: number }>;
}

function inputsFor(run: string, n: number): string[] {
  // Distinct short chunks (~15 tokens), like titles or short paragraphs.
  return Array.from({ length: n }, (_, i) => `${run} record ${i}: the pump on line ${i % 97} reports pressure ${i % 13} bar`);
}

export default async function bench(): Promise<Record<string, unknown>> {
  const { url, origin, child } = await startFixtureProcess();
  try {
    const sluice = createEmbedder(
      { provider: 'openai', api_key: API_KEY, base_url: url, model: MODEL, dimensions: DIMENSIONS },
      { logger: silent },
    );
    const langchain = new OpenAIEmbeddings({ apiKey: API_KEY, model: MODEL, dimensions: DIMENSIONS, configuration: { baseURL: url } });

    // The engine's driving loop: embed() calls of batchSize inputs, `concurrency` calls in flight.
    const runSluice = async (texts: string[]) => {
      const limit = pLimit(sluice.concurrency);
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < texts.length; i += sluice.batchSize) calls.push(limit(() => sluice.embed(texts.slice(i, i + sluice.batchSize))));
      await Promise.all(calls);
    };
    const runLangchain = async (texts: string[]) => {
      await langchain.embedDocuments(texts);
    };
    const measure = async (name: string, run: (texts: string[]) => Promise<void>) => {
      await run(inputsFor(`${name}-warmup`, 2_000));
      collectGarbage();
      const texts = inputsFor(name, INPUTS);
      const before = await serverStats(origin);
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      await run(texts);
      const seconds = (performance.now() - started) / 1000;
      const cpu = process.cpuUsage(cpuBefore);
      const after = await serverStats(origin);
      return {
        seconds: +seconds.toFixed(3),
        inputs_per_s: Math.round(INPUTS / seconds),
        requests: after.requests - before.requests,
        server_inputs: after.inputs - before.inputs,
        // CPU per 1,000 inputs: comparable even when the machine is busy and wall-clock rates are not.
        client_cpu_ms_per_1k_inputs: +(((cpu.user + cpu.system) / 1000 / INPUTS) * 1000).toFixed(2),
        server_cpu_ms_per_1k_inputs: +(((after.processCpuMs - before.processCpuMs) / INPUTS) * 1000).toFixed(2),
      };
    };

    // Interleaved rounds, each starting from a collected heap (LangChain leaves ~160 MB of
    // number[] vectors behind per run); the median round of each is reported.
    const rounds = Number(process.env.SLUICE_BENCH_EMBED_ROUNDS ?? 3);
    const lcRuns: Awaited<ReturnType<typeof measure>>[] = [];
    const ourRuns: Awaited<ReturnType<typeof measure>>[] = [];
    for (let r = 0; r < rounds; r++) {
      collectGarbage();
      ourRuns.push(await measure(`sluice-${r}`, runSluice));
      collectGarbage();
      lcRuns.push(await measure(`langchain-${r}`, runLangchain));
    }
    const median = <T extends { inputs_per_s: number }>(runs: T[]) =>
      [...runs].sort((a, b) => a.inputs_per_s - b.inputs_per_s)[Math.floor(runs.length / 2)];
    const lc = { ...median(lcRuns), all_runs_inputs_per_s: lcRuns.map((r) => r.inputs_per_s) };
    const ours = { ...median(ourRuns), all_runs_inputs_per_s: ourRuns.map((r) => r.inputs_per_s) };
    const ceiling = (sluice.concurrency * sluice.batchSize) / (LATENCY_MS / 1000);
    const ratio = ours.inputs_per_s / lc.inputs_per_s;
    const ofCeiling = ours.inputs_per_s / ceiling;
    return {
      setup: {
        inputs: INPUTS,
        latency_ms: LATENCY_MS,
        model: MODEL,
        dimensions: DIMENSIONS,
        sluice: {
          batch_size: sluice.batchSize,
          concurrency: sluice.concurrency,
          defaults: OPENAI_DEFAULTS.batchSize === sluice.batchSize && OPENAI_DEFAULTS.concurrency === sluice.concurrency,
        },
        langchain: { batchSize: langchain.batchSize, maxConcurrency: 2, note: '@langchain/openai OpenAIEmbeddings defaults' },
      },
      langchain: lc,
      sluice: ours,
      ratio_vs_langchain: +ratio.toFixed(2),
      ceiling_inputs_per_s: Math.round(ceiling),
      share_of_ceiling: +ofCeiling.toFixed(2),
      targets: { ratio_at_least_3x: ratio >= 3, at_least_80pct_of_ceiling: ofCeiling >= 0.8 },
      machine: {
        cpus: availableParallelism(),
        load_average_1m: +loadavg()[0].toFixed(2),
        note: 'wall-clock rates are only meaningful when load_average_1m is well below cpus',
      },
    };
  } finally {
    child.stdin!.end();
    await new Promise((r) => child.once('exit', r));
  }
}
