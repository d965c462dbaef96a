import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { AppError, ErrorCode } from '../errors.js';
import type {
  ByteRange,
  DeleteManyResult,
  GetResult,
  MultipartCapability,
  ObjectInfo,
  PresignCapability,
  PutOptions,
  PutResult,
  StorageBackend,
  StoredPart,
} from './types.js';

// The SDK warns on every process start under Node 20; users of our CLIs must not see it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export interface S3Options {
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  forcePathStyle: boolean;
  /** Part size for streamed uploads, bytes (>= 5 MiB). */
  partSize: number;
  /** Parts in flight per upload. */
  queueSize: number;
  maxSockets?: number;
}

const UNAVAILABLE_NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH', 'EPIPE', 'EAI_AGAIN']);
const UNAVAILABLE_NAMES = new Set([
  'TimeoutError',
  'NoSuchBucket',
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ServiceUnavailable',
  'SlowDown',
]);
const CANNOT_ABORT = new Set(['NotImplemented', 'MethodNotAllowed']);

interface SdkError {
  name?: string;
  code?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

function sdkError(err: unknown): SdkError {
  return (err ?? {}) as SdkError;
}

function isNotFound(err: unknown): boolean {
  const e = sdkError(err);
  return e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404;
}

/** Map an SDK failure to the error contract; the SDK's messages never carry credentials. */
export function s3Error(err: unknown, what: string): AppError {
  if (err instanceof AppError) return err;
  const e = sdkError(err);
  if ((e.code && UNAVAILABLE_NETWORK.has(e.code)) || (e.name && UNAVAILABLE_NAMES.has(e.name))) {
    return new AppError(ErrorCode.STORAGE_UNAVAILABLE, `object store unavailable during ${what} (${e.name ?? e.code})`, undefined, { cause: err });
  }
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined && status >= 500) {
    return new AppError(ErrorCode.STORAGE_UNAVAILABLE, `object store failed during ${what} (HTTP ${status})`, undefined, { cause: err });
  }
  return new AppError(ErrorCode.STORAGE_ERROR, `object store error during ${what} (${e.name ?? 'unknown'})`, undefined, { cause: err });
}

/**
 * The part buffers of one upload: at most `queue_size + 1` buffers of one part
 * each, reused as parts are acknowledged. Allocating a fresh 8 MiB buffer per
 * part (Buffer.concat) made the kernel fault in and zero 2,048 new pages per
 * part: measured, 0.54 s of main thread per 256 MiB, the largest cost of the
 * S3 path after the SDK's payload hash.
 */
class PartBuffers {
  private readonly free: Buffer[] = [];
  constructor(readonly size: number) {}
  acquire(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }
  release(buf: Buffer): void {
    this.free.push(buf);
  }
}

/** `take` bytes of `src` after skipping `skip`; the source is released as soon as they are through. */
function sliceBytes(src: Readable, skip: number, take: number): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    let toSkip = skip;
    let left = take;
    for await (const chunk of src) {
      let c = chunk as Buffer;
      if (toSkip > 0) {
        const n = Math.min(toSkip, c.length);
        toSkip -= n;
        c = c.subarray(n);
      }
      if (c.length > left) c = c.subarray(0, left);
      left -= c.length;
      if (c.length > 0) yield c;
      if (left === 0) break;
    }
  }
  return Readable.from(gen(), { objectMode: false });
}

export class S3Storage implements StorageBackend {
  readonly kind = 's3' as const;
  readonly client: S3Client;
  readonly bucket: string;
  readonly multipart: MultipartCapability;
  readonly presign: PresignCapability;
  private readonly partSize: number;
  private readonly queueSize: number;

