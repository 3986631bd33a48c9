// Module hook used only in a checkout of the repository (see sluice.js): resolves package exports
// with the "sluice-source" condition, so `sluice/cdk` maps to src/ instead of the build.
export async function resolve(specifier, context, nextResolve) {
  return nextResolve(specifier, { ...context, conditions: ['sluice-source', ...context.conditions] });
}
