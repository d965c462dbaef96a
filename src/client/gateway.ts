import { errorFromResponse, GatewayError, networkError } from './errors.js';
import { DEFAULT_RETRY, type RetryPolicy, withRetry } from './retry.js';

/**
 * The s3up client SDK: no Node-only imports, so the agent, the bulk CLI and
 * browser pages share it. Requests go through a `Transport` (fetch by default;
 * Node programs pass `nodeTransport()` from ./node-transport.ts). Node file
 * helpers live in ./node.ts.
 */

/** What the client reads of an HTTP answer: a subset of the Fetch `Response`, which every transport gives. */
export interface GatewayResponse {
  readonly ok: boolean;
  readonly status: number;
  readonly statusText: string;
  readonly headers: { get(name: string): string | null };
  /** The body as a stream, for downloads; read it, or cancel it, exactly once. */
  readonly body: ReadableStream<Uint8Array> | null;
  json(): Promise<unknown>;
  text(): Promise<string>;
  arrayBuffer(): Promise<ArrayBuffer>;
}

export interface TransportRequest {
  method: string;
  headers: Record<string, string>;
  body?: Uint8Array | Blob | ReadableStream<Uint8Array> | string;
  signal?: AbortSignal;
}

/**
 * How the client sends one request. The default is `fetch` (browsers and every
 * runtime); Node programs use `nodeTransport()` from `./node-transport.js`
 * (undici's request API: a third of fetch's CPU per request, measured).
 * A network failure (no answer) must reject with a `TypeError` or an error
 * carrying a `code` (ECONNREFUSED, UND_ERR_SOCKET, ...), an abort with an
 * error named `AbortError`.
 */
export type Transport = (url: string, req: TransportRequest) => Promise<GatewayResponse>;

export interface GatewayClientOptions {
  baseUrl: string;
  apiKey: string;
  /** How requests are sent (default: `fetchTransport()`, the global fetch). */
  transport?: Transport;
  retry?: RetryPolicy;
  userAgent?: string;
}

/** A transport over a fetch function. */
export function fetchTransport(f: typeof fetch = globalThis.fetch.bind(globalThis)): Transport {
  return (url, req) => {
    const init: RequestInit & { duplex?: 'half' } = { method: req.method, headers: req.headers, body: req.body, signal: req.signal };
    if (req.body instanceof ReadableStream) init.duplex = 'half';
    return f(url, init);
  };
}

export interface UploadResult {
  success: boolean;
  run_id: string;
  s3_key: string;
  path: string;
  size: number;
  sha256: string;
}

export interface ExistsResult {
  exists: boolean;
  path: string;
  s3_key: string;
  size: number | null;
  sha256: string | null;
  /** One a client can compute locally: the plain SHA-256, or the composite over `chunk_size` pieces. */
  checksum?: string | null;
  checksum_algorithm?: 'sha256' | 'sha256-of-sha256s' | null;
  chunk_size?: number | null;
  content_type?: string | null;
  uploaded_at: string | null;
  run_id?: string | null;
}

/** One object of GET /list. */
export interface ListedObject {
  path: string;
  size: number;
  sha256: string | null;
  checksum: string;
  checksum_algorithm: 'sha256' | 'sha256-of-sha256s';
  chunk_size: number | null;
  content_type: string | null;
  uploaded_at: string;
}

export interface ListPage {
  objects: ListedObject[];
  /** Pass back as `cursor` for the next page; null on the last page. */
  next_cursor: string | null;
}

export interface ChunkedInit {
  file_id: string;
  run_id: string;
  s3_key: string;
  path: string;
  chunk_size: number;
  total_chunks: number;
  expires_at: string;
  checksum_algorithm: string;
}

export interface ChunkedStatus {
  file_id: string;
  status: string;
  path: string;
  file_size: number;
  chunk_size: number;
  total_chunks: number;
  uploaded_chunks: number[];
  missing: number[];
  bytes_received: number;
  expires_at: string;
  checksum: string | null;
}

export interface ChunkedComplete {
  file_id: string;
  run_id: string;
  s3_key: string;
  path: string;
  size: number;
  checksum: string;
  checksum_algorithm: string;
  sha256: string | null;
  status: 'completed';
}

