import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { rolloutBucket } from '../src/flags/store.js';
import { pgSkip } from './helpers/pg.js';
import { ADMIN_TOKEN, type DbKind, startTestServer, type TestServer } from './helpers/server.js';

const admin = { 'x-admin-token': ADMIN_TOKEN };
const json = { 'content-type': 'application/json' };

async function call<T>(t: TestServer, method: string, url: string, headers: Record<string, string>, body?: unknown) {
  const res = await fetch(`${t.url}${url}`, {
    method,
    headers: body === undefined ? headers : { ...headers, ...json },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as T };
}

interface ClientRow {
  name: string;
  last_seen: string | null;
  uploads_today: number;
  bytes_today: number;
  failures_today: number;
  uploads_7d: number;
  bytes_7d: number;
  failures_7d: number;
  storage: { objects: number; bytes: number };
  retention_days: number;
  latest_report: { date: string; files_uploaded: number; bytes: number; host: string | null } | null;
}

for (const db of ['sqlite', 'postgres'] as DbKind[]) {
  describe(`reports and clients (${db})`, { skip: db === 'postgres' ? pgSkip : false }, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ db, clients: [{ name: 'alice' }, { name: 'bob', retention_days: 7 }, { name: 'idle' }] });
    });
    after(async () => {
      await t?.stop();
    });

    it('stores a daily report idempotently per (client, date)', async () => {
      const report = { date: '2026-01-02', files_uploaded: 10, bytes: 2048, failures: 1, queue_depth: 3, agent_version: '0.1.0', host: 'web-1' };
      const first = await call<{ created: boolean; report: { files_uploaded: number } }>(t, 'POST', '/reports', t.auth('alice'), report);
      assert.equal(first.status, 200);
      assert.equal(first.body.created, true);
      const again = await call<{ created: boolean }>(t, 'POST', '/reports', t.auth('alice'), report);
      assert.equal(again.body.created, false);
      // A corrected resend replaces the values.
      const fixed = await call<{ created: boolean; report: { files_uploaded: number; queue_depth: number } }>(t, 'POST', '/reports', t.auth('alice'), {
        ...report,
        files_uploaded: 12,
        queue_depth: 0,
      });
      assert.equal(fixed.body.created, false);
      assert.equal(fixed.body.report.files_uploaded, 12);
      const rows = await t.server.ctx.db.db.selectFrom('client_reports').selectAll().where('client', '=', 'alice').execute();
      assert.equal(rows.length, 1);
      assert.equal(rows[0]?.files_uploaded, 12);
      // The same date from another client is its own row.
      await call(t, 'POST', '/reports', t.auth('bob'), report);
      assert.equal((await t.server.ctx.db.db.selectFrom('client_reports').selectAll().execute()).length, 2);
      // A later day becomes the latest report.
      await call(t, 'POST', '/reports', t.auth('alice'), { ...report, date: '2026-01-03', files_uploaded: 5 });

      for (const bad of [
        { ...report, date: '2026-13-01' },
        { ...report, date: 'yesterday' },
        { ...report, files_uploaded: -1 },
        { ...report, bytes: 1.5 },
        { ...report, extra: true },
        { date: '2026-01-02' },
      ]) {
        const r = await call<{ error_code: string }>(t, 'POST', '/reports', t.auth('alice'), bad);
        assert.equal(r.status, 400, JSON.stringify(bad));
        assert.equal(r.body.error_code, 'INVALID_REQUEST');
      }
      assert.equal((await call(t, 'POST', '/reports', {}, report)).status, 401);
      assert.equal((await call(t, 'POST', '/reports', admin, report)).status, 401, 'reports come from clients');
    });

    it('GET /clients gives the admin per-client activity, latest report and storage used', async () => {
      const put = (client: string, p: string, body: string, headers: Record<string, string> = {}) =>
        fetch(`${t.url}/objects/${p}`, { method: 'PUT', headers: { ...t.auth(client), ...headers }, body });
      await put('alice', 'a.txt', '12345');
      await put('alice', 'b.txt', '1234567890');
      await put('alice', 'b.txt', '123'); // overwrite: counts once in storage
      await put('alice', 'bad.txt', 'x', { 'x-checksum-sha256': 'f'.repeat(64) });
      await put('bob', 'c.txt', 'bob');
      await fetch(`${t.url}/objects/c.txt`, { method: 'DELETE', headers: t.auth('bob') });

      assert.equal((await call(t, 'GET', '/clients', t.auth('alice'))).status, 401);
      const res = await call<{ clients: ClientRow[] }>(t, 'GET', '/clients', admin);
      assert.equal(res.status, 200);
      const by = new Map(res.body.clients.map((c) => [c.name, c]));
      assert.deepEqual([...by.keys()].sort(), ['alice', 'bob', 'idle']);
      const a = by.get('alice') as ClientRow;
      assert.equal(a.uploads_today, 3);
      assert.equal(a.bytes_today, 5 + 10 + 3);
      assert.equal(a.failures_today, 1);
      assert.equal(a.uploads_7d, 3);
      assert.equal(a.failures_7d, 1);
      assert.deepEqual(a.storage, { objects: 2, bytes: 5 + 3 });
      assert.equal(a.latest_report?.date, '2026-01-03');
      assert.equal(a.latest_report?.files_uploaded, 5);
      assert.ok(a.last_seen && Date.now() - Date.parse(a.last_seen) < 60_000);
      assert.equal(a.retention_days, 30);
      const b = by.get('bob') as ClientRow;
      assert.deepEqual(b.storage, { objects: 0, bytes: 0 }, 'deleted objects use no storage');
      assert.equal(b.retention_days, 7);
      assert.equal(b.latest_report?.host, 'web-1');
      const idle = by.get('idle') as ClientRow;
      assert.equal(idle.last_seen, null);
      assert.equal(idle.uploads_7d, 0);
      assert.equal(idle.latest_report, null);
    });
  });
}

