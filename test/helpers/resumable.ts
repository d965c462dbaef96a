import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestServer } from './server.js';

export const MiB = 1024 * 1024;

export function md5b64(buf: Buffer): string {
  return createHash('md5').update(buf).digest('base64');
}

export function sha256hex(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** The documented composite checksum: SHA-256 over the chunks' raw SHA-256 digests, "<hex>-<N>". */
export function composite(data: Buffer, chunkSize: number): string {
  const h = createHash('sha256');
  let n = 0;
  for (let off = 0; off < data.length; off += chunkSize) {
    h.update(
      createHash('sha256')
        .update(data.subarray(off, off + chunkSize))
        .digest(),
    );
    n++;
  }
  return `${h.digest('hex')}-${n}`;
}

export function chunkOf(data: Buffer, chunkSize: number, n: number): Buffer {
  return data.subarray((n - 1) * chunkSize, n * chunkSize);
}

export interface InitResponse {
  file_id: string;
  run_id: string;
  s3_key: string;
  chunk_size: number;
  total_chunks: number;
  expires_at: string;
}

export async function initUpload(t: TestServer, client: string, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${t.url}/upload/chunked/init`, {
    method: 'POST',
    headers: { ...t.auth(client), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

export async function init(t: TestServer, client: string, p: string, size: number, extra: Record<string, unknown> = {}): Promise<InitResponse> {
  const res = await initUpload(t, client, { path: p, file_size: size, ...extra });
  if (res.status !== 200) throw new Error(`init failed: ${res.status} ${await res.text()}`);
  return (await res.json()) as InitResponse;
}

export async function sendChunk(t: TestServer, client: string, fileId: string, n: number, data: Buffer, md5: string | null = md5b64(data)): Promise<Response> {
  const headers: Record<string, string> = { ...t.auth(client), 'content-type': 'application/octet-stream' };
  if (md5 !== null) headers['content-md5'] = md5;
  return fetch(`${t.url}/upload/chunked/${fileId}/chunk?chunk_number=${n}`, { method: 'POST', headers, body: data });
}

export async function complete(t: TestServer, client: string, fileId: string): Promise<Response> {
  return fetch(`${t.url}/upload/chunked/${fileId}/complete`, { method: 'POST', headers: t.auth(client) });
}

export async function status(t: TestServer, client: string, fileId: string): Promise<Response> {
  return fetch(`${t.url}/upload/chunked/${fileId}/status`, { headers: t.auth(client) });
}

export async function download(t: TestServer, client: string, p: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(`${t.url}/download?path=${encodeURIComponent(p)}`, { headers: t.auth(client) });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

export function random(size: number): Buffer {
  return randomBytes(size);
}

export function tempDir(prefix = 's3up-resumable-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}
