// The Pinecone client, wrapped: one place for retries (429/5xx/timeouts, via src/net/retry.ts),
// readable errors, index resolution (name or host) and the generation pointers used by overwrite.
import { Pinecone, type Index, type PineconeRecord } from '@pinecone-database/pinecone';
import type { ConnectorContext, IndexIdentity } from '../../src/protocol/connector.ts';
import { canonicalJson, sha256 } from '../../src/protocol/identity.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { httpStatus, isRetryableError, retry } from '../../src/net/retry.ts';
import type { Metric, PineconeConfig } from './config.ts';
import { FP_CONTENT, type PineconeMetadata } from './metadata.ts';

export const MAX_IDS_PER_DELETE = 1000;
export const MAX_VECTORS_PER_UPSERT = 1000;
export const MAX_ID_BYTES = 512;
/** Pinecone's documented limit of ids per fetch. */
export const MAX_IDS_PER_FETCH = 1000;
/**
 * Fetch is a GET with every id in the query string. HTTP servers and proxies cap the request head
 * (Node's default and many proxies: 16 KiB), so the ids' query string is kept under 15,000 bytes,
 * leaving room for the path and headers: 1,000 ids fit in one fetch while they are short (about 10
 * bytes URL-encoded, e.g. numeric keys); longer ids take more fetches.
 */
export const MAX_FETCH_QUERY_BYTES = 15_000;

/** Splits ids into the fewest fetch requests Pinecone's limits allow (id count and URL length), in order. */
export function fetchGroups(ids: string[]): string[][] {
  const groups: string[][] = [];
  let group: string[] = [];
  let bytes = 0;
  for (const id of ids) {
    const size = 5 + Buffer.byteLength(encodeURIComponent(id), 'utf8'); // `ids=` … `&`
    if (group.length && (group.length >= MAX_IDS_PER_FETCH || bytes + size > MAX_FETCH_QUERY_BYTES)) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(id);
    bytes += size;
  }
  if (group.length) groups.push(group);
  return groups;
}
/** Namespace holding one small "pointer" record per logical namespace: which generation is current. */
export const POINTER_NAMESPACE = '__sluice_generations';

export interface ResolvedIndex {
  /** Index name when known (resolved through the control plane). */
  name?: string;
  /** Data-plane base URL. */
  hostUrl: string;
  dimension: number;
  metric?: Metric;
}

export interface GenerationPointer {
  /** Physical namespace readers should query. */
  current: string;
  /**
   * The highest generation number ever allocated for this logical namespace (not necessarily
   * `current`'s: a rollback switches back to a lower one), so a new generation never reuses the
   * namespace of a kept one.
   */
  generation: number;
  /** Replaced generations still to be removed: removed after the switch, again on the next overwrite or reindex if that failed. */
  previous?: string[];
  /** `sluice reindex --keep-previous`: the replaced generation, kept for `--rollback`. */
  kept?: string;
  /** Which index identity (embedder and processing settings, see identityTag) built `current`, and `kept`. */
  identity?: string;
  keptIdentity?: string;
  /** Human name of the embedder of `current`, and of `kept` (for applications and people reading the pointer). */
  embedder?: string;
  keptEmbedder?: string;
}

/** A non-2xx answer, captured in our fetch so status and Retry-After survive the client's wrapping. */
class PineconeHttpFailure extends Error {
  constructor(
    readonly httpStatusCode: number,
    readonly responseHeaders: Headers,
    readonly serverMessage: string,
  ) {
    super(`HTTP ${httpStatusCode}: ${serverMessage}`);
  }
}

/** What retry.ts understands: `status` and `headers`. */
class PineconeStatusError extends Error {
  constructor(
    readonly status: number,
    readonly headers: Headers,
    readonly serverMessage: string,
  ) {
    super(serverMessage);
  }
}

export class PineconeStore {
  readonly client: Pinecone;
  readonly index: ResolvedIndex;
  private readonly config: PineconeConfig;
  private readonly ctx: ConnectorContext;
  private readonly namespaces = new Map<string, Index>();
  /** Requests retried so far (for logs and tests). */
  retries = 0;

