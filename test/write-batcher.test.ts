// Group commit on a real SQLite file: concurrent writes share a transaction,
// each caller gets its own result or error, and a failing statement does not
// undo the others.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Db, migrate, openDatabase, WriteBatcher } from '../src/db/index.js';
import { RunStore } from '../src/uploads/runs.js';

describe('WriteBatcher (SQLite group commit)', () => {
  let dir: string;
  let db: Db;
  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 's3up-batch-'));
    db = await openDatabase(`sqlite:${path.join(dir, 'b.db')}`);
    await migrate(db.db);
  });
  after(async () => {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('commits concurrent creates and transitions, each resolving with its own row', async () => {
    const runs = new RunStore(db.db, new WriteBatcher(db.db));
    const created = await Promise.all(
      Array.from({ length: 50 }, (_, i) => runs.create({ client: 'a', kind: 'raw', path: `p/${i}`, objectKey: `k/a/p/${i}`, status: 'processing' })),
    );
    const done = await Promise.all(created.map((r, i) => runs.transition(r.run_id, i % 2 ? 'failed' : 'succeeded', { size: i })));
    assert.deepEqual(
      done.map((r) => r.status),
      created.map((_, i) => (i % 2 ? 'failed' : 'succeeded')),
    );
    // A second reader (its own connection) sees every row: they were committed.
    const other = await openDatabase(`sqlite:${path.join(dir, 'b.db')}`);
    try {
      const rows = await other.db.selectFrom('runs').select(['run_id', 'status', 'size']).where('client', '=', 'a').execute();
      assert.equal(rows.length, 50);
      assert.equal(rows.filter((r) => r.status === 'succeeded').length, 25);
    } finally {
      await other.close();
    }
  });

  it('rejects only the failing write of a batch; the others commit', async () => {
    const batcher = new WriteBatcher(db.db);
    const runs = new RunStore(db.db, batcher);
    const first = await runs.create({ client: 'b', kind: 'raw', path: 'x', objectKey: 'k/b/x', status: 'processing' });
    await runs.transition(first.run_id, 'succeeded', { size: 1 });
    const results = await Promise.allSettled([
      runs.create({ client: 'b', kind: 'raw', path: 'y', objectKey: 'k/b/y', status: 'processing' }),
      runs.transition(first.run_id, 'failed'), // terminal: an invalid move
      batcher.run((d) => d.insertInto('heartbeat').values({ id: 'dup', at: 1 }).execute()),
      batcher.run((d) => d.insertInto('heartbeat').values({ id: 'dup', at: 2 }).execute()), // primary key clash
      runs.create({ client: 'b', kind: 'raw', path: 'z', objectKey: 'k/b/z', status: 'processing' }),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled'],
    );
    assert.equal((results[1] as PromiseRejectedResult).reason.code, 'INVALID_TRANSITION');
    const rows = await db.db.selectFrom('runs').select('path').where('client', '=', 'b').orderBy('path').execute();
    assert.deepEqual(
      rows.map((r) => r.path),
      ['x', 'y', 'z'],
    );
    const hb = await db.db.selectFrom('heartbeat').selectAll().where('id', '=', 'dup').execute();
    assert.deepEqual(hb, [{ id: 'dup', at: 1 }]);
    assert.equal((await runs.get(first.run_id))?.status, 'succeeded');
  });
});
