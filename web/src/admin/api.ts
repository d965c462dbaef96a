import type { RunJson } from '../../../src/runs/json.js';

/**
 * The dashboard's calls to the gateway's admin API. The admin token lives in
 * sessionStorage only (gone when the tab closes), is sent as x-admin-token,
 * and never goes into a URL, a log line or localStorage.
 */
const TOKEN_KEY = 's3up.admin-token';

export function storedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}
export function storeToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}
export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the gateway ({error_code, message, request_id}). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId: string | null,
  ) {
    super(message);
  }
}

let onUnauthorized: (message: string) => void = () => {};
export function setUnauthorizedHandler(fn: (message: string) => void): void {
  onUnauthorized = fn;
}

export async function api<T>(path: string, init: { method?: string; body?: unknown; token?: string } = {}): Promise<T> {
  const token = init.token ?? storedToken();
  const headers: Record<string, string> = {};
  if (token) headers['x-admin-token'] = token;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, {
      method: init.method ?? 'GET',
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      credentials: 'omit',
    });
  } catch {
    throw new ApiError(0, 'NETWORK', 'The gateway cannot be reached. Check the connection and retry.', null);
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text === '' ? null : JSON.parse(text);
  } catch {
    body = null;
  }
  if (!res.ok) {
    const b = (body ?? {}) as { error_code?: string; message?: string; request_id?: string };
    const err = new ApiError(
      res.status,
      b.error_code ?? `HTTP_${res.status}`,
      b.message ?? `HTTP ${res.status}`,
      b.request_id ?? res.headers.get('x-request-id'),
    );
    if (res.status === 401 && init.token === undefined) onUnauthorized(err.message);
    throw err;
  }
  return body as T;
}

/** A run as GET /runs/v1 answers it (the gateway's own type). */
export type Run = RunJson;

export interface UiConfig {
  version: string;
  prune: { enabled: boolean; locked: boolean; reason: string | null; max_runs: number | null; max_age_days: number | null };
  clients: string[];
}

export { RUN_KINDS, RUN_STATUSES } from '../../../src/db/schema.js';
