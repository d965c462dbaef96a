import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { GatewayError } from '../client/errors.js';
import type { GatewayClient } from '../client/gateway.js';
import { type ChunkSource, uploadResumable } from '../client/resumable.js';
import type { RemoteObject, TargetResult, TargetUpload, TransferError, UploadTarget } from './target.js';

const READ_CHUNK = 1024 * 1024;

/** A file as a ChunkSource for the resumable client (positional reads, one handle). */
async function fileSource(file: string, size: number): Promise<ChunkSource & { close(): Promise<void> }> {
  const fh = await open(file, 'r');
  return {
    size,
    async read(offset, length) {
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return got === length ? buf : buf.subarray(0, got);
    },
    close: () => fh.close(),
  };
}

/** Uploads through the gateway: a streamed PUT verified by SHA-256, or the resumable chunked API. */
export class GatewayTarget implements UploadTarget {
  readonly kind = 'gateway' as const;
  readonly description: string;

  /** `prefix`: prepended to every remote path (client-relative, e.g. "project/2024/"). */
  constructor(
    readonly client: GatewayClient,
    readonly prefix = '',
  ) {
    this.description = `${client.baseUrl}${prefix ? ` (${prefix})` : ''}`;
  }

  async upload(req: TargetUpload): Promise<TargetResult> {
    const remote = `${this.prefix}${req.remotePath}`;
    if (!req.resumable) {
      let sent = 0;
      const res = await this.client.upload(
        remote,
        () => {
          if (req.size === 0) return new Uint8Array(0);
          sent = 0;
          // Exactly the bytes that were hashed: a file that grew since is cut at the hashed size.
          const stream = createReadStream(req.localPath, { highWaterMark: READ_CHUNK, start: 0, end: req.size - 1 });
          stream.on('data', (c) => {
            sent += (c as Buffer).length;
            req.onProgress?.({ bytesSent: sent, totalBytes: req.size });
          });
          return Readable.toWeb(stream) as ReadableStream<Uint8Array>;
        },
        { size: req.size, sha256: req.sha256, contentType: req.contentType, signal: req.signal },
      );
      return { checksum: res.sha256, checksumAlgorithm: 'sha256', chunkSize: null, ref: res.run_id };
    }
    const source = await fileSource(req.localPath, req.size);
    try {
      const res = await uploadResumable(this.client, source, {
        path: remote,
        contentType: req.contentType,
        chunkSize: req.chunkSize,
        checksum: req.compositeFor,
        partConcurrency: req.partConcurrency,
        uploadId: req.resumeUploadId,
        onUploadId: req.onUploadId,
        onProgress: (p) => req.onProgress?.({ bytesSent: p.bytesSent, totalBytes: p.totalBytes }),
        signal: req.signal,
      });
      const single = res.totalChunks <= 1;
      return {
        checksum: single ? (res.sha256 ?? req.sha256) : res.checksum,
        checksumAlgorithm: single ? 'sha256' : 'sha256-of-sha256s',
        chunkSize: single ? null : res.chunkSize,
        ref: res.run_id,
        chunksSent: res.chunksSent,
        chunksSkipped: res.chunksSkipped,
      };
    } finally {
      await source.close();
    }
  }

  async *list(prefix: string, signal?: AbortSignal): AsyncIterable<RemoteObject> {
    const full = `${this.prefix}${prefix}`;
    for await (const o of this.client.listAll({ prefix: full, pageSize: 1000, signal })) {
      yield {
        path: o.path.slice(this.prefix.length),
        size: o.size,
        checksum: o.checksum,
        checksumAlgorithm: o.checksum_algorithm,
        chunkSize: o.chunk_size,
        uploadedAt: o.uploaded_at,
      };
    }
  }

  judge(err: unknown): { verdict: 'transient' | 'permanent'; error: TransferError } {
    if (err instanceof GatewayError) {
      const error: TransferError = { status: err.status, code: err.errorCode, message: err.message };
      if (err.retryAfterMs !== undefined) error.retryAfterMs = err.retryAfterMs;
      return { verdict: err.verdict, error };
    }
    return { verdict: 'transient', error: { status: 0, code: 'CLIENT_ERROR', message: (err as Error)?.message ?? String(err) } };
  }
}
