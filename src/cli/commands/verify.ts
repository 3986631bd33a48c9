import type { Command } from 'commander';
import { DRIFT_DESCRIPTIONS, DRIFT_KINDS, verifyConnection, type VerifyReport } from '../../engine/verify.ts';
import { SluiceError } from '../../protocol/errors.ts';
import { ExitCode } from '../main.ts';
import { createLogger, printJson } from '../output.ts';
import { abortOnSignals, pipelineAndConnection } from './shared.ts';

export function register(program: Command) {
  program
    .command('verify')
    .description(
      'Compare the source with the destination (missing, deleted, stale, duplicate, orphaned chunks); --repair fixes what it finds',
    )
    .argument('<pipeline>', 'pipeline YAML file')
    .option('-c, --connection <name>', 'the connection (required when the file has several)')
    .option('--sample <n>', 'check N random source documents (and a bounded scan of stored chunks) instead of everything')
    .option('--repair', 'rewrite or delete exactly the documents found wrong (the saved state does not move)')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { connection?: string; sample?: string; repair?: boolean; json?: boolean }) => {
      let sample: number | undefined;
      if (opts.sample !== undefined) {
        sample = Number(opts.sample);
        if (!/^\d+$/.test(opts.sample.trim()) || !Number.isInteger(sample) || sample < 1)
          throw new SluiceError(`--sample must be a positive whole number, got "${opts.sample}"`, { kind: 'config' });
      }
      const { pipeline, conn } = await pipelineAndConnection(file, opts.connection);
      const logger = createLogger({ json: opts.json });
      const signals = abortOnSignals();
      let report: VerifyReport;
      try {
        report = await verifyConnection(pipeline, conn, { sample, repair: !!opts.repair, signal: signals.signal, logger });
      } finally {
        signals.dispose();
      }
      if (opts.json) printJson(report);
      else process.stdout.write(render(report));
      if (!report.clean) throw new ExitCode(1);
    });
}

function render(r: VerifyReport): string {
  const lines: string[] = [];
  lines.push(
    r.sample
      ? `connection ${r.connection}: checked a SAMPLE of ${r.sample.documents} random source documents (and up to ${r.sample.scanned_chunks_per_stream} stored chunks per stream), not everything`
      : `connection ${r.connection}: checked every source document and every stored chunk`,
  );
  for (const [stream, s] of Object.entries(r.streams)) {
    lines.push(`stream ${stream}: ${s.documents_checked} documents, ${s.chunks_checked} stored chunks checked`);
    for (const kind of DRIFT_KINDS) {
      const n = s.counts[kind];
      if (!n) continue;
      const examples = s.examples[kind] ?? [];
      lines.push(
        `  ${kind.padEnd(19)} ${String(n).padStart(6)}  ${DRIFT_DESCRIPTIONS[kind]}${examples.length ? `; e.g. ${examples.join(', ')}` : ''}`,
      );
    }
    const fixed = r.repair?.[stream];
    if (fixed && (fixed.documents_rewritten || fixed.documents_deleted))
      lines.push(
        `  repaired: ${fixed.documents_rewritten} documents rewritten, ${fixed.documents_deleted} deleted (${fixed.chunks_written} chunks written, ${fixed.chunks_deleted} removed)`,
      );
  }
  const total = DRIFT_KINDS.reduce((n, k) => n + r.totals[k], 0);
  if (r.clean) lines.push('clean: the destination matches the source');
  else if (r.repair) lines.push(`drift found (${total}) and repaired; run sluice verify again to confirm`);
  else lines.push(`drift found (${total}); run again with --repair to fix it`);
  return lines.join('\n') + '\n';
}
