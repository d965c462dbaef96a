import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { RunStatus } from '../src/db/schema.js';
import { AppError, ErrorCode } from '../src/errors.js';
import type { RunJson } from '../src/runs/json.js';
import { decodeCursor, encodeCursor } from '../src/runs/query.js';
import type { RunStore } from '../src/uploads/runs.js';
import { pgSkip } from './helpers/pg.js';
import { ADMIN_TOKEN, type DbKind, startTestServer, type TestServer } from './helpers/server.js';

interface Page {
  runs: RunJson[];
  next_cursor: string | null;
  limit: number;
}

const admin = { 'x-admin-token': ADMIN_TOKEN };

async function getJson<T>(t: TestServer, url: string, headers: Record<string, string>): Promise<{ status: number; body: T }> {
  const res = await fetch(`${t.url}${url}`, { headers });
  return { status: res.status, body: (await res.json()) as T };
}

async function expectTransitionError(p: Promise<unknown>, from: RunStatus, to: RunStatus) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AppError);
    assert.equal(err.code, ErrorCode.INVALID_TRANSITION);
    assert.equal(err.status, 409);
    assert.equal(err.details?.from, from);
    assert.equal(err.details?.to, to);
    return true;
  });
}

/** Create a run at a given time, optionally moved to a final status. */
async function seed(runs: RunStore, client: string, at: number, status: RunStatus = 'succeeded', kind: 'raw' | 'multipart' | 'chunked' = 'raw', key?: string) {
  const path = key ?? `seed/${at}-${Math.random().toString(36).slice(2)}.bin`;
  const run = await runs.create(
    { client, kind, path, objectKey: `backups/${client}/${path}`, status: status === 'queued' ? 'queued' : 'processing', size: 10 },
    at,
  );
  if (status === 'succeeded' || status === 'failed') {
    return runs.transition(run.run_id, status, status === 'failed' ? { errorCode: 'UPLOAD_ABORTED', errorMessage: 'x' } : { size: 10, sha256: 'ab' }, at + 5);
  }
  return run;
}

