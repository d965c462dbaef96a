// The admin dashboard at /admin, driven in Debian's Chromium (playwright-core) against a real
// gateway with seeded records: sign-in, runs (filters, paging, drawer), prune (guarded and
// locked), overview (numbers match the API), clients, flags; at 1280 px and phone width.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, ensureWebBuild, launchChromium, newContext, screenshot, waitFor, watchConsole } from './helpers/browser.js';
import { seedRuns } from './helpers/seed.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.js';

const skip = browserSkipReason();
// Refusals the tests provoke on purpose show up as resource errors in the console; nothing else may.
const EXPECTED = [/Failed to load resource: the server responded with a status of (401|403)/];

async function signIn(page: Page, url: string, token = ADMIN_TOKEN): Promise<void> {
  await page.goto(`${url}/admin`);
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Sections' }).waitFor();
}

async function api<T>(ts: TestServer, path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(`${ts.url}${path}`, { ...init, headers: { 'x-admin-token': ADMIN_TOKEN, ...(init.headers ?? {}) } });
  return { status: res.status, body: (await res.json()) as T };
}

describe('admin dashboard in Chromium', { skip }, () => {
  let ts: TestServer;
  let browser: Browser;

  before(async () => {
    ensureWebBuild();
    ts = await startTestServer({ clients: [{ name: 'alice' }, { name: 'bob' }, { name: 'carol' }], extra: { runs: { prune_max_age_days: 365 } } });
    // Records over the last two days; carol's all older than 3 days (she stopped reporting).
    await seedRuns(ts.server.ctx.db.db, { clients: ['alice', 'bob', 'carol'], count: 120, spacingMs: 20 * 60 * 1000, silent: { carol: 72 } });
    // And real uploads, so storage has something to show.
    for (const [client, name, body] of [
      ['alice', 'photos/a.jpg', 'x'.repeat(5000)],
      ['alice', 'photos/b.jpg', 'y'.repeat(7000)],
      ['bob', 'logs/today.txt', 'z'.repeat(300)],
    ] as const) {
      const res = await fetch(`${ts.url}/objects/${name}`, { method: 'PUT', headers: ts.auth(client), body });
      assert.equal(res.status, 200);
    }
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await ts?.stop();
  });

  test('sign-in: a wrong token is refused and says so; the right one opens the dashboard and stays in sessionStorage only', async () => {
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, EXPECTED);
    await page.goto(`${ts.url}/admin`);
    await screenshot(page, 'admin-sign-in');
    await page.getByLabel('Admin token').fill('not-the-admin-token-at-all');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /Sign-in refused: invalid admin token/);
    assert.equal(await page.evaluate('sessionStorage.length'), 0);

    await page.getByLabel('Admin token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    const storage = (await page.evaluate(
      '({ session: Object.values(sessionStorage), local: Object.values(localStorage).join("\\n"), url: location.href })',
    )) as { session: string[]; local: string; url: string };
    assert.deepEqual(storage.session, [ADMIN_TOKEN]);
    assert.ok(!storage.local.includes(ADMIN_TOKEN));
    assert.ok(!storage.url.includes(ADMIN_TOKEN));
    // A reload keeps the session (same tab).
    await page.reload();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('runs: filters live in the URL, Next/Prev walk the cursor, a row opens the drawer', async () => {
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, EXPECTED);
    await signIn(page, ts.url);
    await page.getByRole('link', { name: 'Runs' }).click();
    const rows = page.locator('[data-testid="runs-table"] tbody tr');
    await waitFor('the first page of runs', async () => (await rows.count()) === 25);
    await screenshot(page, 'admin-runs');

    // Filters: status=failed, client=alice -> the URL holds them, every row matches.
    await page.getByLabel('Status').selectOption('failed');
    await page.getByLabel('Client').selectOption('alice');
    await waitFor('filtered rows', async () => {
      const texts = await rows.allInnerTexts();
      return texts.length > 0 && texts.every((t) => t.includes('failed') && t.includes('alice'));
    });
    const url = new URL(page.url());
    assert.equal(url.searchParams.get('status'), 'failed');
    assert.equal(url.searchParams.get('client'), 'alice');
    const expected = await api<{ runs: Array<{ run_id: string }> }>(ts, '/runs/v1?status=failed&client=alice&limit=25');
    assert.equal(await rows.count(), expected.body.runs.length);

    // The shared URL opens the same view in a new tab (after sign-in in that tab).
    const other = await ctx.newPage();
    await other.goto(page.url());
    // sessionStorage is per tab: the new tab signs in, and lands on the shared view.
    await other.getByLabel('Admin token').fill(ADMIN_TOKEN);
    await other.getByRole('button', { name: 'Sign in' }).click();
    await waitFor('the shared view', async () => (await other.locator('[data-testid="runs-table"] tbody tr').count()) === expected.body.runs.length);
    assert.equal(await other.getByLabel('Status').inputValue(), 'failed');
    await other.close();

    // Paging: per-page 25 over all records, Next then Prev, pages match the API's cursor pages.
    await page.getByRole('button', { name: 'Clear filters' }).click();
    const api1 = await api<{ runs: Array<{ run_id: string }>; next_cursor: string }>(ts, '/runs/v1?limit=25');
    const api2 = await api<{ runs: Array<{ run_id: string }> }>(ts, `/runs/v1?limit=25&cursor=${api1.body.next_cursor}`);
    const ids = () => rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-run-id')));
    await waitFor('unfiltered page 1', async () => JSON.stringify(await ids()) === JSON.stringify(api1.body.runs.map((r) => r.run_id)));
    await page.getByRole('button', { name: 'Next →' }).click();
    await waitFor('page 2', async () => JSON.stringify(await ids()) === JSON.stringify(api2.body.runs.map((r) => r.run_id)));
    assert.ok(new URL(page.url()).searchParams.get('cursor'));
    await page.getByRole('button', { name: '← Prev' }).click();
    await waitFor('page 1 again', async () => JSON.stringify(await ids()) === JSON.stringify(api1.body.runs.map((r) => r.run_id)));
    // Per page 100.
    await page.getByLabel('Per page').selectOption('100');
    await waitFor('100 rows', async () => (await rows.count()) === 100);
    assert.equal(new URL(page.url()).searchParams.get('limit'), '100');

    // Drawer, by keyboard: focus a failed row, Enter; Escape closes it.
    await page.getByLabel('Status').selectOption('failed');
    await waitFor('failed rows', async () => {
      const texts = await rows.allInnerTexts();
      return texts.length > 0 && texts.every((t) => t.includes('failed'));
    });
    const first = rows.first();
    const runId = (await first.getAttribute('data-run-id')) as string;
    await first.focus();
    await page.keyboard.press('Enter');
    const drawer = page.getByTestId('run-drawer');
    await drawer.waitFor();
    const run = await api<{ error_code: string; error_message: string }>(ts, `/runs/v1/${runId}`);
    const errText = await page.getByTestId('drawer-error').innerText();
    assert.ok(errText.includes(run.body.error_code));
    assert.ok(errText.includes(run.body.error_message));
    assert.equal(await page.getByTestId('drawer-duration').innerText(), '150 ms');
    const raw = JSON.parse(await page.getByTestId('drawer-raw').innerText()) as { run_id: string };
    assert.equal(raw.run_id, runId);
    await screenshot(page, 'admin-run-drawer');
    await page.keyboard.press('Escape');
    await drawer.waitFor({ state: 'detached' });
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('prune: type PRUNE to arm, a dry-run count first, then {scanned, deleted, kept}', async () => {
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, EXPECTED);
    await signIn(page, ts.url);
    await page.goto(`${ts.url}/admin/runs?client=bob`);
    await page.getByRole('button', { name: 'Prune records…' }).click();
    await page.getByLabel('max_runs (keep this many newest)').fill('10');
    const pruneButton = page.getByRole('button', { name: /^Prune \d* ?records$/ });
    assert.equal(await pruneButton.isDisabled(), true);
    await page.getByRole('button', { name: 'Count (dry run)' }).click();
    const dry = page.getByTestId('prune-dry-run');
    await dry.waitFor();
    const expected = await api<{ scanned: number; deleted: number }>(ts, '/runs/v1/prune?max_runs=10&client=bob&dry_run=true', { method: 'POST' });
    assert.match(await dry.innerText(), new RegExp(`${expected.body.deleted} of ${expected.body.scanned} records would be deleted`));
    assert.ok(expected.body.deleted > 0);
    // Not armed until PRUNE is typed.
    assert.equal(await pruneButton.isDisabled(), true);
    await page.getByLabel('Type PRUNE to arm').fill('prune');
    assert.equal(await pruneButton.isDisabled(), true);
    await page.getByLabel('Type PRUNE to arm').fill('PRUNE');
    assert.equal(await pruneButton.isDisabled(), false);
    await screenshot(page, 'admin-prune');
    await pruneButton.click();
    const result = page.getByTestId('prune-result');
    await result.waitFor();
    assert.match(
      await result.innerText(),
      new RegExp(`scanned ${expected.body.scanned}, deleted ${expected.body.deleted}, kept ${expected.body.scanned - expected.body.deleted}`),
    );
    // Done: nothing more to prune with the same limits.
    const again = await api<{ deleted: number }>(ts, '/runs/v1/prune?max_runs=10&client=bob&dry_run=true', { method: 'POST' });
    assert.equal(again.body.deleted, 0);
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('prune locked (PROD_LOCK): the button is shown disabled and the API refuses too', async () => {
    const locked = await startTestServer({ env: { PROD_LOCK: '1' } });
    try {
      const ctx = await newContext(browser);
      const page = await ctx.newPage();
      const errors = watchConsole(page, EXPECTED);
      await signIn(page, locked.url);
      await page.getByRole('link', { name: 'Runs' }).click();
      await page.getByTestId('prune-locked').waitFor();
      assert.equal(await page.getByRole('button', { name: 'Prune records…' }).isDisabled(), true);
      assert.match(await page.getByTestId('prune-locked').innerText(), /PROD_LOCK/);
      await screenshot(page, 'admin-prune-locked');
      const res = await fetch(`${locked.url}/runs/v1/prune?max_runs=0`, { method: 'POST', headers: { 'x-admin-token': ADMIN_TOKEN } });
      assert.equal(res.status, 403);
      assert.match(((await res.json()) as { message: string }).message, /locked.*PROD_LOCK/);
      assert.deepEqual(errors, []);
      await ctx.close();
    } finally {
      await locked.stop();
    }
    // Disabled: not shown at all.
    const off = await startTestServer({ env: { RUNS_PRUNE_ENABLED: '0' } });
    try {
      const ctx = await newContext(browser);
      const page = await ctx.newPage();
      await signIn(page, off.url);
      await page.getByRole('link', { name: 'Runs' }).click();
      await page.getByTestId('runs-empty').waitFor();
      assert.equal(await page.getByTestId('prune').count(), 0);
      const res = await fetch(`${off.url}/runs/v1/prune?max_runs=0`, { method: 'POST', headers: { 'x-admin-token': ADMIN_TOKEN } });
      assert.equal(res.status, 403);
      await screenshot(page, 'admin-runs-empty');
      await ctx.close();
    } finally {
      await off.stop();
    }
  });

  test('overview: the chart renders and the numbers match the API', async () => {
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, EXPECTED);
    await signIn(page, ts.url);
    await page.getByTestId('chart').locator('canvas').waitFor();
    const ov = await api<{
      totals: { succeeded: number; failed: number; in_progress: number; success_rate: number };
      errors_by_code: Array<{ error_code: string; count: number }>;
      storage: Array<{ client: string; objects: number }>;
    }>(ts, '/api/admin/overview?hours=168');
    assert.equal(await page.getByTestId('stat-succeeded').innerText(), String(ov.body.totals.succeeded));
    assert.equal(await page.getByTestId('stat-failed').innerText(), String(ov.body.totals.failed));
    assert.equal(await page.getByTestId('stat-in-progress').innerText(), String(ov.body.totals.in_progress));
    assert.equal(await page.getByTestId('stat-success-rate').innerText(), `${(ov.body.totals.success_rate * 100).toFixed(1)}%`);
    assert.ok(ov.body.totals.failed > 0 && ov.body.errors_by_code.length === 3);
    const errRows = await page.locator('[data-testid="errors-table"] tbody tr').allInnerTexts();
    assert.deepEqual(
      errRows.map((r) => r.replace(/\s+/g, ' ').trim()),
      ov.body.errors_by_code.map((e) => `${e.error_code} ${e.count}`),
    );
    const storageRows = await page.locator('[data-testid="storage-table"] tbody tr').allInnerTexts();
    assert.equal(storageRows.length, ov.body.storage.length);
    assert.ok(storageRows[0]?.startsWith('alice'));
    await screenshot(page, 'admin-overview');
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('clients: last seen, 7-day volume, failures; a client that stopped reporting stands out', async () => {
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, EXPECTED);
    await signIn(page, ts.url);
    await page.getByRole('link', { name: 'Clients' }).click();
    await page.getByTestId('clients-table').waitFor();
    const carol = page.locator('tr[data-client="carol"]');
    assert.equal(await carol.getAttribute('class'), 'stale');
    assert.equal(await carol.getByTestId('stopped-reporting').count(), 1);
    assert.equal(await page.locator('tr[data-client="alice"] [data-testid="stopped-reporting"]').count(), 0);
    const api7d = await api<{ clients: Array<{ name: string; uploads_7d: number }> }>(ts, '/clients');
    const alice = api7d.body.clients.find((c) => c.name === 'alice');
    const cells = await page.locator('tr[data-client="alice"] td').allInnerTexts();
    assert.equal(cells[1], String(alice?.uploads_7d));
    await screenshot(page, 'admin-clients');
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('feature flags: a validation error is shown inline at its field; a valid edit is saved', async () => {
    await api(ts, '/api/admin/feature-flags/config', {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ version: 1, flags: { roundFlowV2: { enabled: true, rolloutPercent: 10 } } }),
    });
    const ctx = await newContext(browser);
    const page = await ctx.newPage();
    const errors = watchConsole(page, [...EXPECTED, /status of 400/]);
    await signIn(page, ts.url);
    await page.getByRole('link', { name: 'Feature flags' }).click();
    const rollout = page.getByLabel('roundFlowV2 rollout percent');
    await rollout.fill('150');
    await page.getByRole('button', { name: 'Save' }).click();
    const inline = page.getByTestId('inline-error');
    await inline.waitFor();
    assert.match(await inline.innerText(), /100/);
    assert.equal(await rollout.getAttribute('aria-invalid'), 'true');
    await screenshot(page, 'admin-flags-error');
    const unchanged = await api<{ flags: { roundFlowV2: { rolloutPercent: number } } }>(ts, '/api/admin/feature-flags/config');
    assert.equal(unchanged.body.flags.roundFlowV2.rolloutPercent, 10);

    await rollout.fill('25');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByTestId('flags-saved').waitFor();
    const saved = await api<{ flags: { roundFlowV2: { rolloutPercent: number } } }>(ts, '/api/admin/feature-flags/config');
    assert.equal(saved.body.flags.roundFlowV2.rolloutPercent, 25);
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('phone width: navigation, runs and the drawer work at 390 px without horizontal page scroll', async () => {
    const ctx = await newContext(browser, { phone: true });
    const page = await ctx.newPage();
    const errors = watchConsole(page, EXPECTED);
    await signIn(page, ts.url);
    await page.getByTestId('chart').locator('canvas').waitFor();
    await screenshot(page, 'admin-overview-phone');
    await page.getByRole('link', { name: 'Runs' }).click();
    await page.locator('[data-testid="runs-table"] tbody tr').first().click();
    await page.getByTestId('run-drawer').waitFor();
    const overflow = (await page.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth')) as number;
    assert.ok(overflow <= 1, `the page scrolls sideways by ${overflow} px`);
    await screenshot(page, 'admin-run-drawer-phone');
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});
