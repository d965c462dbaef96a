// The dashboard's rollups (run_stats, client_storage) kept by triggers agree with the records
// and objects they summarize, through uploads, failures, overwrites, deletes and prunes, on
// SQLite and PostgreSQL; and the prune guard and dry run of POST /runs/v1/prune.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { pgSkip } from './helpers/pg.js';
import { seedRuns } from './helpers/seed.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.js';

const admin = { 'x-admin-token': ADMIN_TOKEN };

interface Overview {
  totals: { succeeded: number; failed: number; bytes: number; in_progress: number; success_rate: number | null };
  errors_by_code: Array<{ error_code: string; count: number }>;
  storage: Array<{ client: string; objects: number; bytes: number }>;
  series: Array<{ t: string; succeeded: number; failed: number; bytes: number }>;
}

for (const db of ['sqlite', 'postgres'] as const) {
  describe(`admin aggregates (${db})`, { skip: db === 'postgres' ? pgSkip : false }, () => {
    let ts: TestServer;
    before(async () => {
      ts = await startTestServer({ db });
    });
    after(async () => ts?.stop());

    /** The same figures computed from the records and objects directly. */
    async function truth(sinceMs: number) {
      const d = ts.server.ctx.db.db;
      const runs = await sql<{ status: string; error_code: string | null; n: number; b: number }>`
        select status, error_code, count(*) as n, coalesce(sum(size), 0) as b from runs where created_at >= ${sinceMs} group by status, error_code`.execute(d);
      const objects = await sql<{ client: string; n: number; b: number }>`select client, count(*) as n, sum(size) as b from objects group by client`.execute(d);
      let succeeded = 0;
      let failed = 0;
      let bytes = 0;
      const errors: Record<string, number> = {};
      for (const r of runs.rows) {
        if (r.status === 'succeeded') {
          succeeded += Number(r.n);
          bytes += Number(r.b);
        } else if (r.status === 'failed') {
          failed += Number(r.n);
          errors[r.error_code ?? 'UNKNOWN'] = (errors[r.error_code ?? 'UNKNOWN'] ?? 0) + Number(r.n);
        }
      }
      const storage = Object.fromEntries(objects.rows.map((o) => [o.client, { objects: Number(o.n), bytes: Number(o.b) }]));
      return { succeeded, failed, bytes, errors, storage };
    }

    async function check(label: string): Promise<Overview> {
      const res = await fetch(`${ts.url}/api/admin/overview?hours=720`, { headers: admin });
      assert.equal(res.status, 200);
      const ov = (await res.json()) as Overview;
      const want = await truth(Date.parse((ov as unknown as { from: string }).from));
      assert.equal(ov.totals.succeeded, want.succeeded, `${label}: succeeded`);
      assert.equal(ov.totals.failed, want.failed, `${label}: failed`);
      assert.equal(ov.totals.bytes, want.bytes, `${label}: bytes`);
      assert.deepEqual(Object.fromEntries(ov.errors_by_code.map((e) => [e.error_code, e.count])), want.errors, `${label}: errors`);
      assert.deepEqual(Object.fromEntries(ov.storage.map((s) => [s.client, { objects: s.objects, bytes: s.bytes }])), want.storage, `${label}: storage`);
      assert.equal(
        ov.series.reduce((n, h) => n + h.succeeded, 0),
        want.succeeded,
      );
      return ov;
    }

    it('agree with the records through uploads, failures, overwrites, deletes and prunes', async () => {
      await check('empty');
      await seedRuns(ts.server.ctx.db.db, { clients: ['alice', 'bob'], count: 60, spacingMs: 3600 * 1000 });
      for (const [name, body] of [
        ['a.txt', 'aaaa'],
        ['b.txt', 'bbbbbbbb'],
        ['a.txt', 'aaaaaaaaaaaa'], // overwrite: one object, the new size
      ] as const) {
        assert.equal((await fetch(`${ts.url}/objects/${name}`, { method: 'PUT', headers: ts.auth('alice'), body })).status, 200);
      }
      const bad = await fetch(`${ts.url}/objects/c.txt`, { method: 'PUT', headers: { ...ts.auth('bob'), 'x-checksum-sha256': '0'.repeat(64) }, body: 'c' });
      assert.equal(bad.status, 400);
      let ov = await check('after uploads');
      assert.deepEqual(
        ov.storage.find((s) => s.client === 'alice'),
        { client: 'alice', objects: 2, bytes: 20 },
      );
      assert.ok(ov.errors_by_code.some((e) => e.error_code === 'CHECKSUM_MISMATCH'));

      assert.equal((await fetch(`${ts.url}/objects/b.txt`, { method: 'DELETE', headers: ts.auth('alice') })).status, 200);
      ov = await check('after a delete');
      assert.deepEqual(
        ov.storage.find((s) => s.client === 'alice'),
        { client: 'alice', objects: 1, bytes: 12 },
      );

      const pruned = await fetch(`${ts.url}/runs/v1/prune?max_runs=5`, { method: 'POST', headers: admin });
      assert.ok(((await pruned.json()) as { deleted: number }).deleted > 0);
      await check('after a prune');
      // An upload in progress counts as in progress, not as done.
      await ts.server.ctx.runs.create({ client: 'bob', kind: 'tus', path: 'open.bin', objectKey: 'backups/bob/open.bin', status: 'processing', size: 10 });
      ov = await check('with an open upload');
      assert.equal(ov.totals.in_progress, 1);
    });

    it('GET /clients reads the rollups: 7-day volume and storage per client', async () => {
      const res = await fetch(`${ts.url}/clients`, { headers: admin });
      const body = (await res.json()) as { clients: Array<{ name: string; storage: { objects: number; bytes: number }; in_progress: number }> };
      const alice = body.clients.find((c) => c.name === 'alice');
      assert.deepEqual(alice?.storage, { objects: 1, bytes: 12 });
      assert.equal(body.clients.find((c) => c.name === 'bob')?.in_progress, 1);
    });

    it('prune: a dry run counts and deletes nothing', async () => {
      const before = await fetch(`${ts.url}/runs/v1?limit=200`, { headers: admin });
      const n = ((await before.json()) as { runs: unknown[] }).runs.length;
      const dry = await fetch(`${ts.url}/runs/v1/prune?max_runs=0&dry_run=true`, { method: 'POST', headers: admin });
      const body = (await dry.json()) as { scanned: number; deleted: number; kept: number; dry_run: boolean };
      assert.equal(body.dry_run, true);
      assert.equal(body.scanned, n);
      assert.ok(body.deleted > 0);
      const afterRes = await fetch(`${ts.url}/runs/v1?limit=200`, { headers: admin });
      assert.equal(((await afterRes.json()) as { runs: unknown[] }).runs.length, n);
      const real = await fetch(`${ts.url}/runs/v1/prune?max_runs=0`, { method: 'POST', headers: admin });
      assert.equal(((await real.json()) as { deleted: number }).deleted, body.deleted);
    });
  });
}

