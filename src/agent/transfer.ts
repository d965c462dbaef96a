import type { GatewayClient } from '../client/gateway.js';
import { type RetryPolicy, retryDelay } from '../client/retry.js';
import { matchesRemote, type ReportedChecksum } from '../transfer/checksum.js';
import { GatewayTarget } from '../transfer/gateway-target.js';
import { type ScannedFile, scanBatches } from '../transfer/scan.js';
import type { TargetProgress } from '../transfer/target.js';
import { type UploadLocalFileResult, uploadLocalFile } from '../transfer/upload.js';

/**
 * The agent's one door to the shared transfer core (src/transfer, src/client):
 * how a file is read, hashed, uploaded (plain or resumable by size), retried and
 * judged is the core's code, shared with the bulk CLI. The daemon imports it
 * from here only.
 */
export type { ScannedFile, UploadLocalFileResult as AgentUploadOutcome };

export interface AgentUploadRequest {
  localPath: string;
  remotePath: string;
  resumableThreshold: number;
  chunkSize: number | undefined;
  partConcurrency: number;
  resumeUploadId: string | undefined;
  onUploadId: (uploadId: string) => void;
  onProgress: (p: TargetProgress) => void;
  signal: AbortSignal;
}

export function gatewayTarget(client: GatewayClient): GatewayTarget {
  return new GatewayTarget(client);
}

export function uploadOne(target: GatewayTarget, req: AgentUploadRequest): Promise<UploadLocalFileResult> {
  return uploadLocalFile(target, {
    localPath: req.localPath,
    remotePath: req.remotePath,
    resumableThreshold: req.resumableThreshold,
    ...(req.chunkSize !== undefined ? { chunkSize: req.chunkSize } : {}),
    partConcurrency: req.partConcurrency,
    ...(req.resumeUploadId !== undefined ? { resumeUploadId: req.resumeUploadId } : {}),
    onUploadId: req.onUploadId,
    onProgress: req.onProgress,
    signal: req.signal,
  });
}

/** The local file's checksum computed the way the gateway computed `remote`'s (sha256, or the composite at its chunk size), compared. */
export function matchesRemoteChecksum(localPath: string, remote: ReportedChecksum): Promise<boolean> {
  return matchesRemote(localPath, remote);
}

/** Every regular file under `root`, a folder batch at a time (streamed; symlinks and special files skipped; `exclude` globs over the relative path). */
export function scanFiles(
  root: string,
  opts: { exclude: readonly string[]; onError: (absPath: string, err: NodeJS.ErrnoException) => void },
): AsyncGenerator<ScannedFile[]> {
  return scanBatches(root, { exclude: opts.exclude, onError: opts.onError });
}

/** The agent's wait before the next attempt after `attempt` failures: full-jitter backoff, honouring Retry-After. */
export function nextDelay(policy: RetryPolicy, attempt: number, retryAfterMs: number | undefined): number {
  return retryDelay(policy, attempt, { retryAfterMs });
}