  private constructor(config: PineconeConfig, ctx: ConnectorContext, client: Pinecone, index: ResolvedIndex) {
    this.config = config;
    this.ctx = ctx;
    this.client = client;
    this.index = index;
  }

  /** Connects and describes the index (dimension, metric): credentials and index are checked here. */
  static async connect(config: PineconeConfig, ctx: ConnectorContext): Promise<PineconeStore> {
    const timeoutMs = config.request_timeout_seconds * 1000;
    const fetchApi = async (url: string | URL | Request, init?: RequestInit): Promise<Response> => {
      const timeout = AbortSignal.timeout(timeoutMs);
      const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
      const res = await fetch(url, { ...init, signal });
      if (res.ok) return res;
      const text = await res.text().catch(() => '');
      throw new PineconeHttpFailure(res.status, res.headers, serverMessage(text) || res.statusText);
    };
    const client = new Pinecone({
      apiKey: config.api_key,
      ...(config.controller_host ? { controllerHostUrl: config.controller_host } : {}),
      // Retries are ours (429 included, Retry-After honoured); the client's own would hide statuses.
      maxRetries: 0,
      fetchApi: fetchApi as never,
      sourceTag: 'sluice',
    });
    const partial = new PineconeStore(config, ctx, client, { hostUrl: '', dimension: 0 });
    const index = await partial.resolveIndex();
    return new PineconeStore(config, ctx, client, index);
  }

  private async resolveIndex(): Promise<ResolvedIndex> {
    const target = this.config.index;
    // Index names are lower-case letters, digits and '-'; anything else is a host.
    if (!/^[a-z0-9-]+$/.test(target)) {
      const hostUrl = withScheme(target, this.config.controller_host);
      const stats = await this.call(`describe index at ${target}`, () => this.client.index({ host: hostUrl }).describeIndexStats(), {
        hostUrl,
      });
      if (!stats.dimension) {
        throw new SluiceError(`Pinecone index at ${target} did not report its dimension`, {
          kind: 'destination',
          hint: 'give the index name instead of its host',
        });
      }
      return { hostUrl, dimension: stats.dimension, metric: this.config.metric };
    }
    const model = await this.call(`describe index "${target}"`, () => this.client.describeIndex(target));
    if (model.vectorType && model.vectorType !== 'dense') {
      throw new SluiceError(`Pinecone index "${target}" is a ${model.vectorType} index; sluice writes dense vectors`, {
        kind: 'config',
        hint: 'use a dense index',
      });
    }
    if (!model.status?.ready) {
      throw new SluiceError(`Pinecone index "${target}" is not ready (state ${model.status?.state ?? 'unknown'})`, {
        kind: 'destination',
        transient: true,
        hint: 'wait until the index is Ready, then run again',
      });
    }
    if (!model.dimension)
      throw new SluiceError(`Pinecone index "${target}" has no dimension`, { kind: 'config', hint: 'use a dense index with a dimension' });
    return {
      name: target,
      hostUrl: withScheme(model.host, this.config.controller_host),
      dimension: model.dimension,
      metric: model.metric as Metric,
    };
  }

  ns(namespace: string): Index {
    let idx = this.namespaces.get(namespace);
    if (!idx) {
      idx = this.client.index({ host: this.index.hostUrl }).namespace(namespace);
      this.namespaces.set(namespace, idx);
    }
    return idx;
  }

  async upsert(namespace: string, records: PineconeRecord[]): Promise<void> {
    await this.call(`upsert of ${records.length} vectors into namespace "${namespace}"`, () =>
      this.ns(namespace).upsert({ records: records as PineconeRecord<PineconeMetadata>[] }),
    );
  }

  async deleteIds(namespace: string, ids: string[]): Promise<void> {
    if (ids.length > MAX_IDS_PER_DELETE) throw new Error(`internal: delete of ${ids.length} ids exceeds ${MAX_IDS_PER_DELETE}`);
    await this.call(`delete of ${ids.length} vectors from namespace "${namespace}"`, () => this.ns(namespace).deleteMany({ ids }), {
      notFoundOk: true,
    });
  }

