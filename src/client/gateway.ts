import { errorFromResponse, GatewayError } from './errors.js';
import { DEFAULT_RETRY, type RetryPolicy, withRetry } from './retry.js';

/**
 * The s3up client SDK: plain fetch, no Node-only imports, so the agent, the
 * bulk CLI and browser pages share it. Node file helpers live in ./node.ts.
 */
export interface GatewayClientOptions {
  baseUrl: string;
  apiKey: string;
  fetch?: typeof fetch;
  retry?: RetryPolicy;
  userAgent?: string;
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
  uploaded_at: string | null;
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

function isNetworkError(err: unknown): boolean {
  return err instanceof TypeError || (err as { name?: string })?.name === 'FetchError';
}

export class GatewayClient {
  readonly baseUrl: string;
  private readonly apiKey: string;
  private readonly fetchImpl: typeof fetch;
  private readonly retry: RetryPolicy;
  private readonly userAgent: string | undefined;

  constructor(opts: GatewayClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.apiKey = opts.apiKey;
    this.fetchImpl = opts.fetch ?? globalThis.fetch.bind(globalThis);
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
    init: { body?: () => RequestInit['body']; headers?: Record<string, string>; signal?: AbortSignal; retry?: boolean } = {},
  ): Promise<Response> {
    const attemptOnce = async (): Promise<Response> => {
      let res: Response;
      try {
        const body = init.body?.();
        const req: RequestInit & { duplex?: 'half' } = { method, headers: this.headers(init.headers), body, signal: init.signal };
        if (body instanceof ReadableStream) req.duplex = 'half';
        res = await this.fetchImpl(`${this.baseUrl}${path}`, req);
      } catch (err) {
        if (isNetworkError(err)) throw new GatewayError(`network error: ${(err as Error).message}`, 0, 'NETWORK_ERROR', undefined, undefined);
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
    const res = await this.request('PUT', `/objects/${encodePath(path)}`, { body: make as () => RequestInit['body'], headers, signal: opts.signal });
    return (await res.json()) as UploadResult;
  }

  async exists(path: string): Promise<ExistsResult> {
    const res = await this.request('GET', `/exists?path=${encodeURIComponent(path)}`);
    return (await res.json()) as ExistsResult;
  }

  /** GET /download; the caller reads the body. `range` is inclusive. */
  async download(path: string, opts: { range?: { start: number; end?: number }; signal?: AbortSignal } = {}): Promise<Response> {
    const headers: Record<string, string> = {};
    if (opts.range) headers.range = `bytes=${opts.range.start}-${opts.range.end ?? ''}`;
    return this.request('GET', `/download?path=${encodeURIComponent(path)}`, { headers, signal: opts.signal });
  }

  async delete(path: string): Promise<void> {
    await this.request('DELETE', `/objects/${encodePath(path)}`);
  }
}
