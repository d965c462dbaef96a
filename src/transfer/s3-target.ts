import { createReadStream } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { RemoteObject, TargetResult, TargetUpload, TransferError, UploadTarget } from './target.js';

// The SDK warns on every process start under Node 20; users of our CLIs must not see it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

type S3Module = typeof import('@aws-sdk/client-s3');
type S3Client = import('@aws-sdk/client-s3').S3Client;

export interface S3TargetOptions {
  /** s3://bucket/prefix */
  url: string;
  endpoint?: string;
  region?: string;
  /** Path-style addressing (most S3-compatible stores); default true when an endpoint is given. */
  forcePathStyle?: boolean;
  /** Parallel connections (default: the SDK's, raised to the worker count by the caller). */
  maxSockets?: number;
}

/** Parse s3://bucket/prefix; the prefix (if any) ends with "/". */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url.trim());
  if (!m?.[1]) throw new Error(`not an S3 URL: "${url}" (expected s3://bucket/prefix)`);
  let prefix = m[2] ?? '';
  if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
  return { bucket: m[1], prefix };
}

const TRANSIENT_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  'TimeoutError',
  'NetworkingError',
]);

/**
 * Uploads straight to S3 with the push's own credentials (the SDK's default
 * chain: environment, profiles, instance roles): @aws-sdk/lib-storage's Upload,
 * one PutObject for a small file, a multipart upload with `partConcurrency`
 * parts in flight for a large one. The SDK retries throttling (SlowDown) and
 * 5xx itself; what is left is judged here.
 */
export class S3Target implements UploadTarget {
  readonly kind = 's3' as const;
  readonly description: string;
  readonly bucket: string;
  readonly prefix: string;
  private s3: Promise<{ mod: S3Module; client: S3Client }> | undefined;

  constructor(private readonly opts: S3TargetOptions) {
    const { bucket, prefix } = parseS3Url(opts.url);
    this.bucket = bucket;
    this.prefix = prefix;
    this.description = `s3://${bucket}/${prefix}`;
  }

  /** The SDK is loaded on first use only. */
  private sdk(): Promise<{ mod: S3Module; client: S3Client }> {
    this.s3 ??= (async () => {
      const mod = await import('@aws-sdk/client-s3');
      const client = new mod.S3Client({
        region: this.opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
        endpoint: this.opts.endpoint || undefined,
        forcePathStyle: this.opts.forcePathStyle ?? Boolean(this.opts.endpoint),
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        requestHandler: {
          httpAgent: new http.Agent({ keepAlive: true, maxSockets: this.opts.maxSockets ?? 64 }),
          httpsAgent: new https.Agent({ keepAlive: true, maxSockets: this.opts.maxSockets ?? 64 }),
        },
      });
      return { mod, client };
    })();
    return this.s3;
  }

  async upload(req: TargetUpload): Promise<TargetResult> {
    const { mod, client } = await this.sdk();
    const key = `${this.prefix}${req.remotePath}`;
    const body = () => (req.size === 0 ? Buffer.alloc(0) : createReadStream(req.localPath, { start: 0, end: req.size - 1, highWaterMark: 1024 * 1024 }));
    if (!req.resumable) {
      // One streamed PutObject with its length: nothing buffered, one request.
      const stream = req.data ? Buffer.from(req.data.buffer, req.data.byteOffset, req.data.byteLength) : body();
      let sent = 0;
      if (!Buffer.isBuffer(stream)) {
        stream.on('data', (c) => {
          sent += (c as Buffer).length;
          req.onProgress?.({ bytesSent: sent, totalBytes: req.size });
        });
      }
      const res = await client.send(
        new mod.PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: stream,
          ContentLength: req.size,
          ContentType: req.contentType ?? 'application/octet-stream',
          Metadata: { sha256: req.sha256 },
        }),
        { abortSignal: req.signal },
      );
      return { checksum: req.sha256, checksumAlgorithm: 'sha256', chunkSize: null, ref: res.ETag };
    }
    const { Upload } = await import('@aws-sdk/lib-storage');
    const abort = new AbortController();
    const onAbort = () => abort.abort(req.signal?.reason);
    req.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      // Multipart: partConcurrency parts of chunkSize in flight (each buffered once).
      const up = new Upload({
        client,
        params: { Bucket: this.bucket, Key: key, Body: body(), ContentType: req.contentType ?? 'application/octet-stream', Metadata: { sha256: req.sha256 } },
        queueSize: req.partConcurrency,
        partSize: Math.max(5 * 1024 * 1024, req.chunkSize),
        leavePartsOnError: false,
        abortController: abort,
      });
      up.on('httpUploadProgress', (p) => req.onProgress?.({ bytesSent: p.loaded ?? 0, totalBytes: req.size }));
      const res = await up.done();
      return { checksum: req.sha256, checksumAlgorithm: 'sha256', chunkSize: null, ref: (res as { ETag?: string }).ETag };
    } finally {
      req.signal?.removeEventListener('abort', onAbort);
    }
  }

  async *list(prefix: string, signal?: AbortSignal): AsyncIterable<RemoteObject> {
    const { mod, client } = await this.sdk();
    let token: string | undefined;
    do {
      const page = await client.send(
        new mod.ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${this.prefix}${prefix}`, ContinuationToken: token, MaxKeys: 1000 }),
        { abortSignal: signal },
      );
      for (const o of page.Contents ?? []) {
        if (!o.Key) continue;
        yield {
          path: o.Key.slice(this.prefix.length),
          size: o.Size ?? 0,
          checksum: null,
          checksumAlgorithm: null,
          chunkSize: null,
          uploadedAt: o.LastModified?.toISOString() ?? null,
        };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  judge(err: unknown): { verdict: 'transient' | 'permanent'; error: TransferError } {
    const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown; code?: string };
    const status = e?.$metadata?.httpStatusCode ?? 0;
    const code = e?.name && e.name !== 'Error' ? e.name : (e?.code ?? 'S3_ERROR');
    const transient = status === 0 || status === 408 || status === 429 || status >= 500 || TRANSIENT_NAMES.has(code) || e?.$retryable !== undefined;
    return { verdict: transient ? 'transient' : 'permanent', error: { status, code, message: e?.message ?? String(err) } };
  }

  async close(): Promise<void> {
    if (this.s3) (await this.s3).client.destroy();
  }
}