  /** Removes every vector of a namespace; a namespace that does not exist is fine. */
  async deleteNamespaceContents(namespace: string): Promise<void> {
    await this.call(`delete of namespace "${namespace}"`, () => this.ns(namespace).deleteAll(), { notFoundOk: true });
  }

  /** Vector ids starting with `prefix`, page by page (list is for serverless indexes). */
  async *listIds(namespace: string, prefix: string): AsyncIterable<string[]> {
    let token: string | undefined;
    do {
      const page = await this.call(`list of ids "${prefix}*" in namespace "${namespace}"`, () =>
        this.ns(namespace).listPaginated({ prefix, limit: 100, ...(token ? { paginationToken: token } : {}) }),
      );
      const ids = (page.vectors ?? []).map((v) => v.id).filter((id): id is string => typeof id === 'string');
      if (ids.length) yield ids;
      token = page.pagination?.next;
    } while (token);
  }

  /** Metadata of the given ids that exist (ids absent from the result do not exist). */
  async fetchMetadata(namespace: string, ids: string[]): Promise<Map<string, Record<string, unknown>>> {
    const res = await this.call(`fetch of ${ids.length} vectors from namespace "${namespace}"`, () => this.ns(namespace).fetch({ ids }));
    const out = new Map<string, Record<string, unknown>>();
    for (const [id, rec] of Object.entries((res as { records?: Record<string, PineconeRecord> }).records ?? {}))
      out.set(id, (rec.metadata ?? {}) as Record<string, unknown>);
    return out;
  }

  /** Values and metadata of the given ids that exist (one request; see fetchGroups for the limits). */
  async fetchRecords(namespace: string, ids: string[]): Promise<Map<string, { values: number[]; metadata: Record<string, unknown> }>> {
    const res = await this.call(`fetch of ${ids.length} vectors from namespace "${namespace}"`, () => this.ns(namespace).fetch({ ids }));
    const out = new Map<string, { values: number[]; metadata: Record<string, unknown> }>();
    for (const [id, rec] of Object.entries((res as { records?: Record<string, PineconeRecord> }).records ?? {}))
      out.set(id, { values: (rec.values ?? []) as number[], metadata: (rec.metadata ?? {}) as Record<string, unknown> });
    return out;
  }

  /** Sets metadata fields of one vector (other fields and the values stay): Pinecone's update takes one id. */
  async updateMetadata(namespace: string, id: string, metadata: PineconeMetadata): Promise<void> {
    await this.call(`metadata update of vector ${JSON.stringify(id)} in namespace "${namespace}"`, () =>
      this.ns(namespace).update({ id, metadata }),
    );
  }

  /**
   * Marks the fingerprint on a document's chunk 0 as absent before its chunks go (update can only
   * set fields: an empty content fingerprint reads as none, see storedFingerprint). A vector already
   * gone is fine.
   */
  async clearFingerprint(namespace: string, id: string): Promise<void> {
    await this.call(
      `fingerprint reset of vector ${JSON.stringify(id)} in namespace "${namespace}"`,
      () => this.ns(namespace).update({ id, metadata: { [FP_CONTENT]: '' } }),
      { notFoundOk: true },
    );
  }

  /** Vectors a namespace holds (0 when it does not exist), from the index stats. */
  async recordCount(namespace: string): Promise<number> {
    const stats = await this.call('describe index stats', () => this.client.index({ host: this.index.hostUrl }).describeIndexStats());
    return stats.namespaces?.[namespace]?.recordCount ?? 0;
  }

  async query(namespace: string, vector: number[], topK: number) {
    const res = await this.call(`query of namespace "${namespace}"`, () =>
      this.ns(namespace).query({ vector, topK, includeMetadata: true, includeValues: false }),
    );
    return res.matches ?? [];
  }

