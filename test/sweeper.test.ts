import assert from 'node:assert/strict';
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createSweeper } from '../src/retention/index.js';
import { Lease } from '../src/retention/lease.js';
import type { SweepReport } from '../src/retention/sweeper.js';
import { expiredSessionsTask } from '../src/retention/tasks.js';
import { runBin } from './helpers/bin.js';
import { pgSkip } from './helpers/pg.js';
import { ADMIN_TOKEN, type Backend, type DbKind, startTestServer, type TestServer } from './helpers/server.js';

const DAY = 24 * 3600 * 1000;
const admin = { 'x-admin-token': ADMIN_TOKEN };

async function put(t: TestServer, client: string, p: string, body: string) {
  const res = await fetch(`${t.url}/objects/${p}`, { method: 'PUT', headers: t.auth(client), body });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as { run_id: string; s3_key: string };
}

async function exists(t: TestServer, client: string, p: string): Promise<boolean> {
  const res = await fetch(`${t.url}/exists?path=${encodeURIComponent(p)}`, { headers: t.auth(client) });
  return ((await res.json()) as { exists: boolean }).exists;
}

const combos: Array<[Backend, DbKind]> = [
  ['fs', 'sqlite'],
  ['s3', 'sqlite'],
  ['fs', 'postgres'],
  ['s3', 'postgres'],
];