describe('prune guard (spec 001) on the server', () => {
  it('RUNS_PRUNE_ENABLED=0 refuses every manual prune; RUNS_PRUNE_LOCKED refuses a real one (a dry run still counts)', async () => {
    const off = await startTestServer({ env: { RUNS_PRUNE_ENABLED: '0' } });
    try {
      for (const headers of [admin, off.auth('alice')]) {
        const res = await fetch(`${off.url}/runs/v1/prune?max_runs=0&dry_run=true`, { method: 'POST', headers });
        assert.equal(res.status, 403);
        assert.equal(((await res.json()) as { error_code: string }).error_code, 'FORBIDDEN');
      }
      const cfg = (await (await fetch(`${off.url}/api/admin/ui-config`, { headers: admin })).json()) as { prune: { enabled: boolean } };
      assert.equal(cfg.prune.enabled, false);
    } finally {
      await off.stop();
    }
    const locked = await startTestServer({ env: { RUNS_PRUNE_LOCKED: '1' } });
    try {
      const real = await fetch(`${locked.url}/runs/v1/prune?max_runs=0`, { method: 'POST', headers: locked.auth('alice') });
      assert.equal(real.status, 403);
      assert.match(((await real.json()) as { message: string }).message, /RUNS_PRUNE_LOCKED/);
      const dry = await fetch(`${locked.url}/runs/v1/prune?max_runs=0&dry_run=true`, { method: 'POST', headers: admin });
      assert.equal(dry.status, 200);
      const cfg = (await (await fetch(`${locked.url}/api/admin/ui-config`, { headers: admin })).json()) as { prune: { locked: boolean; reason: string } };
      assert.deepEqual({ locked: cfg.prune.locked, reason: cfg.prune.reason }, { locked: true, reason: 'RUNS_PRUNE_LOCKED' });
    } finally {
      await locked.stop();
    }
  });
});