  /** Current generation pointers of logical namespaces (absent: the logical namespace itself is current). */
  async readPointers(logical: string[]): Promise<Map<string, GenerationPointer>> {
    const out = new Map<string, GenerationPointer>();
    if (!logical.length) return out;
    const res = await this.call('read of generation pointers', () => this.ns(POINTER_NAMESPACE).fetch({ ids: logical.map(pointerId) }));
    const records = (res as { records?: Record<string, PineconeRecord> }).records ?? {};
    for (const name of logical) {
      const md = records[pointerId(name)]?.metadata as Record<string, unknown> | undefined;
      if (md && typeof md.current === 'string' && typeof md.generation === 'number') {
        // `previous` was one string before reindex could leave two generations to remove.
        const previous = typeof md.previous === 'string' ? [md.previous] : Array.isArray(md.previous) ? (md.previous as string[]) : [];
        const text = (k: string) => (typeof md[k] === 'string' ? { [k]: md[k] as string } : {});
        out.set(name, {
          current: md.current,
          generation: md.generation,
          ...(previous.length ? { previous } : {}),
          ...(typeof md.kept === 'string' ? { kept: md.kept } : {}),
          ...(typeof md.identity === 'string' ? { identity: md.identity } : {}),
          ...(typeof md.kept_identity === 'string' ? { keptIdentity: md.kept_identity } : {}),
          ...text('embedder'),
          ...(typeof md.kept_embedder === 'string' ? { keptEmbedder: md.kept_embedder } : {}),
        });
      }
    }
    return out;
  }

  /** Switches readers to a generation: one upsert of one record, so the switch is atomic. */
  async writePointer(logical: string, pointer: GenerationPointer): Promise<void> {
    await this.writePointers([[logical, pointer]]);
  }

  /**
   * Switches several logical namespaces in ONE upsert request (a reindex switches every stream of
   * a connection at once). Pinecone applies a request whole or not at all as far as sluice's client
   * can tell (it is acknowledged or it fails); it does not promise that another reader fetching two
   * pointers meanwhile sees both change at the same instant — each pointer, read by itself, is
   * either the old one or the new one.
   */
  async writePointers(entries: Array<[string, GenerationPointer]>): Promise<void> {
    if (!entries.length) return;
    if (entries.length > MAX_VECTORS_PER_UPSERT)
      throw new SluiceError(`${entries.length} streams cannot switch in one Pinecone request (at most ${MAX_VECTORS_PER_UPSERT})`, {
        kind: 'config',
        hint: 'split the connection into several with fewer streams each',
      });
    const values = new Array<number>(this.index.dimension).fill(0);
    values[0] = 1; // a unit vector: valid for every metric (cosine rejects all-zero vectors)
    const updatedAt = new Date().toISOString();
    const records = entries.map(([logical, pointer]) => {
      const metadata: PineconeMetadata = {
        logical_namespace: logical,
        current: pointer.current,
        generation: pointer.generation,
        updated_at: updatedAt,
        // One name as a string, as sluice wrote it before a reindex could leave two.
        ...(pointer.previous?.length ? { previous: pointer.previous.length === 1 ? pointer.previous[0] : pointer.previous } : {}),
        ...(pointer.kept !== undefined ? { kept: pointer.kept } : {}),
        ...(pointer.identity !== undefined ? { identity: pointer.identity } : {}),
        ...(pointer.keptIdentity !== undefined ? { kept_identity: pointer.keptIdentity } : {}),
        ...(pointer.embedder !== undefined ? { embedder: pointer.embedder } : {}),
        ...(pointer.keptEmbedder !== undefined ? { kept_embedder: pointer.keptEmbedder } : {}),
      };
      return { id: pointerId(logical), values, metadata };
    });
    await this.upsert(POINTER_NAMESPACE, records);
  }

  /** Runs one request with retries; failures become SluiceErrors that say what failed. */
  async call<T>(what: string, fn: () => Promise<T>, opts: { notFoundOk?: boolean; hostUrl?: string } = {}): Promise<T> {
    try {
      return await retry(
        async () => {
          try {
            return await fn();
          } catch (err) {
            throw unwrap(err);
          }
        },
        {
          maxRetries: this.config.max_retries,
          baseMs: this.config.retry_initial_delay_ms,
          isRetryable: isRetryableError,
          onRetry: (err, attempt, waitMs) => {
            this.retries++;
            this.ctx.logger.debug(
              { attempt, waitMs: Math.round(waitMs), status: httpStatus(err) },
              `Pinecone ${what} failed (${describe(err)}); retrying`,
            );
          },
        },
      );
    } catch (err) {
      if (opts.notFoundOk && httpStatus(err) === 404) return undefined as T;
      throw this.humanError(what, err);
    }
  }

