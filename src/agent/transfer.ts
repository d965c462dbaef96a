import { stat } from 'node:fs/promises';
import { GatewayError } from '../client/errors.js';
import type { GatewayClient } from '../client/gateway.js';
import { sha256File, uploadFile } from '../client/node.js';

/**
 * The agent's one door to the shared transfer core: how a file is read, hashed,
 * uploaded (plain or resumable by size), retried and judged is not the agent's
 * code. Everything the daemon needs from it goes through this module.
 */
export interface TransferError {
  status: number;
  code: string;
  message: string;
  retryAfterMs?: number;
}

export interface AgentUploadRequest {
  localPath: string;
  remotePath: string;
  resumableThreshold: number;
  chunkSize: number | undefined;
  partConcurrency: number;
  resumeUploadId: string | undefined;
  onUploadId: (uploadId: string) => void;
  signal: AbortSignal;
}

export interface AgentUploadOutcome {
  verdict: 'ok' | 'transient' | 'permanent';
  size: number;
  mtimeMs: number;
  checksum: string | undefined;
  checksumAlgorithm: string | undefined;
  chunkSize: number | null;
  sha256: string | undefined;
  changedDuringUpload: boolean;
  error?: TransferError;
}

export interface RemoteChecksum {
  checksum: string;
  checksum_algorithm: string;
  chunk_size?: number | null;
}

export async function uploadOne(client: GatewayClient, req: AgentUploadRequest): Promise<AgentUploadOutcome> {
  const before = await stat(req.localPath);
  try {
    const res = await uploadFile(client, req.localPath, req.remotePath, { signal: req.signal });
    const after = await stat(req.localPath);
    return {
      verdict: 'ok',
      size: res.size,
      mtimeMs: before.mtimeMs,
      checksum: res.sha256,
      checksumAlgorithm: 'sha256',
      chunkSize: null,
      sha256: res.sha256,
      changedDuringUpload: after.mtimeMs !== before.mtimeMs || after.size !== before.size,
    };
  } catch (err) {
    const e = err instanceof GatewayError ? err : undefined;
    return {
      verdict: e ? (e.retryable ? 'transient' : 'permanent') : 'transient',
      size: before.size,
      mtimeMs: before.mtimeMs,
      checksum: undefined,
      checksumAlgorithm: undefined,
      chunkSize: null,
      sha256: undefined,
      changedDuringUpload: false,
      error: { status: e?.status ?? 0, code: e?.errorCode ?? 'CLIENT_ERROR', message: (err as Error).message },
    };
  }
}

/** The local file's checksum computed the way the gateway computed `remote`'s, compared. */
export async function matchesRemoteChecksum(localPath: string, remote: RemoteChecksum): Promise<boolean> {
  if (remote.checksum_algorithm !== 'sha256') return false;
  return (await sha256File(localPath)) === remote.checksum;
}

export interface ScannedFile {
  relPath: string;
  absPath: string;
  size: number;
  mtimeMs: number;
}

/** Every regular file under `root` (streamed; symlinks and special files skipped). */
export async function* scanFiles(
  root: string,
  opts: { exclude: readonly string[]; onError: (absPath: string, err: NodeJS.ErrnoException) => void },
): AsyncGenerator<ScannedFile> {
  const { opendir, lstat } = await import('node:fs/promises');
  const pathMod = await import('node:path');
  const { default: picomatch } = await import('picomatch');
  const exc = opts.exclude.length ? picomatch(opts.exclude as string[], { dot: true }) : () => false;
  const pending = [''];
  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    const dirAbs = rel === '' ? root : pathMod.join(root, rel);
    try {
      for await (const d of await opendir(dirAbs)) {
        const childRel = rel === '' ? d.name : `${rel}/${d.name}`;
        if (exc(childRel)) continue;
        if (d.isDirectory()) pending.push(childRel);
        else if (d.isFile()) {
          try {
            const st = await lstat(pathMod.join(dirAbs, d.name));
            yield { relPath: childRel, absPath: pathMod.join(dirAbs, d.name), size: st.size, mtimeMs: st.mtimeMs };
          } catch (err) {
            opts.onError(pathMod.join(dirAbs, d.name), err as NodeJS.ErrnoException);
          }
        }
      }
    } catch (err) {
      opts.onError(dirAbs, err as NodeJS.ErrnoException);
    }
  }
}
