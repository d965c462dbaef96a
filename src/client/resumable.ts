import { GatewayError } from './errors.js';
import type { ChunkedComplete, ChunkedInit, GatewayClient } from './gateway.js';

/**
 * The resumable chunked upload client (the gateway's chunked API, spec 004):
 * init -> chunks (in parallel, each with its SHA-256, which the gateway
 * verifies) -> status -> complete. Browser-safe: fetch and WebCrypto only.
 * Resuming from a known upload id asks the gateway which chunks it holds and
 * sends only the missing ones.
 */

/** Where the bytes come from: a Blob in a browser, a file handle in Node. */
export interface ChunkSource {
  size: number;
  read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array>;
}

export function blobSource(blob: Blob): ChunkSource {
  return {
    size: blob.size,
    read: async (offset, length) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer()),
  };
}

export interface ResumableProgress {
  bytesSent: number;
  totalBytes: number;
  chunksDone: number;
  totalChunks: number;
}

export interface ResumableOptions {
  /** The object's client-relative path. */
  path: string;
  contentType?: string;
  /** Chunk size to ask for (bytes; the gateway honours whole MiB at or above its minimum). */
  chunkSize?: number;
  /**
   * The composite checksum for a given chunk size, declared at init so the
   * gateway refuses to publish other bytes. Called with the chunk size the
   * session really uses.
   */
  checksum?: (chunkSize: number) => Promise<string | undefined> | string | undefined;
  /** Chunks in flight at once (default 4). Memory is about partConcurrency x chunk size. */
  partConcurrency?: number;
  /** Continue this upload session instead of starting one. */
  uploadId?: string;
  /** Called with a new session's id before its first chunk is sent, so the caller can persist it. */
  onUploadId?: (uploadId: string, init: ChunkedInit) => Promise<void> | void;
  onProgress?: (p: ResumableProgress) => void;
  signal?: AbortSignal;
}

export interface ResumableResult extends ChunkedComplete {
  uploadId: string;
  /** Chunks sent by this call. */
  chunksSent: number;
  /** Chunks the gateway already held (a resumed session). */
  chunksSkipped: number;
  resumed: boolean;
  chunkSize: number;
  totalChunks: number;
}

const DEFAULT_PART_CONCURRENCY = 4;
const MiB = 1024 * 1024;
/** The gateway's part limit: a chunk size that needs more parts is grown (in whole MiB). */
const MAX_PARTS = 10_000;

function hex(buf: ArrayBuffer): string {
  let s = '';
  for (const b of new Uint8Array(buf)) s += b.toString(16).padStart(2, '0');
  return s;
}

/** SHA-256 (hex) of a chunk with WebCrypto (Node and browsers). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return hex(await globalThis.crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
}

/** The chunk size to ask for: `preferred`, grown in whole MiB so the file fits in the part limit. */
export function chunkSizeToAsk(fileSize: number, preferred: number): number {
  const needed = Math.ceil(Math.ceil(fileSize / MAX_PARTS) / MiB) * MiB;
  return Math.max(preferred, needed);
}

function isGone(err: unknown): boolean {
  return err instanceof GatewayError && (err.status === 404 || err.status === 410);
}