  private humanError(what: string, err: unknown): SluiceError {
    const status = httpStatus(err);
    const where = `Pinecone index ${this.index.name ?? this.config.index}`;
    const detail = describe(err);
    if (status === 401 || status === 403) {
      return new SluiceError(`Pinecone rejected the API key during ${what} (HTTP ${status})`, {
        kind: 'config',
        where,
        hint: 'check api_key (a key of the project that owns the index)',
      });
    }
    if (status === 404 && what.startsWith('describe index')) {
      return new SluiceError(`Pinecone index "${this.config.index}" was not found`, {
        kind: 'config',
        where,
        hint: "create the index (dimension = your embedder's) or fix `index`; with a custom control plane, check controller_host",
      });
    }
    if (status !== undefined && status < 500 && status !== 429 && status !== 408) {
      return new SluiceError(`Pinecone refused the ${what}: ${detail}`, {
        kind: 'destination',
        where,
        hint: "this is a bug in sluice or an index setting; the message above is Pinecone's",
      });
    }
    const retried = this.config.max_retries;
    return new SluiceError(`Pinecone ${what} failed after ${retried + 1} attempts: ${detail}`, {
      kind: status === undefined ? 'connection' : 'destination',
      where,
      transient: true,
      hint:
        status === undefined
          ? 'check the network and the index host; run again to resume'
          : 'Pinecone is overloaded or unavailable; run again later (nothing is lost: the last checkpoint is kept)',
    });
  }
}

/** A short, stable tag of an index identity (embedder and processing settings), stored on the pointer. */
export function identityTag(index: IndexIdentity): string {
  const { provider, model, dimensions, processing_hash } = index;
  return sha256(canonicalJson({ provider, model, dimensions, processing_hash })).slice(0, 16);
}

export function pointerId(logical: string): string {
  return `ns:${logical}`;
}

/** Finds our HTTP failure inside the client's error wrappers. */
function unwrap(err: unknown): unknown {
  let e: unknown = err;
  for (let depth = 0; e && depth < 6; depth++) {
    if (e instanceof PineconeHttpFailure) return new PineconeStatusError(e.httpStatusCode, e.responseHeaders, e.serverMessage);
    e = (e as { cause?: unknown }).cause;
  }
  return err;
}

function describe(err: unknown): string {
  if (err instanceof PineconeStatusError) return `HTTP ${err.status}: ${err.serverMessage}`;
  let e: unknown = err;
  // Network failures: report the innermost cause (ECONNREFUSED…), not the client's generic text.
  while (e && (e as { cause?: unknown }).cause) e = (e as { cause?: unknown }).cause;
  const inner = e as { code?: unknown; message?: unknown } | undefined;
  if (inner && typeof inner.code === 'string')
    return `${inner.code}${typeof inner.message === 'string' && !inner.message.includes(inner.code) ? ` (${inner.message})` : ''}`;
  if (inner && (inner as { name?: unknown }).name === 'TimeoutError') return 'request timed out';
  return err instanceof Error ? err.message : String(err);
}

function serverMessage(text: string): string {
  try {
    const body = JSON.parse(text) as { message?: unknown; error?: { message?: unknown } };
    if (typeof body.message === 'string') return body.message;
    if (typeof body.error?.message === 'string') return body.error.message;
  } catch {
    /* not JSON */
  }
  return text.slice(0, 500);
}

/** Pinecone reports hosts without a scheme; use the control plane's scheme (https unless told). */
function withScheme(host: string, controllerHost: string | undefined): string {
  if (/^https?:\/\//i.test(host)) return host.replace(/\/+$/, '');
  const scheme = controllerHost && /^http:\/\//i.test(controllerHost) ? 'http' : 'https';
  return `${scheme}://${host}`;
}
