// The conformance kit's source-digest checks: a source that honours ctx.storedDigests passes; one
// that drops digests, ignores skipping, emits accepted rows or offers another digest fails, saying
// which; a source without the capability gets them as not applicable, never as passed.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { defineSource, z, type Source } from 'sluice/cdk';
import { runSourceConformance, type ConformanceReport } from 'sluice/testing';
import type { DigestCheck } from '../../src/protocol/connector.ts';
import type { AirbyteMessage } from '../../src/protocol/messages.ts';
import { canonicalJson } from '../../src/protocol/identity.ts';

const items = Array.from({ length: 9 }, (_, i) => ({ id: i + 1, name: `item ${i + 1}` }));
const base = defineSource({
  spec: { name: 'items', config: z.strictObject({}) },
  streams: [
    {
      name: 'items',
      schema: z.object({ id: z.number().int(), name: z.string() }),
      primaryKey: 'id',
      async *read() {
        yield* items;
      },
    },
  ],
});

type Flaw = 'none' | 'no-digest' | 'ignores-skipping' | 'emits-accepted' | 'offers-other-digest';

/** The base source with digests (sha256 of the record), done right or with one flaw. */
function withDigests(flaw: Flaw): Source {
  return {
    ...base,
    capabilities: { ...base.capabilities, sourceDigests: true },
    async *read(config, catalog, state, ctx) {
      const checks = new Map<string, DigestCheck | undefined>();
      for await (const m of base.read(config, catalog, state, { ...ctx, storedDigests: undefined }) as AsyncIterable<AirbyteMessage>) {
        if (m.type !== 'RECORD' || !ctx.storedDigests) {
          yield m;
          continue;
        }
        const { stream, data } = m.record;
        if (!checks.has(stream)) checks.set(stream, await ctx.storedDigests.forStream(stream));
        const check = checks.get(stream);
        if (!check) {
          yield m;
          continue;
        }
        const digest = createHash('sha256').update(canonicalJson(data)).digest('hex');
        if (check.skipping && flaw !== 'ignores-skipping') {
          const unchanged = check.unchanged({ id: data.id }, flaw === 'offers-other-digest' ? digest.slice(1) : digest);
          if (unchanged && flaw !== 'emits-accepted') continue;
        }
        yield flaw === 'no-digest' ? m : { ...m, record: { ...m.record, digest } };
      }
    },
  };
}

const outcomes = (report: ConformanceReport) =>
  Object.fromEntries(report.checks.filter((c) => c.name.startsWith('digests.')).map((c) => [c.name, c]));

describe('conformance kit: source digests', () => {
  it('passes a source that honours them, and the rest of the kit still passes', async () => {
    const report = await runSourceConformance(withDigests('none'), { config: {} });
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    const o = outcomes(report);
    expect(Object.keys(o)).toEqual(['digests.records-carry-digests', 'digests.skip-rejected-only', 'digests.skip-all-unchanged']);
    for (const c of Object.values(o)) expect(c).toMatchObject({ ok: true });
    for (const c of Object.values(o)) expect(c.skipped || c.notApplicable).toBeFalsy();
    expect(o['digests.skip-rejected-only'].message).toBe('9 rows offered, 5 accepted, 4 emitted');
  });

  it('marks them not applicable for a source without the capability', async () => {
    const o = outcomes(await runSourceConformance(base, { config: {} }));
    for (const c of Object.values(o)) expect(c).toMatchObject({ ok: true, notApplicable: true });
  });

  it('fails a source whose records carry no digest', async () => {
    const o = outcomes(await runSourceConformance(withDigests('no-digest'), { config: {} }));
    expect(o['digests.records-carry-digests'].ok).toBe(false);
    expect(o['digests.records-carry-digests'].message).toMatch(/^items 1: RECORD without a digest of 1–128 characters/);
  });

  it('fails a source that reads everything although asked to skip', async () => {
    const o = outcomes(await runSourceConformance(withDigests('ignores-skipping'), { config: {} }));
    expect(o['digests.records-carry-digests'].ok).toBe(true);
    expect(o['digests.skip-all-unchanged'].ok).toBe(false);
    expect(o['digests.skip-all-unchanged'].message).toMatch(/^9 RECORD\(s\) although check.unchanged accepts every row \(first: items 1\)/);
  });

  it('fails a source that emits rows the check accepted', async () => {
    const o = outcomes(await runSourceConformance(withDigests('emits-accepted'), { config: {} }));
    expect(o['digests.skip-rejected-only'].ok).toBe(false);
    expect(o['digests.skip-rejected-only'].message).toMatch(/^items 1 was emitted although check.unchanged accepted it/);
    expect(o['digests.skip-all-unchanged'].ok).toBe(false);
  });

  it('fails a source that offers another digest than its records carry', async () => {
    const o = outcomes(await runSourceConformance(withDigests('offers-other-digest'), { config: {} }));
    expect(o['digests.skip-rejected-only'].ok).toBe(false);
    expect(o['digests.skip-rejected-only'].message).toMatch(
      /^items 1 was offered with digest \w+, but its RECORD carried \w+ in the read with digests/,
    );
  });
});
