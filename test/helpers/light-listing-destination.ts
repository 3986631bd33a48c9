// fingerprint-destination.ts with `capabilities.sourceDigests` and the light listing
// (Destination.documentSources), for engine tests of how the sweep lists a stream read with
// digests. Every listing it serves is logged to `<path>.listings` ("light <stream>" or
// "whole <stream>", one line each); look-ups go to `<path>.lookups` as in fingerprint-destination.ts.
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Destination, StoredSource } from 'sluice/cdk';
import store from './fingerprint-destination.ts';

type Config = { path: string; fingerprints: boolean };

export function readListings(file: string): string[] {
  const log = `${file}.listings`;
  return existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean) : [];
}

const destination: Destination<Config> = {
  ...store,
  spec: { ...store.spec, name: 'light-listing-store' },
  capabilities: { ...store.capabilities, sourceDigests: true },
  async *documents(config, ctx, stream) {
    appendFileSync(`${resolve(ctx.baseDir, config.path)}.listings`, `whole ${stream}\n`);
    yield* store.documents!(config, ctx, stream);
  },
  async *documentSources(config, ctx, stream) {
    appendFileSync(`${resolve(ctx.baseDir, config.path)}.listings`, `light ${stream}\n`);
    let page: StoredSource[] = [];
    for await (const d of store.documents!(config, ctx, stream)) {
      page.push(d.fingerprint?.source ? { documentId: d.documentId, source: d.fingerprint.source } : { documentId: d.documentId });
      if (page.length === 7) {
        yield page;
        page = [];
      }
    }
    if (page.length) yield page;
  },
};
export default destination;
