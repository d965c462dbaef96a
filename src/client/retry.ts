export interface RetryPolicy {
  /** Attempts in all, including the first. */
  attempts: number;
  /** First delay, ms; doubles each time, with full jitter, up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** The longest Retry-After honoured, ms (a server asking for more gets this). Default 60 s. */
  maxRetryAfterMs?: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 250, maxDelayMs: 10_000, maxRetryAfterMs: 60_000 };

/** Exponential backoff with full jitter: uniform in [0, min(max, base * 2^attempt)). */
export function backoffDelay(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  return Math.floor(random() * cap);
}

/**
 * The wait before the next attempt: the server's Retry-After when it gave one
 * (capped at maxRetryAfterMs), never less than the jittered backoff.
 */
export function retryDelay(policy: RetryPolicy, attempt: number, err: unknown, random: () => number = Math.random): number {
  const backoff = backoffDelay(policy, attempt, random);
  const asked = (err as { retryAfterMs?: unknown })?.retryAfterMs;
  if (typeof asked !== 'number' || !Number.isFinite(asked)) return backoff;
  return Math.max(backoff, Math.min(asked, policy.maxRetryAfterMs ?? 60_000));
}

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/** Run `fn` until it succeeds, `isRetryable` says no, or the attempts are used up. */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  isRetryable: (err: unknown) => boolean,
  policy: RetryPolicy = DEFAULT_RETRY,
  signal?: AbortSignal,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt + 1 >= policy.attempts || !isRetryable(err) || signal?.aborted) throw err;
      await sleep(retryDelay(policy, attempt, err), signal);
    }
  }
}