/** A body the SDK can send again on retry: a factory, or bytes/Blob (re-sendable as they are). */
export type UploadBody = Uint8Array | Blob | (() => ReadableStream<Uint8Array> | Uint8Array | Blob);

export interface UploadOptions {
  size?: number;
  contentType?: string;
  /** Hex SHA-256 of the content; the gateway refuses the upload if it differs. */
  sha256?: string;
  signal?: AbortSignal;
}

/** Percent-encode each segment of a client path for a URL. */
export function encodePath(path: string): string {
  const segments = path.split('/');
  // A URL parser resolves "." and ".." segments (even as %2E%2E), so such a path would
  // silently go to another object: refuse it here, with the gateway's own code.
  if (segments.some((seg) => seg === '.' || seg === '..')) {
    throw new GatewayError('invalid path: "." and ".." segments are not allowed', 400, 'INVALID_PATH', undefined, undefined);
  }
  return segments.map(encodeURIComponent).join('/');
}

/** No answer at all (refused, reset, timed out), as fetch (`TypeError`) or undici's request API (`code`) says it. */
function isNetworkError(err: unknown): boolean {
  const e = err as { name?: string; code?: unknown } | undefined;
  if (err instanceof TypeError || e?.name === 'FetchError') return true;
  return e?.name !== 'AbortError' && typeof e?.code === 'string' && e.code !== 'UND_ERR_ABORTED';
}

const json = (body: unknown) => () => JSON.stringify(body);
const JSON_HEADERS = { 'content-type': 'application/json' };

/** The gateway a client talks to when none is named: `s3up-server` on its default port, on this machine. */
export const DEFAULT_SERVER = 'http://127.0.0.1:8080';

export class GatewayClient {
  readonly baseUrl: string;
  private readonly apiKey: string;
  private readonly transport: Transport;
  private readonly retry: RetryPolicy;
  private readonly userAgent: string | undefined;

  constructor(opts: GatewayClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.apiKey = opts.apiKey;
    this.transport = opts.transport ?? fetchTransport();
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.userAgent = opts.userAgent;
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { authorization: `Bearer ${this.apiKey}`, ...extra };
    if (this.userAgent) h['user-agent'] = this.userAgent;
    return h;
  }

  /** One request with retries on network errors and retryable statuses. */
  async request(
    method: string,
    path: string,
    init: { body?: () => TransportRequest['body']; headers?: Record<string, string>; signal?: AbortSignal; retry?: boolean } = {},
  ): Promise<GatewayResponse> {
    const attemptOnce = async (): Promise<GatewayResponse> => {
      let res: GatewayResponse;
      try {
        res = await this.transport(`${this.baseUrl}${path}`, { method, headers: this.headers(init.headers), body: init.body?.(), signal: init.signal });
      } catch (err) {
        if (isNetworkError(err) && !init.signal?.aborted) throw networkError(err);
        throw err;
      }
      if (!res.ok && res.status !== 304) throw await errorFromResponse(res);
      return res;
    };
    if (init.retry === false) return attemptOnce();
    return withRetry(attemptOnce, (err) => err instanceof GatewayError && err.retryable, this.retry, init.signal);
  }

  async health(): Promise<{ status: string; version: string }> {
    const res = await this.request('GET', '/health');
    return (await res.json()) as { status: string; version: string };
  }

  /** PUT /objects/<path> with the raw body. */
  async upload(path: string, body: UploadBody, opts: UploadOptions = {}): Promise<UploadResult> {
    const headers: Record<string, string> = { 'content-type': opts.contentType ?? 'application/octet-stream' };
    if (opts.size !== undefined) headers['content-length'] = String(opts.size);
    if (opts.sha256) headers['x-checksum-sha256'] = opts.sha256;
    const make = typeof body === 'function' ? body : () => body;
    const res = await this.request('PUT', `/objects/${encodePath(path)}`, { body: make, headers, signal: opts.signal });
    return (await res.json()) as UploadResult;
  }

