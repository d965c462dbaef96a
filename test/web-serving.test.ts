// The built web pages as the gateway serves them: content types, cache headers, the CSP,
// the single-page fallback under /admin, and nothing outside dist/web reachable.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ensureWebBuild } from './helpers/browser.js';
import { startTestServer, type TestServer } from './helpers/server.js';

describe('web pages served by the gateway', () => {
  let ts: TestServer;
  before(async () => {
    ensureWebBuild();
    ts = await startTestServer();
  });
  after(async () => ts?.stop());

  test('/admin, any /admin/... path and /upload answer their HTML with a strict CSP, never cached', async () => {
    for (const path of ['/admin', '/admin/', '/admin/runs', '/admin/runs?status=failed', '/admin/some/deep/link', '/upload']) {
      const res = await fetch(`${ts.url}${path}`);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
      assert.equal(res.headers.get('cache-control'), 'no-cache');
      const csp = res.headers.get('content-security-policy') ?? '';
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /script-src 'self'(;|$)/);
      assert.match(csp, /frame-ancestors 'none'/);
      assert.ok(!csp.includes('unsafe'), csp);
      const html = await res.text();
      assert.match(html, path.startsWith('/upload') ? /<title>Upload files<\/title>/ : /<title>s3up admin<\/title>/);
      assert.ok(!/<script>(?!<)/.test(html), 'no inline script');
    }
  });

  test('hashed assets: right content type, cached for a year; unknown ones 404; no way out of dist/web', async () => {
    const html = await (await fetch(`${ts.url}/admin`)).text();
    const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1] as string);
    assert.ok(assets.some((a) => a.endsWith('.js')) && assets.some((a) => a.endsWith('.css')));
    for (const a of assets) {
      const res = await fetch(`${ts.url}${a}`);
      assert.equal(res.status, 200, a);
      assert.equal(res.headers.get('content-type'), a.endsWith('.js') ? 'text/javascript; charset=utf-8' : 'text/css; charset=utf-8');
      assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable');
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    }
    for (const bad of ['/assets/nope.js', '/assets/%2e%2e/%2e%2e/package.json', '/assets/..%2f..%2fpackage.json']) {
      const res = await fetch(`${ts.url}${bad}`);
      assert.notEqual(res.status, 200, bad);
      assert.ok(!(await res.text()).includes('"devDependencies"'), bad);
    }
  });

  test('the admin data stays behind the admin token', async () => {
    assert.equal((await fetch(`${ts.url}/api/admin/ui-config`)).status, 401);
    assert.equal((await fetch(`${ts.url}/api/admin/overview`)).status, 401);
  });
});
