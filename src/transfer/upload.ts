import { createHash } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { type ChecksumAlgorithm, type FileChecksums, fileChecksums } from './checksum.js';
import { judgeLocal, type TargetProgress, type TargetResult, type TransferError, type TransferVerdict, type UploadTarget } from './target.js';

export const MiB = 1024 * 1024;
/** Files at or above this size go through the resumable path (gateway chunked API, S3 multipart). */
export const DEFAULT_RESUMABLE_THRESHOLD = 64 * MiB;
/** Chunk (part) size asked for: whole MiB and >= S3's 5 MiB minimum, so every backend honours it. */
export const DEFAULT_CHUNK_SIZE = 8 * MiB;
export const DEFAULT_PART_CONCURRENCY = 4;
/** Files up to this size are read into memory once (hash and send), instead of read twice as streams. */
export const SMALL_FILE = 256 * 1024;

export interface UploadLocalFileOptions {
  localPath: string;
  /** The object's path at the target (relative to the target's prefix). */
  remotePath: string;
  resumableThreshold?: number;
  chunkSize?: number;
  partConcurrency?: number;
  contentType?: string;
  /** Continue this resumable session (the id handed to onUploadId by an earlier attempt). */
  resumeUploadId?: string;
  /** A new resumable session's id, before its first chunk: persist it to resume after a crash. */
  onUploadId?: (uploadId: string) => Promise<void> | void;
  onProgress?: (p: TargetProgress) => void;
  signal?: AbortSignal;
}

export interface UploadLocalFileResult {
  verdict: TransferVerdict;
  /** Size and mtime when the upload started (what was hashed and sent). */
  size: number;
  mtimeMs: number;
  /** The content's SHA-256 (undefined if the file could not be read). */
  sha256?: string;
  /** The checksum the target reports for the object, its algorithm and chunk size. */
  checksum?: string;
  checksumAlgorithm?: ChecksumAlgorithm;
  chunkSize?: number | null;
  /** The file's size or mtime differed after the upload: the stored object is the version that was hashed. */
  changedDuringUpload: boolean;
  result?: TargetResult;
  error?: TransferError;
}

/**
 * Upload one local file and judge the outcome: the one code path the agent
 * and the bulk CLI share. The file is read twice, never held in memory: one
 * pass hashes it (SHA-256, and the composite at the chunk size for a
 * resumable upload), the second streams it to the target, which verifies it
 * against that hash before publishing. Below `resumableThreshold` it is one
 * streamed request; above, a resumable upload whose session id goes to
 * `onUploadId` before the first chunk, so a later call with `resumeUploadId`
 * sends only what the target lacks. Never throws for a failed upload: the
 * verdict says ok, transient (try again later) or permanent (give up).
 */
export async function uploadLocalFile(target: UploadTarget, opts: UploadLocalFileOptions): Promise<UploadLocalFileResult> {
  const threshold = opts.resumableThreshold ?? DEFAULT_RESUMABLE_THRESHOLD;
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  let size = 0;
  let mtimeMs = 0;
  let sums: FileChecksums | undefined;
  try {
    // One open for a small file: its fstat is the "before" stat and its bytes are read from the
    // same handle (O_NONBLOCK: a FIFO opens without a writer and is refused below, not waited on).
    const fh = await open(opts.localPath, constants.O_RDONLY | constants.O_NONBLOCK);
    let before: Stats;
    let data: Buffer | undefined;
    try {
      before = await fh.stat();
      if (before.isFile() && before.size < threshold && before.size <= SMALL_FILE) data = await fh.readFile({ signal: opts.signal });
    } finally {
      await fh.close();
    }
    if (!before.isFile()) {
      return {
        verdict: 'permanent',
        size: 0,
        mtimeMs: 0,
        changedDuringUpload: false,
        error: { status: 0, code: 'LOCAL_NOT_A_FILE', message: `${opts.localPath} is not a regular file` },
      };
    }
    size = before.size;
    mtimeMs = before.mtimeMs;
    const resumable = size >= threshold;
    // A small file was read once (above): hashed and sent from memory (bounded by SMALL_FILE per upload).
    sums = data
      ? { size: data.length, sha256: createHash('sha256').update(data).digest('hex'), composite: undefined }
      : await fileChecksums(opts.localPath, resumable ? chunkSize : undefined, opts.signal);
    // Hashed bytes must be the bytes sent: a file that changed while it was hashed is tried later.
    const hashed = sums;
    if (hashed.size !== size) return changed(size, mtimeMs, hashed, 'the file changed while it was being read');
    const result = await target.upload({
      localPath: opts.localPath,
      remotePath: opts.remotePath,
      size,
      sha256: hashed.sha256,
      data,
      resumable,
      chunkSize,
      partConcurrency: opts.partConcurrency ?? DEFAULT_PART_CONCURRENCY,
      compositeFor: async (cs) =>
        cs === chunkSize && hashed.composite ? hashed.composite : ((await fileChecksums(opts.localPath, cs, opts.signal)).composite as string),
      contentType: opts.contentType,
      resumeUploadId: opts.resumeUploadId,
      onUploadId: opts.onUploadId,
      onProgress: opts.onProgress,
      signal: opts.signal,
    });
    const after = await stat(opts.localPath).catch(() => undefined);
    return {
      verdict: 'ok',
      size,
      mtimeMs,
      sha256: hashed.sha256,
      checksum: result.checksum,
      checksumAlgorithm: result.checksumAlgorithm,
      chunkSize: result.chunkSize,
      changedDuringUpload: !after || after.size !== size || after.mtimeMs !== mtimeMs,
      result,
    };
  } catch (err) {
    const base = { size, mtimeMs, sha256: sums?.sha256 };
    if (opts.signal?.aborted) {
      return { ...base, verdict: 'transient', changedDuringUpload: false, error: { status: 0, code: 'ABORTED', message: 'the upload was stopped' } };
    }
    const local = judgeLocal(err);
    const judged = local ?? target.judge(err);
    const after = await stat(opts.localPath).catch(() => undefined);
    const changedNow = !after || after.size !== size || after.mtimeMs !== mtimeMs;
    // Bytes refused for not matching their hash, from a file that changed meanwhile: not a
    // fault of the file's content, try again once it is stable.
    const mismatch = judged.error.code === 'CHECKSUM_MISMATCH' || judged.error.code === 'SIZE_MISMATCH';
    const verdict = changedNow && size > 0 && mismatch ? 'transient' : judged.verdict;
    return { ...base, verdict, changedDuringUpload: changedNow && size > 0, error: judged.error };
  }
}

function changed(size: number, mtimeMs: number, sums: FileChecksums, message: string): UploadLocalFileResult {
  return { verdict: 'transient', size, mtimeMs, sha256: sums.sha256, changedDuringUpload: true, error: { status: 0, code: 'LOCAL_CHANGED', message } };
}