  async exists(path: string, opts: { signal?: AbortSignal } = {}): Promise<ExistsResult> {
    const res = await this.request('GET', `/exists?path=${encodeURIComponent(path)}`, { signal: opts.signal });
    return (await res.json()) as ExistsResult;
  }

  /** GET /list: this client's objects under `prefix`, in path order, a page at a time. */
  async list(opts: { prefix?: string; cursor?: string; limit?: number; signal?: AbortSignal } = {}): Promise<ListPage> {
    const q = new URLSearchParams();
    if (opts.prefix) q.set('prefix', opts.prefix);
    if (opts.cursor) q.set('cursor', opts.cursor);
    if (opts.limit !== undefined) q.set('limit', String(opts.limit));
    const qs = q.toString();
    const res = await this.request('GET', `/list${qs ? `?${qs}` : ''}`, { signal: opts.signal });
    return (await res.json()) as ListPage;
  }

  /** Every object under `prefix`, page after page (one streamed listing: memory is one page). */
  async *listAll(opts: { prefix?: string; pageSize?: number; signal?: AbortSignal } = {}): AsyncGenerator<ListedObject> {
    let cursor: string | undefined;
    do {
      const page = await this.list({ prefix: opts.prefix, cursor, limit: opts.pageSize, signal: opts.signal });
      yield* page.objects;
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
  }

  /** POST /upload/chunked/init (spec 004). `checksum` is the composite the gateway verifies at complete. */
  async chunkedInit(
    init: { path: string; fileSize: number; contentType?: string; checksum?: string; chunkSize?: number },
    opts: { signal?: AbortSignal } = {},
  ): Promise<ChunkedInit> {
    const body: Record<string, unknown> = { path: init.path, file_size: init.fileSize };
    if (init.contentType) body.content_type = init.contentType;
    if (init.checksum) body.checksum = init.checksum;
    if (init.chunkSize) body.chunk_size = init.chunkSize;
    const res = await this.request('POST', '/upload/chunked/init', { body: json(body), headers: JSON_HEADERS, signal: opts.signal });
    return (await res.json()) as ChunkedInit;
  }

  /** Send chunk `n` (1-based) with its SHA-256 (hex), which the gateway verifies. */
  async chunkedPut(
    fileId: string,
    n: number,
    bytes: Uint8Array,
    sha256: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<{ chunk_number: number; status: string; size: number }> {
    const res = await this.request('POST', `/upload/chunked/${encodeURIComponent(fileId)}/chunk?chunk_number=${n}`, {
      body: () => bytes,
      headers: { 'content-type': 'application/octet-stream', 'x-checksum-sha256': sha256 },
      signal: opts.signal,
    });
    return (await res.json()) as { chunk_number: number; status: string; size: number };
  }

  async chunkedStatus(fileId: string, opts: { signal?: AbortSignal } = {}): Promise<ChunkedStatus> {
    const res = await this.request('GET', `/upload/chunked/${encodeURIComponent(fileId)}/status`, { signal: opts.signal });
    return (await res.json()) as ChunkedStatus;
  }

  async chunkedComplete(fileId: string, opts: { signal?: AbortSignal } = {}): Promise<ChunkedComplete> {
    const res = await this.request('POST', `/upload/chunked/${encodeURIComponent(fileId)}/complete`, { signal: opts.signal });
    return (await res.json()) as ChunkedComplete;
  }

  async chunkedAbort(fileId: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    await this.request('DELETE', `/upload/chunked/${encodeURIComponent(fileId)}`, { signal: opts.signal });
  }

  /** GET /download; the caller reads the body. `range` is inclusive. */
  async download(path: string, opts: { range?: { start: number; end?: number }; signal?: AbortSignal } = {}): Promise<GatewayResponse> {
    const headers: Record<string, string> = {};
    if (opts.range) headers.range = `bytes=${opts.range.start}-${opts.range.end ?? ''}`;
    return this.request('GET', `/download?path=${encodeURIComponent(path)}`, { headers, signal: opts.signal });
  }

  async delete(path: string): Promise<void> {
    await this.request('DELETE', `/objects/${encodePath(path)}`);
  }
}
