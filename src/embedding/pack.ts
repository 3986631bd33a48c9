// Request packing: consecutive inputs grouped so that every request respects all of the
// provider's limits at once (inputs per request, tokens per request, tokens per input).

export interface PackLimits {
  maxInputsPerRequest: number;
  maxTokensPerRequest: number;
  maxTokensPerInput: number;
}

/**
 * Splits inputs with the given token sizes into contiguous [start, end) ranges, in order.
 * Returns the index of the first input over the per-input limit instead, if any: such an input
 * has to be split before it reaches the embedder (silently truncating it would lose text).
 */
export function packRequests(sizes: readonly number[], limits: PackLimits): { ranges: Array<[number, number]> } | { tooLong: number } {
  const maxInputs = Math.max(1, Math.min(limits.maxInputsPerRequest, 2048));
  const ranges: Array<[number, number]> = [];
  let start = 0;
  let tokens = 0;
  for (let i = 0; i < sizes.length; i++) {
    const size = sizes[i];
    if (size > limits.maxTokensPerInput) return { tooLong: i };
    if (i > start && (i - start >= maxInputs || tokens + size > limits.maxTokensPerRequest)) {
      ranges.push([start, i]);
      start = i;
      tokens = 0;
    }
    tokens += size;
  }
  if (sizes.length > start) ranges.push([start, sizes.length]);
  return { ranges };
}
