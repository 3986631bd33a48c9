// Documents Pinecone would refuse (a vector's metadata over 40 KB that cannot be fitted, a vector
// id over 512 bytes) are left out of the batch whole — nothing of them is sent, what was stored for
// them stays — and reported as REJECTED events: the engine fails the run naming the document, or
// keeps it as a dead letter (errors.tolerance: all) while the rest of the batch is written once.
import type { DestinationEvent, DestinationMessage } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';

/** Thrown while preparing one document's vectors: that document is refused, the batch goes on. */
export class RefusedDocument extends SluiceError {
  constructor(message: string, opts: { where: string; hint: string }) {
    super(message, { kind: 'destination', ...opts });
  }
}

type Doc = Extract<DestinationMessage, { type: 'DOCUMENT' }>;

/**
 * Runs `prepare` for one document; when it refuses the document, records the refusal and returns
 * false (the caller then writes and deletes nothing for it).
 */
export function prepareOrRefuse(doc: Doc, refused: Array<Extract<DestinationEvent, { type: 'REJECTED' }>>, prepare: () => void): boolean {
  try {
    prepare();
    return true;
  } catch (err) {
    if (!(err instanceof RefusedDocument)) throw err;
    refused.push({
      type: 'REJECTED',
      stream: doc.stream,
      documentId: doc.documentId,
      error: err.hint ? `${err.message} (${err.hint})` : err.message,
      record: doc.record,
    });
    return false;
  }
}
