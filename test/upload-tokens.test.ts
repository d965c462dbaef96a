// Upload tokens (POST /tokens): signed, expiring, scoped to one client, a path prefix and a
// size limit; accepted on the upload routes only. And the one CORS policy: preflights without
// a key, CORS headers on refusals, per-client origins, @tus/server following the same policy.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as tus from 'tus-js-client';
import { createPgDatabase, pgSkip } from './helpers/pg.js';
import { ADMIN_TOKEN, newKey, startTestServer, type TestServer } from './helpers/server.js';

const SITE = 'https://app.example.com';
const OTHER_SITE = 'https://evil.example.net';

async function issue(ts: TestServer, client: string, body: Record<string, unknown>): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${ts.url}/tokens`, {
    method: 'POST',
    headers: { ...ts.auth(client), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

function tusUpload(url: string, token: string, path: string, data: Buffer): Promise<{ ok: true; url: string } | { ok: false; status: number; body: string }> {
  return new Promise((resolve) => {
    const up = new tus.Upload(data, {
      endpoint: `${url}/tus/`,
      headers: bearer(token),
      metadata: { path, filetype: 'application/octet-stream' },
      chunkSize: 64 * 1024,
      retryDelays: [],
      removeFingerprintOnSuccess: true,
      onSuccess: () => resolve({ ok: true, url: up.url ?? '' }),
      onError: (err) => {
        const e = err as tus.DetailedError;
        resolve({ ok: false, status: e.originalResponse?.getStatus() ?? 0, body: e.originalResponse?.getBody() ?? String(err) });
      },
    });
    up.start();
  });
}

describe('upload tokens', () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer({ clients: [{ name: 'alice', max_file_size_mb: 1 }, { name: 'bob' }] });
  });
  after(async () => ts?.stop());

  test('POST /tokens needs a client key and validates what it is asked for', async () => {
    const none = await fetch(`${ts.url}/tokens`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(none.status, 401);
    const admin = await fetch(`${ts.url}/tokens`, {
      method: 'POST',
      headers: { 'x-admin-token': ADMIN_TOKEN, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(admin.status, 401);
    assert.equal((await issue(ts, 'alice', { path_prefix: '../bob' })).status, 400);
    assert.equal((await issue(ts, 'alice', { max_size_bytes: 2 * 1024 * 1024 })).status, 400); // over alice's 1 MiB
    assert.equal((await issue(ts, 'alice', { ttl_seconds: 10 * 86400 })).status, 400);
    assert.equal((await issue(ts, 'alice', { unknown: 1 })).status, 400);
    const ok = await issue(ts, 'alice', { path_prefix: 'users/42/', max_size_bytes: 1000, ttl_seconds: 60 });
    assert.equal(ok.status, 200);
    assert.equal(ok.json.client, 'alice');
    assert.equal(ok.json.path_prefix, 'users/42');
    assert.equal(ok.json.max_size_bytes, 1000);
    assert.match(String(ok.json.token), /^s3upt\./);
    assert.ok(Date.parse(String(ok.json.expires_at)) > Date.now());
  });

  test('a token uploads inside its prefix (PUT, form, tus) and nowhere else', async () => {
    const { json } = await issue(ts, 'alice', { path_prefix: 'users/42', max_size_bytes: 10_000 });
    const token = String(json.token);
    const put = await fetch(`${ts.url}/objects/users/42/a.txt`, { method: 'PUT', headers: bearer(token), body: 'hello' });
    assert.equal(put.status, 200);
    assert.equal(((await put.json()) as { s3_key: string }).s3_key, 'backups/alice/users/42/a.txt');
    // Outside the prefix: a sibling folder, a prefix-lookalike, the root, a traversal.
    for (const p of ['users/43/a.txt', 'users/420/a.txt', 'a.txt', 'users/42/../43/a.txt']) {
      const res = await fetch(`${ts.url}/objects/${p}`, { method: 'PUT', headers: bearer(token), body: 'x' });
      assert.ok(res.status === 403 || res.status === 400, `${p}: ${res.status}`);
    }
    const form = new FormData();
    form.append('path', 'users/7/b.txt');
    form.append('file', new Blob(['x']), 'b.txt');
    assert.equal((await fetch(`${ts.url}/upload`, { method: 'POST', headers: bearer(token), body: form })).status, 403);
    const inside = await tusUpload(ts.url, token, 'users/42/t.bin', Buffer.alloc(5000, 1));
    assert.equal(inside.ok, true);
    const outside = await tusUpload(ts.url, token, 'users/9/t.bin', Buffer.alloc(10, 1));
    assert.equal(outside.ok, false);
    assert.equal(outside.ok === false && outside.status, 403);
    const exists = await fetch(`${ts.url}/exists?path=users/42/t.bin`, { headers: ts.auth('alice') });
    assert.equal(((await exists.json()) as { size: number }).size, 5000);
  });

  test('a token cannot exceed its size limit', async () => {
    const { json } = await issue(ts, 'alice', { path_prefix: 'small', max_size_bytes: 100 });
    const token = String(json.token);
    const big = await fetch(`${ts.url}/objects/small/big.bin`, { method: 'PUT', headers: bearer(token), body: Buffer.alloc(101) });
    assert.equal(big.status, 413);
    const tusBig = await tusUpload(ts.url, token, 'small/big.bin', Buffer.alloc(101));
    assert.equal(tusBig.ok, false);
    assert.equal(tusBig.ok === false && tusBig.status, 413);
    const fits = await fetch(`${ts.url}/objects/small/ok.bin`, { method: 'PUT', headers: bearer(token), body: Buffer.alloc(100) });
    assert.equal(fits.status, 200);
  });

  test('a token cannot outlive its expiry, and a forged or altered one is refused', async () => {
    const { json } = await issue(ts, 'alice', { path_prefix: 'x', ttl_seconds: 1 });
    const token = String(json.token);
    // Wait for the expiry to pass (a condition, not a timed assertion).
    while (Date.now() <= Date.parse(String(json.expires_at))) await new Promise((r) => setTimeout(r, 100));
    const late = await fetch(`${ts.url}/objects/x/late.txt`, { method: 'PUT', headers: bearer(token), body: 'x' });
    assert.equal(late.status, 401);
    assert.match(((await late.json()) as { message: string }).message, /expired/);

    const good = String((await issue(ts, 'alice', { path_prefix: 'x' })).json.token);
    const [head, payload, sig] = good.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    const widened = Buffer.from(JSON.stringify({ ...claims, p: '' })).toString('base64url');
    for (const forged of [`${head}.${widened}.${sig}`, `${head}.${payload}.${sig.slice(0, -2)}AA`, `${head}.${payload}`, 's3upt.garbage']) {
      const res = await fetch(`${ts.url}/objects/x/f.txt`, { method: 'PUT', headers: bearer(forged), body: 'x' });
      assert.equal(res.status, 401, forged);
    }
  });

  test('a token opens no admin, read, record or other-client route', async () => {
    const token = String((await issue(ts, 'alice', { path_prefix: 'users/42' })).json.token);
    const h = bearer(token);
    const checks: Array<[string, string, number]> = [
      ['GET', '/runs/v1', 403],
      ['GET', '/exists?path=users/42/a.txt', 403],
      ['GET', '/download?path=users/42/a.txt', 403],
      ['DELETE', '/objects/users/42/a.txt', 403],
      ['GET', '/config', 403],
      ['POST', '/tokens', 403],
      ['GET', '/clients', 401],
      ['GET', '/api/admin/feature-flags/config', 401],
      ['GET', '/api/admin/overview', 401],
    ];
    for (const [method, path, status] of checks) {
      const res = await fetch(`${ts.url}${path}`, {
        method,
        headers: { ...h, ...(method === 'POST' ? { 'content-type': 'application/json' } : {}) },
        body: method === 'POST' ? '{}' : undefined,
      });
      assert.equal(res.status, status, `${method} ${path}`);
    }
    // Bob's uploads are not alice's token's: the token writes as alice only.
    const put = await fetch(`${ts.url}/objects/users/42/c.txt`, { method: 'PUT', headers: h, body: 'c' });
    assert.equal(((await put.json()) as { s3_key: string }).s3_key, 'backups/alice/users/42/c.txt');
    const bobSees = await fetch(`${ts.url}/exists?path=users/42/c.txt`, { headers: ts.auth('bob') });
    assert.equal(((await bobSees.json()) as { exists: boolean }).exists, false);
  });

  test('a token revoked by its client is refused at once, mid-upload too; another client cannot revoke it', async () => {
    await revocationScenario(ts, ts);
  });

  test('telemetry upload_complete from a token is checked against what is stored', async () => {
    const token = String((await issue(ts, 'alice', { path_prefix: 'users/42' })).json.token);
    await fetch(`${ts.url}/objects/users/42/t.txt`, { method: 'PUT', headers: bearer(token), body: '12345' });
    const post = (body: unknown) =>
      fetch(`${ts.url}/telemetry`, { method: 'POST', headers: { ...bearer(token), 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const ok = await post({ event: 'upload_complete', key: 'users/42/t.txt', size: 5, durationMs: 12 });
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as { outcome: string }).outcome, 'verified');
    const wrong = await post({ event: 'upload_complete', key: 'users/42/t.txt', size: 6 });
    assert.equal(((await wrong.json()) as { outcome: string }).outcome, 'size_mismatch');
    assert.equal((await post({ event: 'upload_complete', key: 'users/1/t.txt', size: 5 })).status, 403);
    assert.equal((await post({ event: 'upload_complete', key: 'users/42/none.txt', size: 5 })).status, 404);
  });
});

describe('CORS: one policy for every route and its refusals', () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer({ clients: [{ name: 'alice', cors_origins: [SITE] }, { name: 'bob' }] });
  });
  after(async () => ts?.stop());

  const preflight = (
    path: string,
    origin: string,
    method = 'POST',
    headers = 'authorization,x-api-key,x-request-id,tus-resumable,upload-length,upload-metadata',
  ) =>
    fetch(`${ts.url}${path}`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers } });

  test('preflights are answered without a key for an allowed origin, on tus, upload, read and token routes', async () => {
    for (const [path, method] of [
      ['/tus/', 'POST'],
      ['/tus/abc', 'PATCH'],
      ['/upload', 'POST'],
      ['/objects/a/b.txt', 'PUT'],
      ['/download?path=a', 'GET'],
      ['/exists?path=a', 'GET'],
      ['/tokens', 'POST'],
      ['/telemetry', 'POST'],
    ] as const) {
      const res = await preflight(path, SITE, method);
      assert.equal(res.status, 204, `${method} ${path}`);
      assert.equal(res.headers.get('access-control-allow-origin'), SITE);
      const allowed = (res.headers.get('access-control-allow-headers') ?? '').toLowerCase();
      for (const h of ['authorization', 'x-api-key', 'x-request-id', 'tus-resumable', 'upload-offset', 'upload-metadata']) assert.ok(allowed.includes(h), h);
      assert.ok((res.headers.get('access-control-allow-methods') ?? '').includes(method));
    }
  });

  test('an origin nobody allowed gets no CORS headers, from the gateway or from @tus/server', async () => {
    const pre = await preflight('/tus/', OTHER_SITE);
    assert.equal(pre.headers.get('access-control-allow-origin'), null);
    const post = await fetch(`${ts.url}/tus/`, {
      method: 'POST',
      headers: {
        ...ts.auth('alice'),
        origin: OTHER_SITE,
        'tus-resumable': '1.0.0',
        'upload-length': '1',
        'upload-metadata': `path ${Buffer.from('o.bin').toString('base64')}`,
      },
    });
    assert.equal(post.headers.get('access-control-allow-origin'), null);
    // A key whose client does not list the origin is refused (the browser would have been allowed by the preflight).
    assert.equal(post.status, 403);
    // The same request from alice's site works, and @tus/server names the origin, not `*`.
    const okPost = await fetch(`${ts.url}/tus/`, {
      method: 'POST',
      headers: {
        ...ts.auth('alice'),
        origin: SITE,
        'tus-resumable': '1.0.0',
        'upload-length': '1',
        'upload-metadata': `path ${Buffer.from('o.bin').toString('base64')}`,
      },
    });
    assert.equal(okPost.status, 201);
    assert.equal(okPost.headers.get('access-control-allow-origin'), SITE);
    assert.ok((okPost.headers.get('access-control-expose-headers') ?? '').toLowerCase().includes('location'));
    assert.ok((okPost.headers.get('access-control-expose-headers') ?? '').toLowerCase().includes('x-request-id'));
    // Bob has no origins: from alice's site his key is refused.
    const bob = await fetch(`${ts.url}/exists?path=a`, { headers: { ...ts.auth('bob'), origin: SITE } });
    assert.equal(bob.status, 403);
    assert.equal(bob.headers.get('access-control-allow-origin'), SITE);
  });

  test('refusals carry CORS headers: a wrong key (401) on tus and on PUT, a size refusal (413)', async () => {
    for (const [method, path] of [
      ['POST', '/tus/'],
      ['PUT', '/objects/a.txt'],
      ['GET', '/download?path=a.txt'],
    ] as const) {
      const res = await fetch(`${ts.url}${path}`, {
        method,
        headers: { authorization: 'Bearer sk_wrong_key_000000000000000000000000', origin: SITE, 'tus-resumable': '1.0.0', 'upload-length': '1' },
        body: method === 'PUT' ? 'x' : undefined,
      });
      assert.equal(res.status, 401, `${method} ${path}`);
      assert.equal(res.headers.get('access-control-allow-origin'), SITE);
      assert.ok((res.headers.get('access-control-expose-headers') ?? '').includes('x-request-id'));
      assert.equal(((await res.json()) as { error_code: string }).error_code, 'UNAUTHORIZED');
    }
    const big = await fetch(`${ts.url}/objects/big.bin`, {
      method: 'PUT',
      headers: { ...ts.auth('alice'), origin: SITE },
      body: Buffer.alloc(101 * 1024 * 1024),
    });
    assert.equal(big.status, 413);
    assert.equal(big.headers.get('access-control-allow-origin'), SITE);
  });

  test('a plain OPTIONS (tus discovery) still reaches @tus/server; admin routes get no CORS', async () => {
    const disc = await fetch(`${ts.url}/tus/`, { method: 'OPTIONS' });
    assert.equal(disc.status, 204);
    assert.equal(disc.headers.get('tus-version'), '1.0.0');
    const admin = await fetch(`${ts.url}/clients`, { headers: { 'x-admin-token': ADMIN_TOKEN, origin: SITE } });
    assert.equal(admin.status, 200);
    assert.equal(admin.headers.get('access-control-allow-origin'), null);
  });
});

/**
 * Revocation as a client sees it, issued and revoked through `a`, used through
 * `b` (the same gateway, or another on the same database).
 */
async function revocationScenario(a: TestServer, b: TestServer): Promise<void> {
  const issued = await issue(a, 'alice', { path_prefix: 'rev' });
  const token = String(issued.json.token);
  const id = String(issued.json.token_id);
  assert.match(id, /^[0-9a-f-]{36}$/);
  const other = String((await issue(a, 'alice', { path_prefix: 'rev' })).json.token);
  const revoke = (g: TestServer, headers: Record<string, string>, tokenId: string) => fetch(`${g.url}/tokens/${tokenId}`, { method: 'DELETE', headers });
  // A tus upload under way with the token.
  const created = await fetch(`${b.url}/tus/`, {
    method: 'POST',
    headers: { ...bearer(token), 'tus-resumable': '1.0.0', 'upload-length': '2000', 'upload-metadata': `path ${Buffer.from('rev/t.bin').toString('base64')}` },
  });
  assert.equal(created.status, 201, await created.clone().text());
  const location = new URL(String(created.headers.get('location')), b.url).toString();
  const patch = (offset: number, body: Buffer) =>
    fetch(location, {
      method: 'PATCH',
      headers: { ...bearer(token), 'tus-resumable': '1.0.0', 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream' },
      body,
    });
  assert.equal((await patch(0, Buffer.alloc(1000, 1))).status, 204);
  // Another client naming this id revokes nothing of alice's (and learns nothing: the same answer).
  const bobs = await revoke(a, a.auth('bob'), id);
  assert.equal(bobs.status, 200);
  assert.equal((await fetch(`${b.url}/objects/rev/still.txt`, { method: 'PUT', headers: bearer(token), body: 'ok' })).status, 200);
  // A token cannot revoke; an id that is not one is refused.
  assert.equal((await revoke(a, bearer(other), id)).status, 403);
  assert.equal((await revoke(a, a.auth('alice'), 'not-a-token-id')).status, 400);
  // Alice revokes it (twice: the same answer).
  for (let i = 0; i < 2; i++) {
    const res = await revoke(a, a.auth('alice'), id);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { token_id: string; revoked: boolean; revoked_until: string };
    assert.equal(body.token_id, id);
    assert.equal(body.revoked, true);
    assert.ok(Date.parse(body.revoked_until) > Date.now());
  }
  const refused = await fetch(`${b.url}/objects/rev/after.txt`, { method: 'PUT', headers: bearer(token), body: 'no' });
  assert.equal(refused.status, 401);
  const why = (await refused.json()) as { error_code: string; message: string };
  assert.equal(why.error_code, 'UNAUTHORIZED');
  assert.match(why.message, /revoked/);
  const late = await patch(1000, Buffer.alloc(1000, 2));
  assert.equal(late.status, 401, 'the upload under way stops with its token');
  // The client's other tokens and its key are untouched.
  assert.equal((await fetch(`${b.url}/objects/rev/other.txt`, { method: 'PUT', headers: bearer(other), body: 'yes' })).status, 200);
  assert.equal((await fetch(`${b.url}/objects/rev/key.txt`, { method: 'PUT', headers: b.auth('alice'), body: 'key' })).status, 200);
}

describe('upload token revocation across gateways (PostgreSQL)', { skip: pgSkip }, () => {
  test('revoked through one gateway, refused by the other', async () => {
    const db = await createPgDatabase();
    // The same clients, keys and token secret on both gateways.
    const keys = { alice: newKey(), bob: newKey() };
    const extra = {
      uploads: { token_secret: 'a-token-secret-both-gateways-share-0123456789' },
      clients: Object.entries(keys).map(([name, api_key]) => ({ name, api_key, max_file_size_mb: 100 })),
    };
    const a = await startTestServer({ databaseUrl: db.url, extra });
    const b = await startTestServer({ databaseUrl: db.url, extra });
    const auth = (client: string) => bearer(keys[client as keyof typeof keys]);
    try {
      await revocationScenario({ ...a, auth }, { ...b, auth });
    } finally {
      await b.stop();
      await a.stop();
      await db.drop();
    }
  });
});