describe('feature flags and remote config', () => {
  let t: TestServer;
  let flagsFile: string;
  before(async () => {
    t = await startTestServer({
      clients: [{ name: 'alice' }, { name: 'bob' }, { name: 'carol', max_file_size_mb: 5 }],
      extra: { feature_flags: { config_path: 'flags/feature_flags.json' }, remote_config: { chunk_size_mb: 16, concurrency: 3 } },
    });
    flagsFile = path.join(t.dir, 'flags', 'feature_flags.json');
  });
  after(async () => {
    await t?.stop();
  });

  it('reads, writes atomically and validates the flag document (admin only)', async () => {
    const empty = await call<{ flags: object }>(t, 'GET', '/api/admin/feature-flags/config', admin);
    assert.equal(empty.status, 200);
    assert.deepEqual(empty.body.flags, {});
    assert.equal((await call(t, 'GET', '/api/admin/feature-flags/config', t.auth('alice'))).status, 401);
    assert.equal((await call(t, 'PUT', '/api/admin/feature-flags/config', t.auth('alice'), { flags: {} })).status, 401);

    const doc = { flags: { roundFlowV2: { rolloutPercent: 50 }, killSwitch: { enabled: false }, beta: { rolloutPercent: 0, clients: ['bob'] } } };
    const put = await call<{ flags: Record<string, { enabled: boolean; rolloutPercent: number }> }>(t, 'PUT', '/api/admin/feature-flags/config', admin, doc);
    assert.equal(put.status, 200);
    assert.deepEqual(put.body.flags.roundFlowV2, { enabled: true, rolloutPercent: 50 });
    const onDisk = JSON.parse(readFileSync(flagsFile, 'utf8')) as { flags: Record<string, unknown> };
    assert.deepEqual(Object.keys(onDisk.flags).sort(), ['beta', 'killSwitch', 'roundFlowV2']);

    // Spec 001's form updates one flag and keeps the others.
    const patch = await call<{ flags: Record<string, { rolloutPercent: number }> }>(t, 'PUT', '/api/admin/feature-flags/config', admin, {
      roundFlowV2: { rolloutPercent: 10 },
    });
    assert.equal(patch.status, 200);
    assert.equal(patch.body.flags.roundFlowV2?.rolloutPercent, 10);
    assert.ok(patch.body.flags.beta);

    // Bad documents are refused with a clear error; the good one stays, in memory and on disk.
    const before = readFileSync(flagsFile, 'utf8');
    for (const bad of [
      { roundFlowV2: { rolloutPercent: 150 } },
      { flags: { 'bad name!': {} } },
      { flags: { x: { rolloutPercent: 'ten' } } },
      { flags: { x: { unknownField: 1 } } },
      { version: 2, flags: {} },
      '[1,2]',
      '{not json',
    ]) {
      const r = await call<{ error_code: string; message: string }>(t, 'PUT', '/api/admin/feature-flags/config', admin, bad);
      assert.equal(r.status, 400, JSON.stringify(bad));
      assert.equal(r.body.error_code, 'INVALID_REQUEST');
      assert.ok(r.body.message.length > 0);
    }
    assert.equal(readFileSync(flagsFile, 'utf8'), before);
    const still = await call<{ flags: Record<string, { rolloutPercent: number }> }>(t, 'GET', '/api/admin/feature-flags/config', admin);
    assert.equal(still.body.flags.roundFlowV2?.rolloutPercent, 10);
    // No temp files left behind.
    assert.deepEqual(
      (await import('node:fs')).readdirSync(path.dirname(flagsFile)).filter((f) => f !== 'feature_flags.json'),
      [],
    );
  });

  it('evaluates rolloutPercent deterministically per client and hands agents their settings', async () => {
    // The bucket is a pure function of (flag, client).
    assert.equal(rolloutBucket('roundFlowV2', 'alice'), rolloutBucket('roundFlowV2', 'alice'));
    const names = Array.from({ length: 2000 }, (_, i) => `client-${i}`);
    for (const pct of [10, 50, 90]) {
      const on = names.filter((n) => rolloutBucket('f', n) < pct).length / names.length;
      assert.ok(Math.abs(on - pct / 100) < 0.04, `rollout ${pct}%: ${on}`);
    }
    // Raising the percentage only adds clients.
    const at10 = new Set(names.filter((n) => rolloutBucket('f', n) < 10));
    const at50 = new Set(names.filter((n) => rolloutBucket('f', n) < 50));
    for (const n of at10) assert.ok(at50.has(n));

    await call(t, 'PUT', '/api/admin/feature-flags/config', admin, {
      flags: { half: { rolloutPercent: 50 }, all: {}, off: { enabled: false, clients: ['alice'] }, beta: { rolloutPercent: 0, clients: ['bob'] } },
      upload: { concurrency: 6 },
      clients: { carol: { upload: { chunk_size_mb: 4 } } },
    });
    for (const c of ['alice', 'bob', 'carol']) {
      const seen = new Set<string>();
      for (let i = 0; i < 3; i++) {
        const r = await call<{ client: string; flags: Record<string, boolean> }>(t, 'GET', '/config', t.auth(c));
        assert.equal(r.status, 200);
        assert.equal(r.body.client, c);
        assert.equal(r.body.flags.half, rolloutBucket('half', c) < 50);
        assert.equal(r.body.flags.all, true);
        assert.equal(r.body.flags.off, false, 'a disabled flag is off even for listed clients');
        assert.equal(r.body.flags.beta, c === 'bob');
        seen.add(JSON.stringify(r.body.flags));
      }
      assert.equal(seen.size, 1, 'stable across calls');
    }
    const alice = await call<{ upload: { chunk_size_bytes: number; concurrency: number; max_file_size_bytes: number } }>(t, 'GET', '/config', t.auth('alice'));
    assert.deepEqual(alice.body.upload, { chunk_size_bytes: 16 * 1024 * 1024, concurrency: 6, max_file_size_bytes: 100 * 1024 * 1024 });
    const carol = await call<{ upload: { chunk_size_bytes: number; concurrency: number; max_file_size_bytes: number } }>(t, 'GET', '/config', t.auth('carol'));
    assert.deepEqual(carol.body.upload, { chunk_size_bytes: 4 * 1024 * 1024, concurrency: 6, max_file_size_bytes: 5 * 1024 * 1024 });
    assert.equal((await call(t, 'GET', '/config', admin)).status, 401);
  });

  it('/ready fails while the flag store is not writable, and recovers', async () => {
    assert.equal((await fetch(`${t.url}/ready`)).status, 200);
    const dir = path.dirname(flagsFile);
    const moved = `${dir}.bak`;
    renameSync(dir, moved);
    writeFileSync(dir, 'a file where the folder should be');
    try {
      const res = await fetch(`${t.url}/ready`);
      assert.equal(res.status, 503);
      const body = (await res.json()) as { checks: Record<string, { status: string }> };
      assert.equal(body.checks.feature_flags?.status, 'fail');
      assert.equal(body.checks.database?.status, 'ok');
      const put = await call<{ error_code: string }>(t, 'PUT', '/api/admin/feature-flags/config', admin, { flags: {} });
      assert.equal(put.status, 503);
      assert.equal(put.body.error_code, 'SERVICE_UNAVAILABLE');
      // The document in memory is unchanged.
      const doc = await call<{ flags: Record<string, unknown> }>(t, 'GET', '/api/admin/feature-flags/config', admin);
      assert.ok(doc.body.flags.half);
    } finally {
      rmSync(dir);
      mkdirSync(path.dirname(dir), { recursive: true });
      renameSync(moved, dir);
    }
    assert.equal((await fetch(`${t.url}/ready`)).status, 200);
  });
  it('picks up a document changed on disk by someone else (another gateway, an operator)', async () => {
    const tmp = `${flagsFile}.other`;
    writeFileSync(tmp, JSON.stringify({ version: 1, flags: { fromElsewhere: { rolloutPercent: 100 } } }));
    renameSync(tmp, flagsFile);
    await new Promise((r) => setTimeout(r, 2100));
    const cfg = await call<{ flags: Record<string, boolean> }>(t, 'GET', '/config', t.auth('alice'));
    assert.deepEqual(cfg.body.flags, { fromElsewhere: true });
    // A broken edit keeps the last good document in service and fails /ready until repaired.
    writeFileSync(flagsFile, '{"flags": {"x": {"rolloutPercent": "lots"}}}');
    await new Promise((r) => setTimeout(r, 2100));
    const still = await call<{ flags: Record<string, boolean> }>(t, 'GET', '/config', t.auth('alice'));
    assert.deepEqual(still.body.flags, { fromElsewhere: true });
    assert.equal((await fetch(`${t.url}/ready`)).status, 503);
    const fixed = await call(t, 'PUT', '/api/admin/feature-flags/config', admin, { flags: { repaired: {} } });
    assert.equal(fixed.status, 200);
    assert.equal((await fetch(`${t.url}/ready`)).status, 200);
    assert.deepEqual((await call<{ flags: Record<string, boolean> }>(t, 'GET', '/config', t.auth('alice'))).body.flags, { repaired: true });
  });
});
