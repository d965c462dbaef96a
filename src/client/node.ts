import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { GatewayClient, UploadResult } from './gateway.js';

/** SHA-256 of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * A re-openable body for a local file (a fresh stream on every retry), exactly
 * `size` bytes from the start (a file that grew since it was hashed is cut at
 * the hashed size). `onBytes` sees the running count of each attempt.
 */
export function fileBody(file: string, size: number, onBytes?: (sent: number) => void): () => ReadableStream<Uint8Array> | Uint8Array {
  return () => {
    if (size === 0) return new Uint8Array(0);
    let sent = 0;
    const stream = createReadStream(file, { highWaterMark: Math.min(1024 * 1024, size), start: 0, end: size - 1 });
    if (onBytes) {
      stream.on('data', (c) => {
        sent += (c as Buffer).length;
        onBytes(sent);
      });
    }
    return Readable.toWeb(stream) as ReadableStream<Uint8Array>;
  };
}

/** Upload a local file, streamed from disk (re-opened on every retry), verified end to end by SHA-256. */
export async function uploadFile(
  client: GatewayClient,
  file: string,
  remotePath: string,
  opts: { contentType?: string; verify?: boolean; signal?: AbortSignal } = {},
): Promise<UploadResult> {
  const st = await stat(file);
  const sha256 = opts.verify === false ? undefined : await sha256File(file);
  return client.upload(remotePath, fileBody(file, st.size), {
    size: st.size,
    contentType: opts.contentType,
    sha256,
    signal: opts.signal,
  });
}
