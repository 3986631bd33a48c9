// digest-source.ts without `capabilities.sourceDigests`: the engine must never offer it ctx.storedDigests.
import source from './digest-source.ts';

const { sourceDigests: _, ...capabilities } = source.capabilities;
export default { ...source, capabilities };