for (const [backend, db] of combos) {
  describe(`sweeper (${backend}, ${db})`, { skip: db === 'postgres' ? pgSkip : false }, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({
        backend,
        db,
        clients: [{ name: 'alice' }, { name: 'bob', retention_days: 100 }],
        extra: { retention: { ttl_days: 30, enabled: false } },
      });
    });
    after(async () => {
      await t?.stop();
    });

    it('dry run reports, real run deletes expired objects, never one with an upload in progress', async () => {
      const { ctx } = t.server;
      const old1 = await put(t, 'alice', 'a/old1.txt', 'one');
      await put(t, 'alice', 'a/b/old2.txt', 'two-two');
      await put(t, 'alice', 'busy/in-progress.txt', 'busy');
      await put(t, 'bob', 'kept.txt', 'bob keeps this for 100 days');
      // An upload to busy/in-progress.txt is running right now.
      const busy = await ctx.runs.create({
        client: 'alice',
        kind: 'chunked',
        path: 'busy/in-progress.txt',
        objectKey: 'backups/alice/busy/in-progress.txt',
        status: 'processing',
      });
      const taskCalls: boolean[] = [];
      ctx.sweeper.addTask({
        name: 'test-task',
        async run({ dryRun }) {
          taskCalls.push(dryRun);
          return { removed: 2, items: ['session-1', 'session-2'] };
        },
      });

      // Nothing is old yet.
      const none = await ctx.sweeper.sweep({ dryRun: true });
      assert.equal(none.objects_removed, 0);

      // 40 days on: alice's objects (30-day TTL) are expired; bob's (100 days) are not.
      const now = Date.now() + 40 * DAY;
      const dry = await ctx.sweeper.sweep({ dryRun: true, now });
      assert.equal(dry.dry_run, true);
      assert.deepEqual(dry.objects.map((o) => o.key).sort(), ['backups/alice/a/b/old2.txt', 'backups/alice/a/old1.txt']);
      assert.equal(dry.objects_removed, 2);
      assert.equal(dry.bytes_removed, 3 + 7);
      assert.equal(dry.objects_protected, 1);
      assert.deepEqual(
        dry.tasks.find((x) => x.name === 'test-task'),
        { name: 'test-task', removed: 2, items: ['session-1', 'session-2'] },
      );
      assert.equal(await exists(t, 'alice', 'a/old1.txt'), true, 'a dry run deletes nothing');
      assert.equal(await exists(t, 'alice', 'a/b/old2.txt'), true);
      assert.equal((await ctx.runs.get(old1.run_id))?.deleted_at, null);

      // The admin endpoint runs the same sweep (dry run here).
      const viaApi = await fetch(`${t.url}/api/admin/sweep?dry_run=true`, { method: 'POST', headers: admin });
      assert.equal(viaApi.status, 200);
      assert.equal(((await viaApi.json()) as SweepReport).dry_run, true);
      assert.equal((await fetch(`${t.url}/api/admin/sweep`, { method: 'POST', headers: t.auth('alice') })).status, 401);

      const real = await ctx.sweeper.sweep({ now });
      assert.equal(real.dry_run, false);
      assert.equal(real.objects_removed, 2);
      assert.equal(real.objects_protected, 1);
      assert.equal(real.records_marked, 2);
      assert.deepEqual(real.errors, []);
      assert.deepEqual(taskCalls, [true, true, true, false]);
      assert.equal(await exists(t, 'alice', 'a/old1.txt'), false);
      assert.equal(await exists(t, 'alice', 'a/b/old2.txt'), false);
      assert.equal(await exists(t, 'alice', 'busy/in-progress.txt'), true, 'in-progress upload untouched');
      assert.equal(await exists(t, 'bob', 'kept.txt'), true, 'per-client retention');
      assert.equal((await ctx.runs.get(old1.run_id))?.deleted_at, now);
      const viaRuns = (await (await fetch(`${t.url}/runs/v1/${old1.run_id}`, { headers: t.auth('alice') })).json()) as { deleted_at: string };
      assert.equal(viaRuns.deleted_at, new Date(now).toISOString());
      if (backend === 'fs') {
        const root = path.join(t.dir, 'uploads', 'backups', 'alice');
        assert.equal(existsSync(path.join(root, 'a', 'b')), false, 'empty folders removed');
        assert.equal(existsSync(path.join(root, 'a')), false);
        assert.equal(existsSync(path.join(root, 'busy')), true);
      }

      // Metrics count the deletions.
      const metrics = await (await fetch(`${t.url}/metrics`, { headers: admin })).text();
      assert.match(metrics, /s3up_sweeper_deleted_objects_total\{client="alice"\} 2/);
      assert.match(metrics, /s3up_sweeper_deleted_bytes_total\{client="alice"\} 10/);

      // Once the upload has finished, the object is swept like any other (its record finished before the window).
      await ctx.runs.transition(busy.run_id, 'failed', { errorCode: 'UPLOAD_ABORTED', errorMessage: 'gone' });
      const later = await ctx.sweeper.sweep({ now: now + 1 });
      assert.equal(later.objects_removed, 1);
      assert.equal(await exists(t, 'alice', 'busy/in-progress.txt'), false);

      // The filesystem re-checks each object right before unlinking it: one rewritten since the listing stays.
      if (backend === 'fs' && ctx.storage.deleteMany) {
        await put(t, 'alice', 'fresh.txt', 'just written');
        const res = await ctx.storage.deleteMany(['backups/alice/fresh.txt'], { unmodifiedSince: new Date(Date.now() - DAY) });
        assert.deepEqual(res, { deleted: [], errors: [] });
        assert.equal(await exists(t, 'alice', 'fresh.txt'), true);
      }

      // Sweeping again is harmless.
      const again = await ctx.sweeper.sweep({ now: now + 2 });
      assert.equal(again.objects_removed, backend === 'fs' ? 1 : 0); // fresh.txt, 40 days on
    });

    it('lets only one gateway sweep at a time (lease), and refuses overlapping sweeps in one process', async () => {
      const { ctx } = t.server;
      const other = new Lease(ctx.db.db, 'sweeper', 'another-gateway');
      assert.equal(await other.acquire(60_000), true);
      const skipped = await ctx.sweeper.sweep({ lease: true });
      assert.ok(skipped.skipped);
      await other.release();
      const p1 = ctx.sweeper.sweep({ dryRun: true });
      await assert.rejects(ctx.sweeper.sweep({ dryRun: true }), (e: Error & { code?: string }) => e.code === 'CONFLICT');
      await p1;
      const ok = await ctx.sweeper.sweep({ lease: true });
      assert.equal(ok.skipped, undefined);
      // The lease was released: another gateway can take it.
      assert.equal(await other.acquire(60_000), true);
      await other.release();
    });
  });
}

describe('s3up-server sweep (CLI)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice' }], extra: { retention: { ttl_days: 7, enabled: false } } });
  });
  after(async () => {
    await t?.stop();
  });

  it('prints what it would remove, then removes it', async () => {
    const dir = path.join(t.dir, 'uploads', 'backups', 'alice', 'logs', '2020');
    mkdirSync(dir, { recursive: true });
    const oldFile = path.join(dir, 'old.log');
    writeFileSync(oldFile, 'old log');
    const tenDaysAgo = new Date(Date.now() - 10 * DAY);
    utimesSync(oldFile, tenDaysAgo, tenDaysAgo);
    await put(t, 'alice', 'logs/new.log', 'new');
    const args = ['sweep', '--config', t.configPath];
    const dry = await runBin([...args, '--dry-run'], { cwd: t.dir });
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would remove backups\/alice\/logs\/2020\/old\.log \(7 bytes/);
    assert.doesNotMatch(dry.stdout, /new\.log/);
    assert.match(dry.stdout, /dry run: 1 object\(s\)/);
    assert.match(dry.stdout, /task abort-expired-sessions: would remove 0/);
    // The command runs the gateway's own sweeper (createGateway): every task the gateway runs.
    assert.match(dry.stdout, /task settle-orphaned-runs: would remove 0/);
    assert.equal(existsSync(oldFile), true);
    const real = await runBin(args, { cwd: t.dir });
    assert.equal(real.code, 0, real.stderr);
    assert.match(real.stdout, /removed backups\/alice\/logs\/2020\/old\.log/);
    assert.match(real.stdout, /1 empty folder\(s\) removed/);
    assert.equal(existsSync(oldFile), false);
    assert.equal(existsSync(dir), false);
    assert.equal(await exists(t, 'alice', 'logs/new.log'), true);
  });
});