  constructor(opts: S3Options) {
    const maxSockets = opts.maxSockets ?? 64;
    const config: S3ClientConfig = {
      region: opts.region,
      forcePathStyle: opts.forcePathStyle,
      // Third-party stores (MinIO, Ceph, Garage, s3rver) differ in their support for
      // the newer default CRC checksums; we verify integrity ourselves (SHA-256).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        httpAgent: new http.Agent({ keepAlive: true, maxSockets }),
        httpsAgent: new https.Agent({ keepAlive: true, maxSockets }),
        connectionTimeout: 10_000,
        requestTimeout: 120_000,
      },
    };
    if (opts.endpoint) config.endpoint = opts.endpoint;
    // No keys configured: the SDK's default chain (env, profile, IMDS, IRSA, ...).
    if (opts.accessKeyId && opts.secretAccessKey) {
      config.credentials = { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey };
    }
    this.client = new S3Client(config);
    this.bucket = opts.bucket;
    this.partSize = opts.partSize;
    this.queueSize = opts.queueSize;
    this.multipart = this.makeMultipart();
    this.presign = {
      presignPut: async (key, { size, contentType, expiresInSeconds }) => {
        const command = new PutObjectCommand({ Bucket: this.bucket, Key: key, ContentLength: size, ContentType: contentType });
        // Sign the length and type so the store refuses any other body.
        const signed = ['content-length', 'content-type'];
        const url = await getSignedUrl(this.client, command, {
          expiresIn: expiresInSeconds,
          signableHeaders: new Set(signed),
          unhoistableHeaders: new Set(signed),
        });
        return { url, headers: { 'content-type': contentType, 'content-length': String(size) } };
      },
      presignPost: async (key, { maxSize, contentType, expiresInSeconds }) => {
        // A presigned PUT cannot bound a length it does not know; a POST policy can.
        const { createPresignedPost } = await import('@aws-sdk/s3-presigned-post');
        return createPresignedPost(this.client, {
          Bucket: this.bucket,
          Key: key,
          Expires: expiresInSeconds,
          Fields: { 'Content-Type': contentType },
          Conditions: [['content-length-range', 0, maxSize]],
        });
      },
    };
  }

  async put(key: string, body: Readable | Buffer, opts: PutOptions = {}): Promise<PutResult> {
    if (Buffer.isBuffer(body) && body.length <= this.partSize) return this.putOne(key, body, opts);
    const buffers = new PartBuffers(this.partSize);
    let uploadId: string | undefined;
    const parts: StoredPart[] = [];
    const inflight = new Set<Promise<void>>();
    let partNumber = 0;
    let total = 0;
    const mp = this.multipart;
    const send = async (buf: Buffer, length: number): Promise<void> => {
      uploadId ??= await mp.create(key, { contentType: opts.contentType, partSize: this.partSize, totalSize: 0 });
      // Wait for a free slot before sending (not after): the next part is then read
      // from the client while `queueSize` parts are in flight, and goes out the
      // moment one finishes. Costs one more part of memory; keeps the store busy.
      while (inflight.size >= this.queueSize) await Promise.race(inflight);
      const n = ++partNumber;
      const id = uploadId;
      const p: Promise<void> = mp.uploadPart(key, id, n, buf.subarray(0, length), length).then((part) => {
        parts[n - 1] = part;
        inflight.delete(p);
        // Acknowledged: the SDK is done with these bytes.
        buffers.release(buf);
      });
      p.catch(() => {});
      inflight.add(p);
    };
    try {
      // Copy the body into part buffers (a Buffer body too: iterating a Buffer itself would yield bytes).
      let part = buffers.acquire();
      let fill = 0;
      for await (const chunk of Buffer.isBuffer(body) ? [body] : body) {
        const buf = chunk as Buffer;
        total += buf.length;
        for (let off = 0; off < buf.length; ) {
          const n = Math.min(buf.length - off, this.partSize - fill);
          buf.copy(part, fill, off, off + n);
          fill += n;
          off += n;
          if (fill === this.partSize) {
            await send(part, fill);
            part = buffers.acquire();
            fill = 0;
          }
        }
      }
      if (uploadId === undefined) return await this.putOne(key, part.subarray(0, fill), opts);
      if (fill > 0) await send(part, fill);
      await Promise.all(inflight);
      await opts.beforeCommit?.();
      const res = await mp.complete(key, uploadId, parts);
      return { size: total, etag: res.etag };
    } catch (err) {
      if (uploadId !== undefined) {
        await Promise.allSettled(inflight);
        await mp.abort(key, uploadId).catch(() => false);
      }
      throw err;
    }
  }

  /** A body that fits in one part: one PutObject, after `beforeCommit`. */
  private async putOne(key: string, data: Buffer, opts: PutOptions): Promise<PutResult> {
    await opts.beforeCommit?.();
    try {
      const out = await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: data, ContentLength: data.length, ContentType: opts.contentType }),
      );
      return { size: data.length, etag: out.ETag ?? '' };
    } catch (err) {
      throw s3Error(err, 'put');
    }
  }

  private makeMultipart(): MultipartCapability {
    return {
      create: async (key, { contentType }) => {
        try {
          const out = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ContentType: contentType }));
          if (!out.UploadId) throw new AppError(ErrorCode.STORAGE_ERROR, 'object store returned no upload id');
          return out.UploadId;
        } catch (err) {
          throw s3Error(err, 'create multipart upload');
        }
      },
      uploadPart: async (key, uploadId, partNumber, body, size, opts) => {
        try {
          const out = await this.client.send(
            new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: size }),
            { abortSignal: opts?.signal },
          );
          return { partNumber, etag: out.ETag ?? '', size };
        } catch (err) {
          throw s3Error(err, `upload part ${partNumber}`);
        }
      },
      complete: async (key, uploadId, parts) => {
        const sorted = [...parts].sort((a, b) => a.partNumber - b.partNumber);
        try {
          const out = await this.client.send(
            new CompleteMultipartUploadCommand({
              Bucket: this.bucket,
              Key: key,
              UploadId: uploadId,
              MultipartUpload: { Parts: sorted.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
            }),
          );
          return { size: sorted.reduce((n, p) => n + p.size, 0), etag: out.ETag ?? '' };
        } catch (err) {
          throw s3Error(err, 'complete multipart upload');
        }
      },
      abort: async (key, uploadId) => {
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }));
          return true;
        } catch (err) {
          const e = sdkError(err);
          if (
            (e.name && CANNOT_ABORT.has(e.name)) ||
            (e.Code && CANNOT_ABORT.has(e.Code)) ||
            e.$metadata?.httpStatusCode === 405 ||
            e.$metadata?.httpStatusCode === 501
          ) {
            return false;
          }
          if (isNotFound(err) || e.name === 'NoSuchUpload') return true;
          throw s3Error(err, 'abort multipart upload');
        }
      },
    };
  }

  async head(key: string): Promise<ObjectInfo | null> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { key, size: out.ContentLength ?? 0, lastModified: out.LastModified ?? new Date(0), etag: out.ETag ?? '', contentType: out.ContentType };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw s3Error(err, 'head');
    }
  }

  async get(key: string, range?: ByteRange): Promise<GetResult | null> {
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range ? `bytes=${range.start}-${range.end}` : undefined }),
      );
      let size = out.ContentLength ?? 0;
      const total = out.ContentRange?.match(/\/(\d+)$/)?.[1];
      if (total !== undefined) size = Number(total);
      let body = out.Body as Readable;
      if (range) {
        // Serve exactly the bytes asked for, even from a store that returns more
        // (s3rver answers bytes=0-0 with the whole object) or ignores the Range.
        const m = out.ContentRange?.match(/^bytes (\d+)-(\d+)\//);
        const first = m ? Number(m[1]) : 0;
        const last = m ? Number(m[2]) : size - 1;
        if (first > range.start) {
          body.destroy();
          throw new AppError(ErrorCode.STORAGE_ERROR, `object store returned bytes ${first}-${last} for a read from ${range.start}`);
        }
        if (first !== range.start || last !== range.end) body = sliceBytes(body, range.start - first, range.end - range.start + 1);
      }
      return {
        body,
        info: { key, size, lastModified: out.LastModified ?? new Date(0), etag: out.ETag ?? '', contentType: out.ContentType },
      };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw s3Error(err, 'get');
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      if (isNotFound(err)) return;
      throw s3Error(err, 'delete');
    }
  }

  async deleteMany(keys: string[]): Promise<DeleteManyResult> {
    const out: DeleteManyResult = { deleted: [], errors: [] };
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      try {
        const res = await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }));
        const failed = new Set<string>();
        for (const e of res.Errors ?? []) {
          if (!e.Key) continue;
          failed.add(e.Key);
          out.errors.push({ key: e.Key, message: `${e.Code ?? 'error'}: ${e.Message ?? ''}`.trim() });
        }
        for (const k of batch) if (!failed.has(k)) out.deleted.push(k);
      } catch (err) {
        const e = s3Error(err, 'delete objects');
        for (const k of batch) out.errors.push({ key: k, message: e.message });
      }
    }
    return out;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      let out: ListObjectsV2CommandOutput;
      try {
        out = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: 1000 }));
      } catch (err) {
        throw s3Error(err, 'list');
      }
      for (const o of out.Contents ?? []) {
        if (!o.Key) continue;
        yield { key: o.Key, size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0), etag: o.ETag ?? '' };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      throw s3Error(err, 'bucket check');
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
