import { describe, expect, it } from 'vitest';
import { packRequests } from '../../src/embedding/pack.ts';
import { OPENAI_LIMITS } from '../../src/embedding/models.ts';
import { mulberry32 as rng } from '../helpers/random.ts';

describe('request packing (property test over random sizes)', () => {
  it('never exceeds the input or token limits, keeps order, covers every input once, and packs tightly', () => {
    const random = rng(7);
    for (let run = 0; run < 400; run++) {
      // Mix regimes: many tiny inputs (input-count bound), huge inputs (token bound), and small custom limits.
      const regime = run % 4;
      const limits =
        regime === 3
          ? {
              maxInputsPerRequest: 1 + Math.floor(random() * 20),
              maxTokensPerRequest: 50 + Math.floor(random() * 500),
              maxTokensPerInput: 50,
            }
          : { ...OPENAI_LIMITS };
      const n = Math.floor(random() * (regime === 0 ? 9000 : 600));
      const maxSize = regime === 0 ? 40 : regime === 1 ? limits.maxTokensPerInput : regime === 2 ? 2000 : limits.maxTokensPerInput;
      const sizes = Array.from({ length: n }, () => 1 + Math.floor(random() * maxSize));
      const packed = packRequests(sizes, limits);
      if (!('ranges' in packed)) throw new Error('unexpected tooLong');
      let next = 0;
      for (const [start, end] of packed.ranges) {
        expect(start).toBe(next);
        expect(end).toBeGreaterThan(start);
        expect(end - start).toBeLessThanOrEqual(limits.maxInputsPerRequest);
        const tokens = sizes.slice(start, end).reduce((a, b) => a + b, 0);
        expect(tokens).toBeLessThanOrEqual(limits.maxTokensPerRequest);
        // Greedy: the next input would not have fitted.
        if (end < n) {
          expect(end - start === limits.maxInputsPerRequest || tokens + sizes[end] > limits.maxTokensPerRequest).toBe(true);
        }
        next = end;
      }
      expect(next).toBe(n);
    }
  });

  it('reports the first input over the per-input limit instead of truncating it', () => {
    expect(packRequests([10, 8191, 8192, 5], OPENAI_LIMITS)).toEqual({ tooLong: 2 });
    expect(packRequests([], OPENAI_LIMITS)).toEqual({ ranges: [] });
  });
});
