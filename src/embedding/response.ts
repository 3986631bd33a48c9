// Reading /v1/embeddings responses. They are big (512 vectors × 1536 floats ≈ 4 MB of base64), and
// JSON.parse of the whole body is the largest CPU cost of a request. The fast path scans the bytes
// for the few keys it needs and hands out each base64 string without building the full text or
// object tree; anything it does not recognise (float arrays, escapes, odd shapes) falls back to
// JSON.parse, so correctness never depends on the fast path.

export interface ParsedEmbeddingResponse {
  /** Embeddings in input order: base64 strings or float arrays. */
  embeddings: unknown[];
  /** usage.prompt_tokens, when the server reports it. */
  promptTokens?: number;
}

const KEY_EMBEDDING = Buffer.from('"embedding"', 'latin1');
const KEY_INDEX = Buffer.from('"index"', 'latin1');
const KEY_PROMPT_TOKENS = Buffer.from('"prompt_tokens"', 'latin1');
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/** Position of the value after `"key"` at `keyEnd` (skipping `:` and whitespace), or -1 if this was not a key. */
function valueAfterKey(body: Buffer, keyEnd: number): number {
  let i = keyEnd;
  while (i < body.length && isSpace(body[i])) i++;
  if (body[i] !== COLON) return -1;
  i++;
  while (i < body.length && isSpace(body[i])) i++;
  return i;
}

function readInteger(body: Buffer, at: number): number | undefined {
  let n = 0;
  let i = at;
  while (i < body.length && body[i] >= 0x30 && body[i] <= 0x39) n = n * 10 + (body[i++] - 0x30);
  return i === at ? undefined : n;
}

/** Every value of `"key"` as a key (not as a string value), read by `read`; undefined if one is unreadable. */
function scanKey<T>(body: Buffer, key: Buffer, read: (at: number) => { value: T; end: number } | undefined): T[] | undefined {
  const out: T[] = [];
  let pos = 0;
  for (;;) {
    const found = body.indexOf(key, pos);
    if (found < 0) return out;
    const at = valueAfterKey(body, found + key.length);
    if (at < 0) {
      pos = found + 1; // e.g. "object": "embedding" — a value, not a key
      continue;
    }
    const item = read(at);
    if (!item) return undefined;
    out.push(item.value);
    pos = item.end;
  }
}

function fastParse(body: Buffer): ParsedEmbeddingResponse | undefined {
  // Any escape anywhere (e.g. "\/" from encoders that escape slashes) is left to JSON.parse.
  if (body.indexOf(BACKSLASH) >= 0) return undefined;
  const embeddings = scanKey(body, KEY_EMBEDDING, (at) => {
    if (body[at] !== QUOTE) return undefined; // float array: not for the fast path
    const end = body.indexOf(QUOTE, at + 1);
    if (end < 0) return undefined;
    return { value: body.toString('latin1', at + 1, end), end: end + 1 };
  });
  if (!embeddings?.length) return undefined;
  const indexes = scanKey(body, KEY_INDEX, (at) => {
    const value = readInteger(body, at);
    return value === undefined ? undefined : { value, end: at + 1 };
  });
  // Each item has one index and one embedding, so document order pairs them.
  if (!indexes || indexes.length !== embeddings.length) return undefined;
  const ordered: unknown[] = new Array(embeddings.length);
  for (let i = 0; i < indexes.length; i++) {
    const index = indexes[i];
    if (index >= ordered.length || ordered[index] !== undefined) return undefined;
    ordered[index] = embeddings[i];
  }
  // usage comes after data: search from the end instead of scanning every vector again.
  const usageKey = body.lastIndexOf(KEY_PROMPT_TOKENS);
  const usageAt = usageKey < 0 ? -1 : valueAfterKey(body, usageKey + KEY_PROMPT_TOKENS.length);
  return { embeddings: ordered, promptTokens: usageAt < 0 ? undefined : readInteger(body, usageAt) };
}

export function parseEmbeddingResponse(body: Buffer): ParsedEmbeddingResponse {
  const fast = fastParse(body);
  if (fast) return fast;
  // latin1: the JSON is ASCII; a stray non-ASCII byte (say, in the model name) cannot break its structure.
  const parsed = JSON.parse(body.toString('latin1')) as {
    data?: Array<{ index: number; embedding: unknown }>;
    usage?: { prompt_tokens?: number };
  };
  if (!Array.isArray(parsed.data)) throw new Error('the response has no "data" list of embeddings');
  const data = [...parsed.data].sort((a, b) => a.index - b.index);
  return { embeddings: data.map((d) => d.embedding), promptTokens: parsed.usage?.prompt_tokens };
}
