// Conformance reports: named checks, each passed, failed (with what exactly is wrong) or skipped.
export interface CheckOutcome {
  name: string;
  ok: boolean;
  /** The check could not run for lack of something the kit needs (read-back, a parsing config…). */
  skipped?: boolean;
  /** The check does not apply to what the connector declares (e.g. overwrite it does not support). */
  notApplicable?: boolean;
  message?: string;
}

export interface ConformanceReport {
  connector: string;
  kind: 'source' | 'destination';
  /** No check failed (skipped ones are not failures; see `strictOk`). */
  ok: boolean;
  passed: number;
  failed: number;
  skipped: number;
  notApplicable: number;
  checks: CheckOutcome[];
}

/** Strict mode (`--strict`, the default in CI): a skipped check fails the run too. */
export function strictOk(report: ConformanceReport): boolean {
  return report.ok && report.skipped === 0;
}

export class ReportBuilder {
  readonly checks: CheckOutcome[] = [];
  constructor(
    readonly connector: string,
    readonly kind: 'source' | 'destination',
  ) {}
  pass(name: string, message?: string): void {
    this.checks.push({ name, ok: true, ...(message ? { message } : {}) });
  }
  fail(name: string, message: string): void {
    this.checks.push({ name, ok: false, message });
  }
  skip(name: string, why: string): void {
    this.checks.push({ name, ok: true, skipped: true, message: why });
  }
  notApplicable(name: string, why: string): void {
    this.checks.push({ name, ok: true, notApplicable: true, message: why });
  }
  /** Pass when there are no problems, else fail listing the first few. */
  result(name: string, problems: string[], passMessage?: string): void {
    if (problems.length === 0) this.pass(name, passMessage);
    else this.fail(name, problems.slice(0, 5).join('\n') + (problems.length > 5 ? `\n(+${problems.length - 5} more)` : ''));
  }
  build(): ConformanceReport {
    const skipped = this.checks.filter((c) => c.skipped).length;
    const failed = this.checks.filter((c) => !c.ok).length;
    const notApplicable = this.checks.filter((c) => c.notApplicable).length;
    return {
      connector: this.connector,
      kind: this.kind,
      ok: failed === 0,
      passed: this.checks.length - failed - skipped - notApplicable,
      failed,
      skipped,
      notApplicable,
      checks: this.checks,
    };
  }
}

export function formatReport(report: ConformanceReport, opts: { strict?: boolean } = {}): string {
  const ok = opts.strict ? strictOk(report) : report.ok;
  const lines = [`${report.kind} ${report.connector}: ${ok ? 'PASSED' : 'FAILED'}`];
  for (const c of report.checks) {
    const mark = c.skipped ? '-' : c.notApplicable ? '·' : c.ok ? '✓' : '✗';
    const msg = c.message
      ? c.skipped
        ? ` (skipped: ${c.message})`
        : c.notApplicable
          ? ` (not applicable: ${c.message})`
          : `: ${c.message.replace(/\n/g, '\n      ')}`
      : '';
    lines.push(`  ${mark} ${c.name}${msg}`);
  }
  const na = report.notApplicable ? `, ${report.notApplicable} not applicable` : '';
  lines.push(`  ${report.passed} passed, ${report.failed} failed, ${report.skipped} skipped${na} (${report.checks.length} checks)`);
  if (opts.strict && report.skipped) lines.push('  strict mode: a skipped check is a failure (pass --no-strict to allow skips)');
  return lines.join('\n');
}
