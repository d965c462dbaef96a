/**
 * Whether a failure is worth trying again. One judgement for every client
 * (the SDK's own retries, the agent, the bulk CLI):
 * - transient: the network (status 0), 408, 429, any 5xx (a store or database
 *   that is down, a gateway shutting down, a full store: 503, 507, 502, 500),
 *   and 409 CONFLICT (another request holds the same chunk or key for a moment);
 * - permanent: every other 4xx (wrong key, invalid path, over the limit,
 *   checksum mismatch, unknown or expired upload session, ...).
 */
export type Verdict = 'transient' | 'permanent';

export function judge(status: number, errorCode?: string): Verdict {
  if (status === 0 || status === 408 || status === 429 || status >= 500) return 'transient';
  if (status === 409 && errorCode === 'CONFLICT') return 'transient';
  return 'permanent';
}

/** Retry-After (seconds or an HTTP date) in milliseconds; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value === null || value === undefined || value.trim() === '') return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** A failure reported by the gateway (its error contract) or by the network. */
export class GatewayError extends Error {
  /** What the server asked for in Retry-After, ms (429, 503). */
  readonly retryAfterMs: number | undefined;

  constructor(
    message: string,
    readonly status: number,
    readonly errorCode: string,
    readonly requestId: string | undefined,
    readonly body: Record<string, unknown> | undefined,
    retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'GatewayError';
    this.retryAfterMs = retryAfterMs;
  }

  get verdict(): Verdict {
    return judge(this.status, this.errorCode);
  }

  get transient(): boolean {
    return this.verdict === 'transient';
  }

  get permanent(): boolean {
    return this.verdict === 'permanent';
  }

  /** Worth trying again (the same as `transient`). */
  get retryable(): boolean {
    return this.transient;
  }
}

export async function errorFromResponse(res: {
  status: number;
  statusText: string;
  headers: { get(name: string): string | null };
  json(): Promise<unknown>;
}): Promise<GatewayError> {
  let body: Record<string, unknown> | undefined;
  try {
    body = (await res.json()) as Record<string, unknown>;
  } catch {
    body = undefined;
  }
  const code = typeof body?.error_code === 'string' ? body.error_code : `HTTP_${res.status}`;
  const message = typeof body?.message === 'string' ? body.message : res.statusText || `HTTP ${res.status}`;
  const requestId = typeof body?.request_id === 'string' ? body.request_id : (res.headers.get('x-request-id') ?? undefined);
  return new GatewayError(message, res.status, code, requestId, body, parseRetryAfter(res.headers.get('retry-after')));
}

/** A network failure (no answer at all) in the error contract: status 0, transient. */
export function networkError(err: unknown): GatewayError {
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  const code = (err as { code?: unknown })?.code;
  const detail = cause?.code ?? cause?.message ?? (typeof code === 'string' ? code : undefined) ?? (err as Error)?.message ?? String(err);
  return new GatewayError(`network error: ${detail}`, 0, 'NETWORK_ERROR', undefined, undefined);
}
