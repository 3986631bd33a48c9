// Vitest wrappers: one test per conformance check, so CI shows exactly which promise broke.
import { beforeAll, describe, expect, it } from 'vitest';
import type { Destination, Source } from '../protocol/connector.ts';
import { DESTINATION_CHECKS, runDestinationConformance, type DestinationConformanceOptions } from './destination.ts';
import type { ConformanceReport } from './report.ts';
import { SOURCE_CHECKS, runSourceConformance, type SourceConformanceOptions } from './source.ts';

type Lazy<T> = T | (() => T | Promise<T>);
const resolveLazy = async <T>(v: Lazy<T>): Promise<T> => (typeof v === 'function' ? await (v as () => T | Promise<T>)() : v);

function describeChecks(title: string, names: readonly string[], run: () => Promise<ConformanceReport>): void {
  describe(title, () => {
    let report: ConformanceReport;
    beforeAll(async () => {
      report = await run();
    });
    for (const name of names) {
      it(name, (ctx) => {
        const outcome = report.checks.find((c) => c.name === name);
        expect(outcome, `check ${name} did not run`).toBeDefined();
        // A check that could not run, or does not apply, shows as skipped with the reason, not as a pass.
        if (outcome!.skipped || outcome!.notApplicable) ctx.skip(outcome!.message);
        expect(outcome!.ok, `${name}: ${outcome!.message ?? ''}`).toBe(true);
      });
    }
  });
}

/**
 * `describeSourceConformance('my-api', () => ({ source, config: {...} }))` — the options may be a
 * function so servers started in beforeAll are ready when it runs.
 */
export function describeSourceConformance(title: string, options: Lazy<SourceConformanceOptions & { source: Source }>): void {
  describeChecks(`${title} conforms to the source contract`, SOURCE_CHECKS, async () => {
    const o = await resolveLazy(options);
    return runSourceConformance(o.source, o);
  });
}

export function describeDestinationConformance(
  title: string,
  options: Lazy<DestinationConformanceOptions & { destination: Destination }>,
): void {
  describeChecks(`${title} conforms to the destination contract`, DESTINATION_CHECKS, async () => {
    const o = await resolveLazy(options);
    return runDestinationConformance(o.destination, o);
  });
}