for (const db of ['sqlite', 'postgres'] as DbKind[]) {
  describe(`runs (${db})`, { skip: db === 'postgres' ? pgSkip : false }, () => {
    let t: TestServer;
    let runs: RunStore;
    before(async () => {
      t = await startTestServer({ db, clients: [{ name: 'alice' }, { name: 'bob' }, { name: 'carol' }] });
      runs = t.server.ctx.runs;
    });
    after(async () => {
      await t?.stop();
    });

    it('enforces the lifecycle: valid moves, timestamps, and a stable error for invalid ones', async () => {
      const q = await runs.create({ client: 'alice', kind: 'chunked', path: 'l/1', objectKey: 'backups/alice/l/1', status: 'queued' }, 1_000);
      assert.equal(q.started_at, null);
      const p = await runs.transition(q.run_id, 'processing', {}, 2_000);
      assert.equal(p.started_at, 2_000);
      await expectTransitionError(runs.transition(q.run_id, 'queued', {}, 2_500), 'processing', 'queued');
      await expectTransitionError(runs.transition(q.run_id, 'processing', {}, 2_600), 'processing', 'processing');
      const s = await runs.transition(q.run_id, 'succeeded', { size: 4000, sha256: 'aa' }, 4_000);
      assert.equal(s.finished_at, 4_000);
      assert.equal(s.total_ms, 2_000);
      assert.equal(s.bytes_per_sec, 2000);
      // Terminal states never move.
      for (const to of ['queued', 'processing', 'failed', 'succeeded'] as RunStatus[]) {
        await expectTransitionError(runs.transition(q.run_id, to), 'succeeded', to);
      }
      // queued -> failed directly (short circuit); started_at stays unset.
      const q2 = await runs.create({ client: 'alice', kind: 'chunked', path: 'l/2', objectKey: 'backups/alice/l/2', status: 'queued' }, 5_000);
      const f = await runs.transition(q2.run_id, 'failed', { errorCode: 'SESSION_EXPIRED', errorMessage: 'expired' }, 6_000);
      assert.equal(f.started_at, null);
      assert.equal(f.finished_at, 6_000);
      await expectTransitionError(runs.transition(q2.run_id, 'succeeded'), 'failed', 'succeeded');
      // The record on disk matches (the failed move changed nothing).
      const stored = await runs.get(q.run_id);
      assert.equal(stored?.status, 'succeeded');
      assert.equal(stored?.finished_at, 4_000);
      // Concurrent finishers: exactly one wins.
      const q3 = await runs.create({ client: 'alice', kind: 'raw', path: 'l/3', objectKey: 'backups/alice/l/3', status: 'processing' }, 7_000);
      const results = await Promise.allSettled([runs.transition(q3.run_id, 'succeeded'), runs.transition(q3.run_id, 'failed')]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      assert.equal(results.filter((r) => r.status === 'rejected').length, 1);
      await assert.rejects(runs.transition('00000000-0000-0000-0000-000000000000', 'failed'), (e: unknown) => e instanceof AppError && e.code === 'NOT_FOUND');
    });

    it('answers a failed upload with {run_id, error_code, message} and records it', async () => {
      const res = await fetch(`${t.url}/objects/fail/x.txt`, {
        method: 'PUT',
        headers: { ...t.auth('alice'), 'x-checksum-sha256': '0'.repeat(64) },
        body: 'hello',
      });
      assert.equal(res.status, 400);
      const body = (await res.json()) as { run_id: string; error_code: string; message: string };
      assert.equal(body.error_code, 'CHECKSUM_MISMATCH');
      assert.match(body.run_id, /^[0-9a-f-]{36}$/);
      assert.ok(body.message.length > 0);
      const got = await getJson<RunJson>(t, `/runs/v1/${body.run_id}`, t.auth('alice'));
      assert.equal(got.status, 200);
      assert.equal(got.body.status, 'failed');
      assert.equal(got.body.error_code, 'CHECKSUM_MISMATCH');
      assert.ok(got.body.error_message);
      assert.ok(got.body.finished_at);

      const ok = await fetch(`${t.url}/objects/ok/y.txt`, { method: 'PUT', headers: { ...t.auth('alice'), 'content-type': 'text/plain' }, body: 'hi' });
      const okBody = (await ok.json()) as { run_id: string };
      const run = await getJson<RunJson & { size: number; sha256: string; s3_key: string }>(t, `/runs/v1/${okBody.run_id}`, t.auth('alice'));
      assert.equal(run.body.status, 'succeeded');
      assert.equal(run.body.kind, 'raw');
      assert.equal(run.body.size, 2);
      assert.equal(run.body.s3_key, 'backups/alice/ok/y.txt');
      assert.equal(run.body.inputs.content_type, 'text/plain');
      assert.ok(run.body.timings.total_ms !== null);
      assert.match(run.body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    });

    it('scopes runs: a client sees only its own; another client’s run id is 404; the admin sees all', async () => {
      const mine = await seed(runs, 'bob', Date.now());
      assert.equal((await getJson(t, `/runs/v1/${mine.run_id}`, t.auth('alice'))).status, 404);
      assert.equal((await getJson(t, `/runs/v1/${mine.run_id}`, t.auth('bob'))).status, 200);
      assert.equal((await getJson(t, `/runs/v1/${mine.run_id}`, admin)).status, 200);
      const list = await getJson<Page>(t, '/runs/v1?limit=200', t.auth('alice'));
      assert.ok(list.body.runs.length > 0);
      assert.ok(list.body.runs.every((r) => r.client === 'alice'));
      const forbidden = await getJson<{ error_code: string }>(t, '/runs/v1?client=bob', t.auth('alice'));
      assert.equal(forbidden.status, 403);
      assert.equal(forbidden.body.error_code, 'FORBIDDEN');
      const asAdmin = await getJson<Page>(t, '/runs/v1?client=bob', admin);
      assert.ok(asAdmin.body.runs.some((r) => r.run_id === mine.run_id));
      assert.ok(asAdmin.body.runs.every((r) => r.client === 'bob'));
      assert.equal((await getJson(t, '/runs/v1', {})).status, 401);
      assert.equal((await getJson(t, '/runs/v1', { 'x-admin-token': 'wrong-token-wrong-token' })).status, 401);
      // Prune is scoped too: alice cannot remove bob's records.
      const pr = await fetch(`${t.url}/runs/v1/prune?max_runs=0`, { method: 'POST', headers: t.auth('alice') });
      assert.equal(pr.status, 200);
      assert.equal((await getJson(t, `/runs/v1/${mine.run_id}`, t.auth('bob'))).status, 200);
    });

    it('pages 1,000 records newest first with an opaque cursor, stable under concurrent inserts', async () => {
      const base = Date.UTC(2020, 0, 1);
      const ids = new Set<string>();
      // Ties on created_at (three per millisecond) exercise the run_id tie-break.
      for (let i = 0; i < 1000; i += 50) {
        const batch = await Promise.all(Array.from({ length: 50 }, (_, j) => seed(runs, 'carol', base + Math.floor((i + j) / 3), 'succeeded')));
        for (const r of batch) ids.add(r.run_id);
      }
      const seen: RunJson[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const url: string = `/runs/v1?limit=37${cursor ? `&cursor=${cursor}` : ''}`;
        const page = await getJson<Page>(t, url, t.auth('carol'));
        assert.equal(page.status, 200);
        seen.push(...page.body.runs);
        cursor = page.body.next_cursor;
        pages++;
        // Inserts while paging: some now, some at the very timestamp of the page boundary.
        await seed(runs, 'carol', Date.now(), 'processing');
        const last = page.body.runs.at(-1);
        if (last) await seed(runs, 'carol', Date.parse(last.created_at), 'failed');
      } while (cursor && pages < 100);
      assert.ok(pages >= 28 && pages < 100, `pages: ${pages}`);
      const seenIds = seen.map((r) => r.run_id);
      assert.equal(new Set(seenIds).size, seenIds.length, 'no duplicates');
      for (const id of ids) assert.ok(seenIds.includes(id), `missing ${id}`);
      for (let i = 1; i < seen.length; i++) {
        const a = seen[i - 1] as RunJson;
        const b = seen[i] as RunJson;
        const ta = Date.parse(a.created_at);
        const tb = Date.parse(b.created_at);
        assert.ok(ta > tb || (ta === tb && a.run_id > b.run_id), 'strictly newest first');
      }
      // Cursors are opaque but decode to created_ts:run_id.
      const first = await getJson<Page>(t, '/runs/v1?limit=1', t.auth('carol'));
      assert.ok(first.body.next_cursor);
      const c = decodeCursor(first.body.next_cursor);
      assert.equal(c.runId, first.body.runs[0]?.run_id);
      assert.equal(encodeCursor(c), first.body.next_cursor);
    });

    it('filters by status, kind, created range and client, and validates every parameter', async () => {
      const t0 = Date.UTC(2021, 5, 1);
      await seed(runs, 'bob', t0, 'failed', 'multipart');
      await seed(runs, 'bob', t0 + 1000, 'succeeded', 'chunked');
      await seed(runs, 'bob', t0 + 2000, 'processing', 'chunked');
      await seed(runs, 'bob', t0 + 3000, 'queued', 'raw');
      const q = async (qs: string) => (await getJson<Page>(t, `/runs/v1?client=bob&created_from=${t0}&created_to=${t0 + 3000}&${qs}`, admin)).body.runs;
      assert.equal((await q('')).length, 4);
      assert.deepEqual(
        (await q('status=failed')).map((r) => r.kind),
        ['multipart'],
      );
      assert.deepEqual(
        (await q('kind=chunked')).map((r) => r.status),
        ['processing', 'succeeded'],
      );
      assert.deepEqual(
        (await q('status=queued&kind=raw')).map((r) => r.status),
        ['queued'],
      );
      const iso = new Date(t0 + 1000).toISOString();
      const ranged = (await getJson<Page>(t, `/runs/v1?client=bob&created_from=${iso}&created_to=${new Date(t0 + 2000).toISOString()}`, admin)).body.runs;
      assert.deepEqual(
        ranged.map((r) => r.status),
        ['processing', 'succeeded'],
      );
      // The client's own view with filters.
      const own = (await getJson<Page>(t, `/runs/v1?status=failed&created_from=${t0}&created_to=${t0 + 3000}`, t.auth('bob'))).body.runs;
      assert.equal(own.length, 1);
      // Limits: default 50, max 200.
      assert.equal((await getJson<Page>(t, '/runs/v1', admin)).body.runs.length, 50);
      const big = await getJson<Page>(t, '/runs/v1?limit=5000', admin);
      assert.equal(big.body.runs.length, 200);
      assert.equal(big.body.limit, 200);
      for (const bad of [
        'status=done',
        'kind=video',
        'limit=0',
        'limit=abc',
        'cursor=@@@',
        `cursor=${Buffer.from('x:y:z').toString('base64url')}`,
        'created_from=yesterday',
      ]) {
        const r = await getJson<{ error_code: string; request_id: string }>(t, `/runs/v1?${bad}`, admin);
        assert.equal(r.status, 400, bad);
        assert.equal(r.body.error_code, 'INVALID_REQUEST', bad);
        assert.ok(r.body.request_id);
      }
    });

    it('prunes terminal records only, keeps records of live objects, and reports {scanned, deleted, kept}', async () => {
      // A fresh client so the counts are exact.
      const c = 'carol';
      await t.server.ctx.db.db.deleteFrom('runs').where('client', '=', c).execute();
      const day = 24 * 3600 * 1000;
      const now = Date.now();
      const old = now - 40 * day;
      const failedOld = await seed(runs, c, old, 'failed');
      const liveOld = await seed(runs, c, old + 1, 'succeeded', 'raw', 'live/a.bin');
      const replacedOld = await seed(runs, c, old + 2, 'succeeded', 'raw', 'replaced/b.bin');
      const replacer = await seed(runs, c, old + 3, 'succeeded', 'raw', 'replaced/b.bin');
      const deletedOld = await seed(runs, c, old + 4, 'succeeded', 'raw', 'gone/c.bin');
      await runs.markDeleted(deletedOld.object_key);
      const inProgressOld = await seed(runs, c, old + 5, 'processing');
      const queuedOld = await seed(runs, c, old + 6, 'queued');
      const recentFailed = [];
      for (let i = 0; i < 5; i++) recentFailed.push(await seed(runs, c, now - i * 1000, 'failed'));

      const prune = async (qs: string, headers: Record<string, string>) => {
        const res = await fetch(`${t.url}/runs/v1/prune?${qs}`, { method: 'POST', headers });
        assert.equal(res.status, 200);
        return (await res.json()) as { scanned: number; deleted: number; kept: number };
      };
      // No limits (none configured either): nothing goes.
      assert.deepEqual(await prune('', t.auth(c)), { scanned: 12, deleted: 0, kept: 12 });
      // Age: terminal records older than 30 days, except the live object's record and the replacer (the latest at its key).
      const byAge = await prune('max_age_days=30', t.auth(c));
      assert.deepEqual(byAge, { scanned: 12, deleted: 3, kept: 9 });
      const left = async () => new Set((await t.server.ctx.db.db.selectFrom('runs').select('run_id').where('client', '=', c).execute()).map((r) => r.run_id));
      let ids = await left();
      for (const gone of [failedOld, replacedOld, deletedOld]) assert.ok(!ids.has(gone.run_id));
      for (const kept of [liveOld, replacer, inProgressOld, queuedOld, ...recentFailed]) assert.ok(ids.has(kept.run_id));
      // Count: keep the 2 newest terminal records (plus live objects' records and non-terminal ones).
      const byCount = await prune('max_runs=2', t.auth(c));
      assert.deepEqual(byCount, { scanned: 9, deleted: 3, kept: 6 });
      ids = await left();
      for (const kept of [liveOld, replacer, inProgressOld, queuedOld, recentFailed[0], recentFailed[1]]) assert.ok(ids.has(kept?.run_id as string));
      // Admin prune across clients with max_runs=0 still never removes processing/queued runs.
      const all = await prune('max_runs=0', admin);
      assert.ok(all.deleted >= 2);
      const statuses = await t.server.ctx.db.db.selectFrom('runs').select(['status', 'deleted_at']).execute();
      assert.ok(statuses.some((r) => r.status === 'processing'));
      assert.ok(statuses.some((r) => r.status === 'queued'));
      assert.ok(statuses.filter((r) => r.status === 'failed').length === 0);
      assert.ok(statuses.filter((r) => r.status === 'succeeded').every((r) => r.deleted_at === null));
      const bad = await fetch(`${t.url}/runs/v1/prune?max_runs=-1`, { method: 'POST', headers: admin });
      assert.equal(bad.status, 400);
    });
  });
}
