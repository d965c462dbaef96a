import { open } from 'node:fs/promises';
import { GatewayError } from '../client/errors.js';
import type { GatewayClient } from '../client/gateway.js';
import { fileBody } from '../client/node.js';
import { type ChunkSource, uploadResumable } from '../client/resumable.js';
import type { RemoteObject, TargetResult, TargetUpload, TransferError, UploadTarget } from './target.js';

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
      const res = await this.client.upload(
        remote,
        req.data ?? fileBody(req.localPath, req.size, (sent) => req.onProgress?.({ bytesSent: sent, totalBytes: req.size })),
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
