import type { ChecksumAlgorithm } from './checksum.js';

/** A failure in the one shape every client layer reports. */
export interface TransferError {
  status: number;
  code: string;
  message: string;
  retryAfterMs?: number;
}

export type TransferVerdict = 'ok' | 'transient' | 'permanent';

/** What a target knows of a stored object (a page of a listing). */
export interface RemoteObject {
  /** Relative to the listed prefix. */
  path: string;
  size: number;
  checksum: string | null;
  checksumAlgorithm: ChecksumAlgorithm | null;
  chunkSize: number | null;
  /** ISO time the object was stored. */
  uploadedAt: string | null;
}

export interface TargetProgress {
  bytesSent: number;
  totalBytes: number;
}

/** One file to send, already stat'ed and hashed by uploadLocalFile. */
export interface TargetUpload {
  localPath: string;
  remotePath: string;
  size: number;
  sha256: string;
  /** The whole content, already read (small files): send these bytes instead of reading the file again. */
  data?: Uint8Array;
  /** Send it resumably (the size reached the threshold). */
  resumable: boolean;
  chunkSize: number;
  partConcurrency: number;
  /** The composite checksum for a chunk size (computed again only if the target chose another size). */
  compositeFor: (chunkSize: number) => Promise<string>;
  contentType?: string;
  resumeUploadId?: string;
  onUploadId?: (uploadId: string) => Promise<void> | void;
  onProgress?: (p: TargetProgress) => void;
  signal?: AbortSignal;
}

export interface TargetResult {
  /** The checksum the target reports for the stored object, and how it was computed. */
  checksum: string;
  checksumAlgorithm: ChecksumAlgorithm;
  chunkSize: number | null;
  /** The gateway's run id, the S3 ETag, ... */
  ref?: string;
  /** Chunks actually sent by this call (resumable); chunks the target already held. */
  chunksSent?: number;
  chunksSkipped?: number;
}

/**
 * Where files go: the gateway (GatewayTarget) or S3 directly (S3Target).
 * Small on purpose: send one file, list a prefix, judge a failure.
 */
export interface UploadTarget {
  readonly kind: 'gateway' | 's3';
  /** For messages: the gateway URL, or s3://bucket/prefix. */
  readonly description: string;
  upload(req: TargetUpload): Promise<TargetResult>;
  /** The objects under `prefix` (relative to the target's own root), one page in memory at a time. */
  list(prefix: string, signal?: AbortSignal): AsyncIterable<RemoteObject>;
  /** Transient or permanent, and the error in the common shape. */
  judge(err: unknown): { verdict: 'transient' | 'permanent'; error: TransferError };
}

const LOCAL_PERMANENT = new Set(['ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG']);

/** A local file-system error (reading the file), or undefined when `err` is not one. */
export function judgeLocal(err: unknown): { verdict: 'transient' | 'permanent'; error: TransferError } | undefined {
  const code = (err as NodeJS.ErrnoException)?.code;
  const syscall = (err as NodeJS.ErrnoException)?.syscall;
  if (typeof code !== 'string' || typeof syscall !== 'string' || !/^(open|read|stat|lstat|fstat|close)$/.test(syscall)) return undefined;
  return {
    verdict: LOCAL_PERMANENT.has(code) ? 'permanent' : 'transient',
    error: { status: 0, code: `LOCAL_${code}`, message: `cannot read the local file: ${(err as Error).message}` },
  };
}
