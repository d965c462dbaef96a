import { createHmac } from 'node:crypto';
import { judge, parseRetryAfter } from '../client/errors.js';
import { type RetryPolicy, retryDelay, sleep } from '../client/retry.js';
import type { SessionRow } from './state.js';

/** The JSON a downstream system receives when a session is done (spec 003's fields). */
export interface TriggerPayload {
  session_id: string;
  project: string;
  bucket_name: string | null;
  s3_prefix: string;
  target: string;
  status: string;
  total_files: number;
  files_uploaded: number;
  files_skipped: number;
  files_failed: number;
  bytes: number;
  started_at: string;
  finished_at: string | null;
}

export function triggerPayload(s: SessionRow, project: string): TriggerPayload {
  return {
    session_id: s.session_id,
    project,
    bucket_name: s.bucket_name,
    s3_prefix: s.s3_prefix,
    target: s.target,
    status: s.status,
    total_files: Number(s.total_files),
    files_uploaded: Number(s.files_uploaded),
    files_skipped: Number(s.files_skipped),
    files_failed: Number(s.files_failed),
    bytes: Number(s.bytes_uploaded),
    started_at: new Date(Number(s.started_at)).toISOString(),
    finished_at: s.finished_at === null ? null : new Date(Number(s.finished_at)).toISOString(),
  };
}

export const SIGNATURE_HEADER = 'x-s3up-signature';
export const TIMESTAMP_HEADER = 'x-s3up-timestamp';

/**
 * The signature a receiver recomputes: hex HMAC-SHA256 with the shared secret
 * over `<timestamp>.<raw body>`, sent as `X-S3up-Signature: sha256=<hex>` with
 * `X-S3up-Timestamp: <unix seconds>` (reject old timestamps to stop replays).
 */
export function signTrigger(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

export interface TriggerResult {
  ok: boolean;
  status: number;
  attempts: number;
  message: string;
}

/** POST the payload; transient failures (network, 408, 429, 5xx) are retried with backoff, honouring Retry-After. */
export async function sendTrigger(
  url: string,
  payload: TriggerPayload,
  opts: { secret?: string; retry?: RetryPolicy; signal?: AbortSignal; fetch?: typeof fetch; timeoutMs?: number } = {},
): Promise<TriggerResult> {
  const policy = opts.retry ?? { attempts: 5, baseDelayMs: 500, maxDelayMs: 15_000, maxRetryAfterMs: 60_000 };
  const body = JSON.stringify(payload);
  const doFetch = opts.fetch ?? fetch;
  let last: TriggerResult = { ok: false, status: 0, attempts: 0, message: 'not sent' };
  for (let attempt = 0; attempt < policy.attempts; attempt++) {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 's3up-push' };
    if (opts.secret) {
      const ts = Math.floor(Date.now() / 1000);
      headers[TIMESTAMP_HEADER] = String(ts);
      headers[SIGNATURE_HEADER] = signTrigger(opts.secret, ts, body);
    }
    let retryAfterMs: number | undefined;
    try {
      const signals = [AbortSignal.timeout(opts.timeoutMs ?? 30_000), ...(opts.signal ? [opts.signal] : [])];
      const res = await doFetch(url, { method: 'POST', headers, body, signal: AbortSignal.any(signals) });
      const text = await res.text().catch(() => '');
      last = {
        ok: res.ok,
        status: res.status,
        attempts: attempt + 1,
        message: res.ok ? 'delivered' : `HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`,
      };
      if (res.ok || judge(res.status) === 'permanent') return last;
      retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      last = { ok: false, status: 0, attempts: attempt + 1, message: `network error: ${cause ?? (err as Error).message}` };
    }
    if (attempt + 1 < policy.attempts) await sleep(retryDelay(policy, attempt, { retryAfterMs }), opts.signal);
  }
  return last;
}