export async function uploadResumable(client: GatewayClient, source: ChunkSource, opts: ResumableOptions): Promise<ResumableResult> {
  const signal = opts.signal;
  let fileId: string | undefined;
  let chunkSize = 0;
  let totalChunks = 0;
  let missing: number[] = [];
  let resumed = false;

  if (opts.uploadId) {
    try {
      const st = await client.chunkedStatus(opts.uploadId, { signal });
      if (st.file_size === source.size && st.status === 'completed') {
        const done = await client.chunkedComplete(opts.uploadId, { signal });
        return {
          ...done,
          uploadId: opts.uploadId,
          chunksSent: 0,
          chunksSkipped: st.total_chunks,
          resumed: true,
          chunkSize: st.chunk_size,
          totalChunks: st.total_chunks,
        };
      }
      if (st.file_size === source.size && st.status === 'active') {
        fileId = opts.uploadId;
        chunkSize = st.chunk_size;
        totalChunks = st.total_chunks;
        missing = st.missing;
        resumed = true;
      }
    } catch (err) {
      // An unknown or expired session starts over; anything else is the caller's to judge.
      if (!isGone(err)) throw err;
    }
  }

  if (fileId === undefined) {
    const ask = opts.chunkSize ? chunkSizeToAsk(source.size, opts.chunkSize) : undefined;
    let init = await client.chunkedInit(
      { path: opts.path, fileSize: source.size, contentType: opts.contentType, chunkSize: ask, checksum: ask ? await opts.checksum?.(ask) : undefined },
      { signal },
    );
    if (opts.checksum && init.chunk_size !== ask) {
      // The gateway chose another chunk size: declare the checksum at that size instead.
      await client.chunkedAbort(init.file_id, { signal }).catch(() => {});
      init = await client.chunkedInit(
        { path: opts.path, fileSize: source.size, contentType: opts.contentType, chunkSize: init.chunk_size, checksum: await opts.checksum(init.chunk_size) },
        { signal },
      );
    }
    await opts.onUploadId?.(init.file_id, init);
    fileId = init.file_id;
    chunkSize = init.chunk_size;
    totalChunks = init.total_chunks;
    missing = Array.from({ length: totalChunks }, (_, i) => i + 1);
  }

  const id = fileId;
  const lengthOf = (n: number) => (n < totalChunks ? chunkSize : source.size - (totalChunks - 1) * chunkSize);
  const skipped = totalChunks - missing.length;
  let bytesSent = 0;
  const toSend = new Set(missing);
  for (let n = 1; n <= totalChunks; n++) if (!toSend.has(n)) bytesSent += lengthOf(n);
  let chunksDone = skipped;
  let chunksSent = 0;
  const progress = () => opts.onProgress?.({ bytesSent, totalBytes: source.size, chunksDone, totalChunks });
  progress();

  const sendAll = async (chunks: number[]) => {
    const inner = new AbortController();
    const onAbort = () => inner.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const queue = chunks.slice();
    let failure: unknown;
    const worker = async () => {
      for (let n = queue.shift(); n !== undefined && failure === undefined; n = queue.shift()) {
        const len = lengthOf(n);
        try {
          const bytes = await source.read((n - 1) * chunkSize, len, inner.signal);
          if (bytes.byteLength !== len) {
            throw new GatewayError(`the file is shorter than when the upload started (chunk ${n})`, 400, 'SIZE_MISMATCH', undefined, undefined);
          }
          await client.chunkedPut(id, n, bytes, await sha256Hex(bytes), { signal: inner.signal });
        } catch (err) {
          if (failure === undefined) failure = err;
          inner.abort(err);
          return;
        }
        chunksSent++;
        chunksDone++;
        bytesSent += len;
        progress();
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.partConcurrency ?? DEFAULT_PART_CONCURRENCY, chunks.length)) }, worker));
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    if (failure !== undefined) throw signal?.aborted ? signal.reason : failure;
  };

  await sendAll(missing);
  for (let round = 0; ; round++) {
    try {
      const done = await client.chunkedComplete(id, { signal });
      return { ...done, uploadId: id, chunksSent, chunksSkipped: skipped, resumed, chunkSize, totalChunks };
    } catch (err) {
      // A chunk the gateway forgot (a checksum refused after it was stored): send what it lacks.
      if (!(err instanceof GatewayError && err.errorCode === 'INCOMPLETE_UPLOAD') || round >= 2) throw err;
      const st = await client.chunkedStatus(id, { signal });
      for (const n of st.missing) {
        bytesSent -= lengthOf(n);
        chunksDone--;
      }
      await sendAll(st.missing);
    }
  }
}
