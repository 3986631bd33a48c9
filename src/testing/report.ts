// Conformance reports: named checks, each passed, failed (with what exactly is wrong) or skipped.
export interface CheckOutcome {
  name: string;
  ok: boolean;
  skipped?: boolean;
  message?: string;
}

export interface ConformanceReport {
  connector: string;
  kind: 'source' | 'destination';
  ok: boolean;
  checks: CheckOutcome[];
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
  /** Pass when there are no problems, else fail listing the first few. */
  result(name: string, problems: string[], passMessage?: string): void {
    if (problems.length === 0) this.pass(name, passMessage);
    else this.fail(name, problems.slice(0, 5).join('\n') + (problems.length > 5 ? `\n(+${problems.length - 5} more)` : ''));
  }
  build(): ConformanceReport {
    return { connector: this.connector, kind: this.kind, ok: this.checks.every((c) => c.ok), checks: this.checks };
  }
}

export function formatReport(report: ConformanceReport): string {
  const lines = [`${report.kind} ${report.connector}: ${report.ok ? 'PASSED' : 'FAILED'}`];
  for (const c of report.checks) {
    const mark = c.skipped ? '-' : c.ok ? '✓' : '✗';
    const msg = c.message ? (c.skipped ? ` (skipped: ${c.message})` : `: ${c.message.replace(/\n/g, '\n      ')}`) : '';
    lines.push(`  ${mark} ${c.name}${msg}`);
  }
  const failed = report.checks.filter((c) => !c.ok).length;
  lines.push(`  ${report.checks.length - failed} of ${report.checks.length} checks passed`);
  return lines.join('\n');
}
