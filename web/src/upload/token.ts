/**
 * The upload token a client's web app hands to this page, in the URL fragment
 * (`/upload#token=s3upt....`: a fragment never reaches a server or its logs).
 * The page moves it to sessionStorage (this tab only, kept across a reload so
 * uploads resume) and removes it from the address bar.
 */
const KEY = 's3up.upload-token';

export interface TokenInfo {
  token: string;
  client: string;
  prefix: string;
  maxSize: number;
  expiresAt: number;
}

export function decodeToken(token: string): TokenInfo | null {
  if (!token.startsWith('s3upt.')) return null;
  const payload = token.slice('s3upt.'.length).split('.')[0] ?? '';
  try {
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    const c = JSON.parse(json) as { c: string; p: string; m: number; e: number };
    return { token, client: c.c, prefix: c.p, maxSize: c.m, expiresAt: c.e };
  } catch {
    return null;
  }
}

export function takeToken(): TokenInfo | null {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  const fromUrl = hash.get('token');
  if (fromUrl) {
    sessionStorage.setItem(KEY, fromUrl);
    history.replaceState(null, '', location.pathname + location.search);
  }
  const token = sessionStorage.getItem(KEY);
  return token ? decodeToken(token) : null;
}

export function saveToken(token: string): TokenInfo | null {
  const info = decodeToken(token);
  if (info) sessionStorage.setItem(KEY, token);
  return info;
}

export function clearToken(): void {
  sessionStorage.removeItem(KEY);
}
