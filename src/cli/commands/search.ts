import type { Command } from 'commander';
import { connectorContext, embedderFor } from '../../engine/sync.ts';
import { closest } from '../../config/suggest.ts';
import { SluiceError } from '../../protocol/errors.ts';
import { createLogger, printJson } from '../output.ts';
import { pipelineAndConnection } from './shared.ts';

export function register(program: Command) {
  program
    .command('search')
    .description("Embed a query with the connection's embedder and print the nearest chunks")
    .argument('<pipeline>', 'pipeline YAML file')
    .argument('<text>', 'the query')
    .option('-c, --connection <name>', 'the connection (required when the file has several)')
    .option('-k, --top-k <n>', 'how many chunks', '5')
    .option('-s, --stream <name...>', 'only these streams (default: all of the connection)')
    .option('--json', 'print JSON')
    .action(async (file: string, text: string, opts: { connection?: string; topK: string; stream?: string[]; json?: boolean }) => {
      const { pipeline, conn } = await pipelineAndConnection(file, opts.connection);
      if (!text.trim())
        throw new SluiceError('the search query is empty', {
          kind: 'config',
          hint: 'pass the text to search for, e.g. sluice search <pipeline> "refund policy"',
        });
      const topK = Number(opts.topK);
      if (!Number.isInteger(topK) || topK < 1)
        throw new SluiceError(`--top-k must be a positive whole number, got "${opts.topK}"`, { kind: 'config' });
      const dest = conn.destination;
      if (!dest.search) {
        throw new SluiceError(`destination "${conn.config.destination.type}" does not support search`, {
          kind: 'config',
          hint: 'search works on vector destinations: pgvector, qdrant, pinecone',
        });
      }
      const logger = createLogger({ json: opts.json });
      const embedder = embedderFor(conn, logger);
      if (!embedder)
        throw new SluiceError(`connection ${conn.config.name} has no embedding block to embed the query with`, { kind: 'config' });
      const ctx = await connectorContext(pipeline, conn, { signal: new AbortController().signal, logger });
      const known =
        conn.config.streams?.map((s) => s.name) ?? (await conn.source.discover(conn.sourceConfig, ctx)).streams.map((s) => s.name);
      // A stream the connection does not have is a typo, whatever table the destination would look in.
      const unknown = (opts.stream ?? []).filter((s) => !known.includes(s));
      if (unknown.length) {
        const guess = closest(unknown[0], known);
        throw new SluiceError(`connection ${conn.config.name} has no stream ${unknown.map((s) => `"${s}"`).join(', ')}`, {
          kind: 'config',
          hint: `${guess ? `did you mean "${guess}"? ` : ''}streams: ${known.join(', ') || '(none)'}`,
        });
      }
      const streams = opts.stream ?? known;
      const { vectors } = await embedder.embed([text]);
      if (!vectors[0]?.some((x) => x !== 0))
        throw new SluiceError(`the embedder made an all-zero vector of the query "${text}", so no distance to it means anything`, {
          kind: 'config',
          hint: 'search for words (the hash embedder ignores punctuation)',
        });
      const hits = await dest.search(conn.destinationConfig, ctx, { vector: vectors[0], topK, streams });
      await embedder.close?.();
      if (opts.json) {
        printJson({ query: text, connection: conn.config.name, hits });
        return;
      }
      if (!hits.length) process.stdout.write('no results (has the connection been synced?)\n');
      for (const [i, h] of hits.entries()) {
        const snippet = h.content.replace(/\s+/g, ' ').slice(0, 160);
        process.stdout.write(
          `${i + 1}. ${h.score.toFixed(4)}  ${h.stream}/${h.documentId} #${h.chunkIndex}\n   ${snippet}${h.content.length > 160 ? '…' : ''}\n`,
        );
      }
    });
}
