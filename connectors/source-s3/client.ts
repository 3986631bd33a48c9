// The S3 calls the source makes: paginated listing, streamed reads, ranged reads (parquet), and
// turning SDK errors into errors a person can act on.
import {
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  S3Client,
  S3ServiceException,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { SluiceError, describeUnknown, isTransientNetworkError } from '../../src/protocol/errors.ts';
import type { S3Config } from './config.ts';

export interface ListedObject {
  key: string;
  etag: string;
  /** ISO-8601 with milliseconds. */
  lastModified: string;
  size: number;
}

export function createClient(config: S3Config): S3Client {
  if (!!config.access_key_id !== !!config.secret_access_key) {
    throw new SluiceError('access_key_id and secret_access_key must be set together', {
      kind: 'config',
      where: 'access_key_id',
      hint: 'set both, or neither to use the default AWS credential chain',
    });
  }
  const options: S3ClientConfig = {
    region: config.region,
    forcePathStyle: config.force_path_style,
    maxAttempts: 5,
    // On AWS a wrong `region` is corrected from the redirect instead of failing.
    followRegionRedirects: !config.endpoint,
    // Third-party S3 stores often reject the newer default checksum headers.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
  if (config.endpoint) options.endpoint = config.endpoint;
  if (config.access_key_id && config.secret_access_key) {
    options.credentials = {
      accessKeyId: config.access_key_id,
      secretAccessKey: config.secret_access_key,
      ...(config.session_token ? { sessionToken: config.session_token } : {}),
    };
  }
  return new S3Client(options);
}

/** Every object under `prefix`, one page of `pageSize` keys at a time (ListObjectsV2 continuation). */
export async function* listObjects(
  client: S3Client,
  bucket: string,
  prefix: string,
  pageSize: number,
  signal?: AbortSignal,
): AsyncGenerator<ListedObject> {
  let token: string | undefined;
  do {
    const page = await call(
      () =>
        client.send(
          new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix || undefined, MaxKeys: pageSize, ContinuationToken: token }),
          { abortSignal: signal },
        ),
      `listing s3://${bucket}/${prefix}`,
    );
    for (const o of page.Contents ?? []) {
      if (o.Key === undefined) continue;
      yield {
        key: o.Key,
        etag: (o.ETag ?? '').replace(/"/g, ''),
        lastModified: (o.LastModified ?? new Date(0)).toISOString(),
        size: o.Size ?? 0,
      };
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

/** The object's body as a Node stream; nothing is buffered beyond the socket's window. */
export async function openObject(client: S3Client, bucket: string, key: string, signal?: AbortSignal): Promise<Readable> {
  const res = await call(
    () => client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal }),
    `reading s3://${bucket}/${key}`,
  );
  return res.Body as Readable;
}

/** A hyparquet AsyncBuffer that fetches byte ranges on demand, so a big file is never held whole. */
export function rangeBuffer(client: S3Client, bucket: string, key: string, size: number, signal?: AbortSignal) {
  return {
    byteLength: size,
    async slice(start: number, end?: number): Promise<ArrayBuffer> {
      const last = (end ?? size) - 1;
      if (last < start) return new ArrayBuffer(0);
      const res = await call(
        () => client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${start}-${last}` }), { abortSignal: signal }),
        `reading bytes ${start}-${last} of s3://${bucket}/${key}`,
      );
      const bytes = await res.Body!.transformToByteArray();
      return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    },
  };
}

export async function headBucket(client: S3Client, bucket: string): Promise<void> {
  await call(() => client.send(new HeadBucketCommand({ Bucket: bucket })), `bucket ${bucket}`);
}

async function call<T>(fn: () => Promise<T>, what: string): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw s3Error(err, what);
  }
}

/** Maps SDK and network failures to what the user should check. Never includes credentials. */
export function s3Error(err: unknown, what: string): SluiceError {
  if (err instanceof SluiceError) return err;
  const name = (err as { name?: string })?.name ?? '';
  const status = err instanceof S3ServiceException ? err.$metadata?.httpStatusCode : undefined;
  const hints: Record<string, [string, string]> = {
    NoSuchBucket: ['the bucket does not exist', 'check `bucket` (and `endpoint`/`region`)'],
    NotFound: ['the bucket or object was not found', 'check `bucket`, `endpoint` and `region`'],
    NoSuchKey: ['the object disappeared while it was being read', 'run the sync again; it will be treated as deleted'],
    AccessDenied: ['access denied', 'the credentials need s3:ListBucket on the bucket and s3:GetObject on its objects'],
    Forbidden: ['access denied', 'the credentials need s3:ListBucket on the bucket and s3:GetObject on its objects'],
    InvalidAccessKeyId: ['the access key id is not known to the server', 'check access_key_id (or the default AWS credential chain)'],
    SignatureDoesNotMatch: ['the secret access key does not match the access key id', 'check secret_access_key'],
    ExpiredToken: ['the session token has expired', 'refresh session_token / your temporary credentials'],
    PermanentRedirect: ['the bucket is in another region', "set `region` to the bucket's region"],
    AuthorizationHeaderMalformed: ['the request was signed for the wrong region', "set `region` to the bucket's region"],
    CredentialsProviderError: [
      'no AWS credentials were found',
      'set access_key_id/secret_access_key, or configure the default AWS chain (AWS_PROFILE, env vars, instance role)',
    ],
    InvalidRange: ['the object changed size while it was being read', 'run the sync again'],
  };
  const known =
    hints[name] ??
    (status === 403 ? hints.AccessDenied : status === 404 ? hints.NotFound : status === 301 ? hints.PermanentRedirect : undefined);
  if (known) {
    return new SluiceError(`S3 ${what}: ${known[0]}`, {
      kind: name === 'CredentialsProviderError' ? 'config' : 'source',
      hint: known[1],
      cause: err,
    });
  }
  const transient =
    isTransientNetworkError(err as NodeJS.ErrnoException) ||
    (status !== undefined && (status >= 500 || status === 429)) ||
    name === 'TimeoutError';
  const code = (err as NodeJS.ErrnoException)?.code ?? (err as { cause?: NodeJS.ErrnoException })?.cause?.code;
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new SluiceError(`S3 ${what}: cannot reach the S3 endpoint (${code})`, {
      kind: 'connection',
      hint: 'check `endpoint` (and that the server is running) or your network',
      cause: err,
      transient: true,
    });
  }
  if (name === 'AbortError') return new SluiceError(`S3 ${what}: interrupted`, { kind: 'interrupted', cause: err });
  return new SluiceError(`S3 ${what}: ${describeUnknown(err)}${status ? ` (HTTP ${status})` : ''}`, {
    kind: 'source',
    cause: err,
    transient,
  });
}