describe('periodic prune (RUNS_PRUNE_MAX_AGE_DAYS) as a sweeper task', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice' }], env: { RUNS_PRUNE_MAX_AGE_DAYS: '10', SWEEPER_ENABLED: '0' } });
  });
  after(async () => {
    await t?.stop();
  });

  it('prunes old terminal records on a real sweep and only reports on a dry run', async () => {
    const { ctx } = t.server;
    assert.ok(ctx.sweeper.taskNames.includes('prune-runs'));
    const old = Date.now() - 20 * DAY;
    const failed = await ctx.runs.create({ client: 'alice', kind: 'raw', path: 'x', objectKey: 'backups/alice/x', status: 'processing' }, old);
    await ctx.runs.transition(failed.run_id, 'failed', { errorCode: 'UPLOAD_ABORTED', errorMessage: 'x' }, old + 1);
    const stuck = await ctx.runs.create({ client: 'alice', kind: 'chunked', path: 'y', objectKey: 'backups/alice/y', status: 'queued' }, old);
    const dry = await ctx.sweeper.sweep({ dryRun: true });
    assert.equal(dry.tasks.find((x) => x.name === 'prune-runs')?.removed, 0);
    assert.ok(await ctx.runs.get(failed.run_id));
    const real = await ctx.sweeper.sweep();
    assert.equal(real.tasks.find((x) => x.name === 'prune-runs')?.removed, 1);
    assert.equal(await ctx.runs.get(failed.run_id), undefined);
    assert.ok(await ctx.runs.get(stuck.run_id), 'non-terminal records are never pruned');
    const metrics = await (await fetch(`${t.url}/metrics`, { headers: admin })).text();
    assert.match(metrics, /s3up_runs_pruned_total 1/);
  });
});

describe('sweeper task: abort expired resumable sessions (issue 3 engine)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice' }], env: { SWEEPER_ENABLED: '0' } });
  });
  after(async () => {
    await t?.stop();
  });

  it('counts expired sessions on a dry run and expires them (run failed) on a real one', async () => {
    const { ctx } = t.server;
    // A sweeper of its own, so only this task runs (the gateway may register its own session task).
    const sweeper = createSweeper({ config: ctx.config, db: ctx.db.db, storage: ctx.storage, logger: ctx.logger, instanceId: 'test' });
    sweeper.addTask(expiredSessionsTask(t.server.app.resumable));
    const init = await fetch(`${t.url}/upload/chunked/init`, {
      method: 'POST',
      headers: { ...t.auth('alice'), 'content-type': 'application/json' },
      body: JSON.stringify({ path: 'big/file.bin', file_size: 10 * 1024 * 1024 }),
    });
    assert.equal(init.status, 200, await init.clone().text());
    const { run_id } = (await init.json()) as { run_id: string };
    assert.ok(run_id);
    const later = Date.now() + 400 * DAY;
    const dry = await sweeper.sweep({ dryRun: true, now: later });
    assert.equal(dry.tasks.find((x) => x.name === 'abort-expired-sessions')?.removed, 1);
    assert.notEqual((await ctx.runs.get(run_id))?.status, 'failed');
    const real = await sweeper.sweep({ now: later });
    assert.equal(real.tasks.find((x) => x.name === 'abort-expired-sessions')?.removed, 1);
    const run = await ctx.runs.get(run_id);
    assert.equal(run?.status, 'failed');
    assert.equal(run?.error_code, 'SESSION_EXPIRED');
    const again = await sweeper.sweep({ dryRun: true, now: later });
    assert.equal(again.tasks.find((x) => x.name === 'abort-expired-sessions')?.removed, 0);
  });
});
