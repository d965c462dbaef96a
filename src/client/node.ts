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

/** Upload a local file, streamed from disk (re-opened on every retry), verified end to end by SHA-256. */
export async function uploadFile(
  client: GatewayClient,
  file: string,
  remotePath: string,
  opts: { contentType?: string; verify?: boolean; signal?: AbortSignal } = {},
): Promise<UploadResult> {
  const st = await stat(file);
  const sha256 = opts.verify === false ? undefined : await sha256File(file);
  return client.upload(remotePath, () => Readable.toWeb(createReadStream(file, { highWaterMark: 1024 * 1024 })) as ReadableStream<Uint8Array>, {
    size: st.size,
    contentType: opts.contentType,
    sha256,
    signal: opts.signal,
  });
}
