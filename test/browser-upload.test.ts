// The browser uploader at /upload (Uppy core + tus + Golden Retriever) and cross-origin tus,
// in Debian's Chromium against a real gateway behind a TCP proxy that can stall and cut the
// network: several files, one cut off by going offline mid-way and resumed; one whose page is
// reloaded mid-upload and resumed; checksums verified on the gateway. From a second origin:
// the same tus upload works, an origin not allowed is refused, a wrong key reads as 401.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, ensureWebBuild, launchChromium, newContext, screenshot, TcpProxy, waitFor, watchConsole } from './helpers/browser.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.js';

const skip = browserSkipReason();
const MiB = 1024 * 1024;
// Going offline and cutting connections on purpose shows up as network errors in the console.
const EXPECTED = [/Failed to load resource/, /ERR_INTERNET_DISCONNECTED/, /ERR_CONNECTION/, /ERR_NETWORK/, /ERR_EMPTY_RESPONSE/];
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** A tiny web site on its own origin: a page and tus-js-client's browser build. */
async function startSite(): Promise<{ url: string; close: () => Promise<void> }> {
  const tusJs = readFileSync(path.join(root, 'node_modules', 'tus-js-client', 'dist', 'tus.min.js'));
  const server = http.createServer((req, res) => {
    if (req.url === '/tus.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(tusJs);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>site</title><script src="/tus.js"></script><p>a client web site</p>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('browser uploader in Chromium', { skip }, () => {
  let ts: TestServer;
  let site: { url: string; close: () => Promise<void> };
  let evil: { url: string; close: () => Promise<void> };
  let proxy: TcpProxy;
  let pageUrl: string;
  let browser: Browser;
  let dir: string;

  before(async () => {
    ensureWebBuild();
    site = await startSite();
    evil = await startSite();
    ts = await startTestServer({ clients: [{ name: 'webapp', cors_origins: [site.url] }, { name: 'other' }] });
    proxy = new TcpProxy({ host: '127.0.0.1', port: ts.server.port });
    pageUrl = await proxy.start();
    browser = await launchChromium();
    dir = mkdtempSync(path.join(os.tmpdir(), 's3up-browser-'));
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await ts?.stop();
    await site?.close();
    await evil?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function token(prefix: string): Promise<string> {
    const res = await fetch(`${ts.url}/tokens`, {
      method: 'POST',
      headers: { ...ts.auth('webapp'), 'content-type': 'application/json' },
      body: JSON.stringify({ path_prefix: prefix, ttl_seconds: 3600 }),
    });
    assert.equal(res.status, 200);
    return ((await res.json()) as { token: string }).token;
  }

  function file(name: string, size: number): { file: string; data: Buffer } {
    const data = randomBytes(size);
    const file = path.join(dir, name);
    writeFileSync(file, data);
    return { file, data };
  }

  const statusOf = (page: Page, name: string) => page.locator(`li[data-file="${name}"]`).getAttribute('data-status');

  async function stored(p: string): Promise<{ exists: boolean; sha256: string; size: number }> {
    const res = await fetch(`${ts.url}/exists?path=${encodeURIComponent(p)}`, { headers: ts.auth('webapp') });
    return (await res.json()) as { exists: boolean; sha256: string; size: number };
  }

  /** SHA-256 of what the gateway serves at `p` (a multi-chunk tus upload has a composite checksum, not a plain one). */
  async function servedSha256(p: string): Promise<string> {
    const res = await fetch(`${ts.url}/download?path=${encodeURIComponent(p)}`, { headers: ts.auth('webapp') });
    assert.equal(res.status, 200, p);
    return sha256(Buffer.from(await res.arrayBuffer()));
  }

  async function sessionOffset(p: string): Promise<number> {
    const row = await ts.server.ctx.db.db.selectFrom('upload_sessions').select('tus_offset').where('path', '=', p).executeTakeFirst();
    return row?.tus_offset ?? 0;
  }

  async function tusRuns(p: string): Promise<Array<{ status: string }>> {
    const res = await fetch(`${ts.url}/runs/v1?kind=tus&client=webapp&limit=200`, { headers: { 'x-admin-token': ADMIN_TOKEN } });
    const body = (await res.json()) as { runs: Array<{ path: string; status: string }> };
    return body.runs.filter((r) => r.path === p);
  }

  test('three files; one is cut off by going offline mid-way and resumes by itself when back online', async () => {
    const t = await token('inbox/u1');
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, EXPECTED);
    await page.goto(`${pageUrl}/upload#token=${t}`);
    await page.getByTestId('dropzone').waitFor();
    // The token left the address bar for sessionStorage.
    assert.ok(!page.url().includes('token'));
    assert.equal(await page.evaluate('sessionStorage.getItem("s3up.upload-token")'), t);

    const a = file('a.txt', 20_000);
    const b = file('b.bin', 300_000);
    const big = file('big.bin', 5 * MiB);
    await page.getByTestId('file-input').setInputFiles([a.file, b.file]);
    await waitFor('a and b uploaded', async () => (await statusOf(page, 'a.txt')) === 'done' && (await statusOf(page, 'b.bin')) === 'done');

    // The big one: let 1.5 MiB through, then the network stalls mid-PATCH.
    proxy.budget(1.5 * MiB);
    await page.getByTestId('file-input').setInputFiles([big.file]);
    await waitFor('big.bin stalled after its first chunk', async () => proxy.isStalled && (await sessionOffset('inbox/u1/big.bin')) >= MiB);
    await screenshot(page, 'upload');
    // Offline: the page's network goes away and so do its connections.
    await ctx.setOffline(true);
    proxy.cut();
    await page.getByTestId('offline').waitFor();
    await waitFor('big.bin shown offline', async () => (await statusOf(page, 'big.bin')) === 'offline');
    assert.notEqual((await stored('inbox/u1/big.bin')).exists, true);

    // Back online: it continues without a click.
    proxy.restore();
    await ctx.setOffline(false);
    await waitFor('big.bin uploaded', async () => (await statusOf(page, 'big.bin')) === 'done', 120_000);
    await screenshot(page, 'upload-done');

    for (const [name, f] of [
      ['a.txt', a],
      ['b.bin', b],
      ['big.bin', big],
    ] as const) {
      const s = await stored(`inbox/u1/${name}`);
      assert.equal(s.exists, true, name);
      assert.equal(s.size, f.data.length, name);
      assert.equal(await servedSha256(`inbox/u1/${name}`), sha256(f.data), name);
    }
    // Resumed, not started over: one tus upload (one run) for big.bin.
    assert.deepEqual(
      (await tusRuns('inbox/u1/big.bin')).map((r) => r.status),
      ['succeeded'],
    );
    // Spec 000 telemetry: upload_complete for each file, checked against what is stored.
    await waitFor('three upload_complete events', async () => {
      const res = await fetch(`${ts.url}/telemetry?event=upload_complete`, { headers: ts.auth('webapp') });
      const events = ((await res.json()) as { events: Array<{ key: string; outcome: string }> }).events.filter((e) => e.key.startsWith('inbox/u1/'));
      return events.length === 3 && events.every((e) => e.outcome === 'verified');
    });
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('a page reloaded mid-upload restores the file and resumes from the gateway’s offset', async () => {
    const t = await token('inbox/u2');
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, EXPECTED);
    await page.goto(`${pageUrl}/upload#token=${t}`);
    const f = file('reload.bin', 4 * MiB);
    // Hold the upload after its first chunk: the second PATCH never leaves the browser.
    let patches = 0;
    let held = false;
    await page.route('**/tus/**', async (route) => {
      if (route.request().method() === 'PATCH' && ++patches > 1) {
        held = true;
        return; // neither continued nor answered: the request hangs until the page goes away
      }
      await route.continue();
    });
    await page.getByTestId('file-input').setInputFiles([f.file]);
    await waitFor('reload.bin held after its first chunk', async () => held && (await sessionOffset('inbox/u2/reload.bin')) >= MiB);
    // Golden Retriever has the file's blob (IndexedDB) and the upload's state (localStorage).
    await waitFor('the blob kept for a reload', async () =>
      Boolean(
        await page.evaluate(
          `new Promise((ok) => indexedDB.databases().then((dbs) => {
            if (!dbs.some((d) => d.name === 'uppy-blobs')) return ok(false);
            const r = indexedDB.open('uppy-blobs');
            r.onerror = () => ok(false);
            r.onsuccess = () => {
              const db = r.result;
              const names = Array.from(db.objectStoreNames);
              if (names.length === 0) { db.close(); return ok(false); }
              const c = db.transaction(names, 'readonly').objectStore(names[0]).count();
              c.onsuccess = () => { db.close(); ok(c.result > 0); };
              c.onerror = () => { db.close(); ok(false); };
            };
          }))`,
        ),
      ),
    );
    await page.unrouteAll({ behavior: 'ignoreErrors' });
    await page.reload();
    await waitFor('reload.bin uploaded after the reload', async () => (await statusOf(page, 'reload.bin')) === 'done', 120_000);
    assert.equal(await servedSha256('inbox/u2/reload.bin'), sha256(f.data));
    assert.deepEqual(
      (await tusRuns('inbox/u2/reload.bin')).map((r) => r.status),
      ['succeeded'],
    );
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('pause and resume a file by keyboard; it continues from where it stopped', async () => {
    const t = await token('inbox/u3');
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, EXPECTED);
    await page.goto(`${pageUrl}/upload#token=${t}`);
    const f = file('pause.bin', 3 * MiB);
    let patches = 0;
    let held = false;
    await page.route('**/tus/**', async (route) => {
      if (route.request().method() === 'PATCH' && ++patches === 2) {
        held = true;
        return;
      }
      await route.continue();
    });
    await page.getByTestId('file-input').setInputFiles([f.file]);
    await waitFor('pause.bin held after its first chunk', async () => held && (await sessionOffset('inbox/u3/pause.bin')) >= MiB);
    const pause = page.getByRole('button', { name: 'Pause pause.bin' });
    await pause.focus();
    await page.keyboard.press('Enter');
    await waitFor('pause.bin paused', async () => (await statusOf(page, 'pause.bin')) === 'paused');
    const resume = page.getByRole('button', { name: 'Resume pause.bin' });
    await resume.focus();
    await page.keyboard.press('Enter');
    await waitFor('pause.bin uploaded', async () => (await statusOf(page, 'pause.bin')) === 'done', 120_000);
    assert.equal(await servedSha256('inbox/u3/pause.bin'), sha256(f.data));
    assert.deepEqual(
      (await tusRuns('inbox/u3/pause.bin')).map((r) => r.status),
      ['succeeded'],
    );
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('a wrong or expired link says so', async () => {
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    await page.goto(`${pageUrl}/upload`);
    await page.getByLabel('Upload token').fill('not-a-token');
    await page.getByRole('button', { name: 'Continue' }).click();
    assert.match(await page.getByRole('alert').innerText(), /not an upload token/);
    await ctx.close();
  });

  test('cross-origin: tus from a client’s own site works; a wrong key reads as 401; an origin not allowed is refused', async () => {
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, [/Failed to load resource: the server responded with a status of 401/]);
    await page.goto(site.url);
    const data = randomBytes(300_000);
    const script = (key: string, p: string) => `new Promise((resolve) => {
      const bytes = Uint8Array.from(atob(${JSON.stringify(data.toString('base64'))}), (c) => c.charCodeAt(0));
      const up = new tus.Upload(new Blob([bytes]), {
        endpoint: ${JSON.stringify(`${ts.url}/tus/`)},
        headers: { authorization: 'Bearer ' + ${JSON.stringify(key)}, 'x-request-id': 'cross-origin-1' },
        metadata: { path: ${JSON.stringify(p)}, filetype: 'application/octet-stream' },
        chunkSize: 100000,
        retryDelays: [],
        removeFingerprintOnSuccess: true,
        onSuccess: () => resolve({ ok: true }),
        onError: (e) => resolve({ ok: false, status: e.originalResponse ? e.originalResponse.getStatus() : 0, message: String(e) }),
      });
      up.start();
    })`;
    const ok = (await page.evaluate(script(ts.keys.webapp as string, 'site/x.bin'))) as { ok: boolean; status?: number };
    assert.deepEqual(ok, { ok: true });
    assert.equal(await servedSha256('site/x.bin'), sha256(data));

    // A wrong key: the page reads the 401 and its error code (CORS headers on the refusal).
    const wrong = (await page.evaluate(`fetch(${JSON.stringify(`${ts.url}/tus/`)}, {
        method: 'POST',
        headers: { authorization: 'Bearer sk_wrong_000000000000000000000000000000', 'tus-resumable': '1.0.0', 'upload-length': '1' },
      }).then(async (r) => ({ status: r.status, body: await r.json(), rid: r.headers.get('x-request-id') }))`)) as {
      status: number;
      body: { error_code: string };
      rid: string | null;
    };
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error_code, 'UNAUTHORIZED');
    assert.ok(wrong.rid);
    // tus-js-client sees the 401 too (no retry storm on a wrong key).
    const tusWrong = (await page.evaluate(script('sk_wrong_000000000000000000000000000000', 'site/y.bin'))) as { ok: boolean; status: number };
    assert.deepEqual({ ok: tusWrong.ok, status: tusWrong.status }, { ok: false, status: 401 });
    assert.deepEqual(errors, []);

    // Another origin: the browser refuses to let the page read anything, and nothing is stored.
    const other = await ctx.newPage();
    await other.goto(evil.url);
    const refused = (await other.evaluate(script(ts.keys.webapp as string, 'site/evil.bin'))) as { ok: boolean; status: number };
    assert.equal(refused.ok, false);
    assert.equal(refused.status, 0);
    const fetched = (await other.evaluate(
      `fetch(${JSON.stringify(`${ts.url}/exists?path=site/x.bin`)}, { headers: { 'x-api-key': ${JSON.stringify(ts.keys.webapp)} } }).then(() => 'read', (e) => 'refused: ' + e.name)`,
    )) as string;
    assert.equal(fetched, 'refused: TypeError');
    assert.equal((await stored('site/evil.bin')).exists, false);
    await ctx.close();
  });
});
