import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { FS_TMP_DIR } from '../../src/storage/fs.js';
import type { TestServer } from './server.js';

export const MiB = 1024 * 1024;

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Deterministic-looking but random content of `size` bytes. */
export function bytes(size: number): Buffer {
  return randomBytes(size);
}

export async function readAll(stream: Readable | NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks);
}

export type FormPart = { name: string; value: string } | { name: string; filename: string; data: Buffer; contentType?: string };

/** A multipart/form-data body built by hand (so tests control order, names and malformations). */
export function multipart(parts: FormPart[], boundary = `----s3up${randomBytes(8).toString('hex')}`): { body: Buffer; contentType: string; boundary: string } {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    if ('value' in p) {
      chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"\r\n\r\n${p.value}\r\n`));
    } else {
      chunks.push(
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"; filename="${p.filename}"\r\nContent-Type: ${p.contentType ?? 'application/octet-stream'}\r\n\r\n`,
        ),
        p.data,
        Buffer.from('\r\n'),
      );
    }
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}`, boundary };
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

function toRaw(res: http.IncomingMessage, body: Buffer): RawResponse {
  return {
    status: res.statusCode ?? 0,
    headers: res.headers,
    body,
    json<T>() {
      return JSON.parse(body.toString('utf8')) as T;
    },
  };
}

/**
 * One request over node:http (fetch cannot send chunked bodies on demand,
 * omit Content-Length, or show 100-continue). `body` may be a Buffer (sent with
 * Content-Length unless `chunked`) or an async iterable of chunks (chunked).
 */
export function request(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: Buffer | AsyncIterable<Buffer>; chunked?: boolean; timeoutMs?: number } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    const body = opts.body;
    if (Buffer.isBuffer(body) && !opts.chunked && headers['content-length'] === undefined) headers['content-length'] = String(body.length);
    const req = http.request(url, { method: opts.method ?? 'GET', headers, agent: false }, (res) => {
      readAll(res).then((b) => resolve(toRaw(res, b)), reject);
    });
    req.on('error', reject);
    req.setTimeout(opts.timeoutMs ?? 20_000, () => req.destroy(new Error(`request timed out: ${opts.method ?? 'GET'} ${url}`)));
    if (body === undefined) {
      req.end();
    } else if (Buffer.isBuffer(body)) {
      if (opts.chunked) {
        // Several writes so the body really goes out in chunks.
        for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.subarray(i, i + 64 * 1024));
        req.end();
      } else {
        req.end(body);
      }
    } else {
      (async () => {
        for await (const c of body) {
          if (!req.write(c)) await new Promise((r) => req.once('drain', r));
        }
        req.end();
      })().catch((err: unknown) => req.destroy(err as Error));
    }
  });
}

/** Files left in the filesystem backend's staging folder (and its sub-folders). */
export function fsTempFiles(t: TestServer): string[] {
  try {
    return readdirSync(path.join(t.dir, 'uploads', FS_TMP_DIR), { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

/** Read an object straight from the server's store (bypassing HTTP), or null. */
export async function storedObject(t: TestServer, key: string): Promise<Buffer | null> {
  const got = await t.server.ctx.storage.get(key);
  if (!got) return null;
  return readAll(got.body);
}

/** Poll until `fn` returns a truthy value (or fail after `ms`). */
export async function eventually<T>(fn: () => Promise<T | undefined | null | false>, ms = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export function put(t: TestServer, client: string, p: string, body: Buffer, headers: Record<string, string> = {}): Promise<RawResponse> {
  return request(`${t.url}/objects/${p}`, { method: 'PUT', headers: { ...t.auth(client), 'content-type': 'application/octet-stream', ...headers }, body });
}
