// Record → chunks: pick the text, cut it, attach metadata. The engine turns the chunks into
// identities (documentId, chunk index, content hash) and embeddings.
import { ProcessingConfigSchema, type ProcessingConfig } from './config.ts';
import { textExtractor, metadataExtractor, textPartsExtractor, joinTextParts } from './extract.ts';
import { markdownSections, splitRecursive, type Measure } from './splitter.ts';
import { tokenizerFor } from './tokenizer.ts';

export { tokenizerFor, encodingForModel, type Tokenizer } from './tokenizer.ts';
export { valuesAtPath, valueToText } from './extract.ts';
export { splitRecursive, markdownSections } from './splitter.ts';

export interface ProcessedChunk {
  content: string;
  metadata: Record<string, unknown>;
}

/** A record's text input and chunk metadata, before chunking. */
export interface ExtractedText {
  text: string;
  metadata: Record<string, unknown>;
  /**
   * With text_fields: the fields' texts that have text (a non-whitespace character; none when the
   * document is empty), `text` being them joined by "\n\n" (TEXT_SEPARATOR). A
   * fingerprint is hashed from these, so the joined text is never made into one flat string for
   * a document that turns out unchanged.
   */
  parts?: readonly string[];
}

export interface TextProcessor {
  /** The record's chunks in order; [] when it has no text (the engine counts it as skipped). */
  process(record: Record<string, unknown>): ProcessedChunk[];
  /** The text and metadata `process` would cut into chunks, without cutting (cheap: for fingerprints). */
  extract(record: Record<string, unknown>): ExtractedText;
  /** `process` of an extraction: `chunk(extract(r))` equals `process(r)`. */
  chunk(extracted: ExtractedText): ProcessedChunk[];
  /**
   * Everything besides the text that decides the chunks (normalized settings, tokenizer, input
   * limit): equal settings and equal text give equal chunks. Not metadata_fields (see `extract`).
   */
  readonly settings: Record<string, unknown>;
}

export interface TextProcessorOptions {
  /** The embedder's input limit in its tokens: no chunk is longer (longer text is split further). */
  maxInputTokens?: number;
  /** Embedding model, to count tokens with its tokenizer. */
  model?: string;
}

const countCodePoints: Measure = (text) => {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0xdc00 || c > 0xdfff) n++; // a low surrogate completes a pair counted already
  }
  return n;
};

export function createTextProcessor(config: ProcessingConfig | undefined, opts: TextProcessorOptions = {}): TextProcessor {
  const cfg = ProcessingConfigSchema.parse(config ?? {});
  const tokenizer = tokenizerFor(opts.model);
  const countTokens: Measure = (text) => tokenizer.count(text);
  const maxInputTokens = opts.maxInputTokens ?? Number.POSITIVE_INFINITY;
  const extractText = textExtractor({ textFields: cfg.text_fields, textTemplate: cfg.text_template });
  const extractMetadata = metadataExtractor(cfg.metadata_fields);

  const byTokens = cfg.chunk_unit === 'tokens';
  const chunkSize = byTokens ? Math.min(cfg.chunk_size, maxInputTokens) : cfg.chunk_size;
  const splitOptions = {
    chunkSize,
    chunkOverlap: Math.min(cfg.chunk_overlap, chunkSize - 1),
    measure: byTokens ? countTokens : countCodePoints,
    additive: !byTokens,
  };

  /** The embedder's hard limit: split further, never truncate. */
  const enforceInputLimit = (chunks: string[]): string[] => {
    if (!Number.isFinite(maxInputTokens) || (byTokens && cfg.splitter !== 'none')) return chunks;
    return chunks.flatMap((chunk) =>
      // A token is at least one UTF-8 byte, so short text cannot be over the limit.
      Buffer.byteLength(chunk) <= maxInputTokens || countTokens(chunk) <= maxInputTokens
        ? [chunk]
        : splitRecursive(chunk, { chunkSize: maxInputTokens, chunkOverlap: 0, measure: countTokens }),
    );
  };

  const chunk = ({ text, metadata }: ExtractedText): ProcessedChunk[] => {
    if (!text || !text.trim()) return [];
    if (cfg.splitter === 'none') {
      return enforceInputLimit([text.trim()]).map((content) => ({ content, metadata: { ...metadata } }));
    }
    if (cfg.splitter === 'markdown') {
      return markdownSections(text).flatMap((section) =>
        enforceInputLimit(splitRecursive(section.text, splitOptions)).map((content) => ({
          content,
          metadata: { ...metadata, headings: section.headings },
        })),
      );
    }
    return enforceInputLimit(splitRecursive(text, splitOptions)).map((content) => ({ content, metadata: { ...metadata } }));
  };
  // Parts where text_fields make the text (text_template and the default give one text).
  const extractParts = cfg.text_fields && cfg.text_template === undefined ? textPartsExtractor(cfg.text_fields) : undefined;
  const extract = (record: Record<string, unknown>): ExtractedText => {
    if (!extractParts) return { text: extractText(record), metadata: extractMetadata(record) };
    const parts = extractParts(record);
    return { text: joinTextParts(parts), metadata: extractMetadata(record), parts };
  };

  return {
    process: (record) => chunk(extract(record)),
    extract,
    chunk,
    settings: {
      text_fields: cfg.text_fields ?? null,
      text_template: cfg.text_template ?? null,
      chunk_size: cfg.chunk_size,
      chunk_overlap: cfg.chunk_overlap,
      chunk_unit: cfg.chunk_unit,
      splitter: cfg.splitter,
      tokenizer: tokenizer.encoding,
      max_input_tokens: Number.isFinite(maxInputTokens) ? maxInputTokens : null,
    },
  };
}
