// Document fingerprints (docs/fingerprints.md): what produced a document's stored chunks, so a
// document that did not change is neither chunked, embedded nor written again.
import type { Embedder } from '../embedding/types.ts';
import type { DocumentFingerprint } from '../protocol/connector.ts';
import { sha256 } from '../protocol/identity.ts';
import type { ExtractedText, TextProcessor } from '../text/index.ts';

/** Bumped whenever what goes into a fingerprint changes: every stored document then counts as changed once. */
export const FINGERPRINT_VERSION = 1;

/**
 * Computes fingerprints for one connection. The settings part (processing settings, embedder
 * identity) is serialized once; per document only the text and the metadata are hashed.
 */
export class Fingerprinter {
  private readonly head: string;
  private readonly tail: string;
  /** `provider/model/dimensions`, stored beside the fingerprint (DocumentFingerprint.embedder). */
  readonly embedder: string;

  constructor(processor: Pick<TextProcessor, 'settings'>, embedder: Pick<Embedder, 'provider' | 'model' | 'dimensions'> | undefined) {
    // The canonical JSON {"embedder":…,"processing":…,"text":…,"version":…} (keys sorted), with the
    // fixed parts serialized once rather than once per document.
    const embedderIdentity = embedder ? { provider: embedder.provider, model: embedder.model, dimensions: embedder.dimensions } : null;
    this.head = `{"embedder":${stableJson(embedderIdentity)},"processing":${stableJson(processor.settings)},"text":`;
    this.tail = `,"version":${FINGERPRINT_VERSION}}`;
    this.embedder = embedderTag(embedder);
  }

  /** Equal content ⇒ identical chunks and vectors; equal metadata ⇒ identical chunk metadata. */
  of(extracted: ExtractedText): DocumentFingerprint {
    const metadata = stableJson(extracted.metadata);
    // Consecutive documents often share their metadata (none at all, or the same few tags).
    if (metadata !== this.lastMetadata) this.lastMetadataHash = sha256((this.lastMetadata = metadata));
    return {
      // One-shot hash of the joined string: a Hash object per document (update, digest) costs more.
      content: sha256(this.head + JSON.stringify(extracted.text) + this.tail),
      metadata: this.lastMetadataHash,
      embedder: this.embedder,
    };
  }

  private lastMetadata: string | undefined;
  private lastMetadataHash = '';
}

/** The embedder tag stored with each fingerprint: `provider/model/dimensions`, or `none`. */
export function embedderTag(embedder: Pick<Embedder, 'provider' | 'model' | 'dimensions'> | undefined): string {
  return embedder ? `${embedder.provider}/${embedder.model}/${embedder.dimensions}` : 'none';
}

/**
 * JSON with sorted keys, values as destinations store them (JSON.stringify semantics: a Date is its
 * ISO string, undefined members are left out), bigints as decimal text.
 */
export function stableJson(value: unknown): string {
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function')
    value = (value as { toJSON(): unknown }).toJSON();
  if (typeof value === 'bigint') return JSON.stringify(String(value));
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return 'null';
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  return `{${Object.keys(obj)
    .sort()
    .filter((k) => obj[k] !== undefined && typeof obj[k] !== 'function')
    .map((k) => `${JSON.stringify(k)}:${stableJson(obj[k])}`)
    .join(',')}}`;
}

export const sameFingerprint = (a: DocumentFingerprint, b: DocumentFingerprint) => a.content === b.content && a.metadata === b.metadata;
