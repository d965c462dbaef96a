// PostgreSQL goes away under load: a TCP proxy between the gateway and the
// server is cut (every connection reset, new ones refused) while 20 uploads
// stream in, then restored. Answers are 2xx or a retryable 503, every upload
// answered 2xx is stored byte-exact, and once the sweeper has run every record
// tells the truth: no run left processing, no object without its record.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type BinProcess, spawnBin } from './helpers/bin.js';
import { eventually, request } from './helpers/http.js';
import { createPgDatabase, pgSkip } from './helpers/pg.js';
import { MiB, random } from './helpers/resumable.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.js';
import { type CuttableProxy, startTcpProxy } from './helpers/tcp-proxy.js';
import { type Acknowledged, assertNothingAcknowledgedLost, assertRecordsTellTheTruth, records } from './helpers/truth.js';

describe('PostgreSQL cut under load (TCP proxy)', { skip: pgSkip }, () => {
  for (const mode of ['stopped', 'reset'] as const) {
    // stopped: open connections closed, new ones refused (a server shut down);
    // reset: open connections reset (RST), new ones refused (a network failure).
    it(`20 streaming uploads, database ${mode}: 2xx or 503, nothing acknowledged lost, every record true after the sweep`, async () => {
      const { pgDb, proxy, t } = await gatewayBehindProxy();
      try {
        await underLoad(t, proxy, pgDb.url, mode === 'reset');
      } finally {
        await t.stop();
        await proxy.close();
        await pgDb.drop();
      }
    });
  }

  // The gateway that owes those records is killed before the database comes
  // back: another gateway's sweeper settles its runs from the store.
  it('records owed by a gateway killed during the outage are settled from the store by another gateway', async () => {
    const { pgDb, proxy, t: ts } = await gatewayBehindProxy();
    await ts.server.close();
    const a = spawnBin(['--config', ts.configPath, '--port', '0'], { cwd: ts.dir, timeoutMs: 60_000, env: { LOG_LEVEL: 'info' } });
    let b: BinProcess | undefined;
    try {
      const urlA = await a.listening;
      const bodies = Array.from({ length: 5 }, () => random(MiB));
      const { uploads, release } = halfNowRestLater(bodies, (i) => `${urlA}/objects/killed/f${i}.bin`, ts.auth('alice'));
      await eventually(async () => (await records(pgDb.url)).runs.filter((r) => r.status === 'processing').length === 5, 60_000, '5 uploads streaming');
      await proxy.cut();
      release();
      for (const res of await Promise.all(uploads)) {
        assert.equal(res.status, 503, res.body.toString());
        assert.equal(res.json<{ error_code: string }>().error_code, 'DATABASE_UNAVAILABLE');
      }
      // Published, unrecorded, and the gateway that owes the records dies.
      a.proc.kill('SIGKILL');
      await a.exited;
      await proxy.restore();
      b = spawnBin(['--config', ts.configPath, '--port', '0'], { cwd: ts.dir, timeoutMs: 60_000, env: { LOG_LEVEL: 'info' } });
      const urlB = await b.listening;
      for (let i = 0; i < 120; i++) {
        await fetch(`${urlB}/api/admin/sweep`, { method: 'POST', headers: { 'x-admin-token': ADMIN_TOKEN } });
        const { runs } = await records(pgDb.url);
        if (!runs.some((r) => r.status === 'processing' || r.status === 'queued')) break;
        await sleep(500);
      }
      const truth = await assertRecordsTellTheTruth({ kind: 'fs', root: `${ts.dir}/uploads` }, pgDb.url);
      // Every upload was published before its 503: each is now recorded, as the bytes sent.
      assert.equal(truth.objects.length, 5);
      assertNothingAcknowledgedLost(
        truth,
        bodies.map((bytes, i) => ({ key: `backups/alice/killed/f${i}.bin`, bytes })),
      );
      for (const r of truth.runs) assert.equal(r.status, 'succeeded', `${r.object_key}: ${r.status} ${r.error_code}`);
    } finally {
      if (a.proc.exitCode === null && a.proc.signalCode === null) a.proc.kill('SIGKILL');
      await b?.stop();
      await ts.stop();
      await proxy.close();
      await pgDb.drop();
    }
  });
});

/** A fresh PostgreSQL database, a cuttable proxy in front of it, and a gateway that reaches the database through the proxy. */
async function gatewayBehindProxy(): Promise<{ pgDb: Awaited<ReturnType<typeof createPgDatabase>>; proxy: CuttableProxy; t: TestServer }> {
  const pgDb = await createPgDatabase();
  const direct = new URL(pgDb.url);
  const proxy = await startTcpProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
  const viaProxy = new URL(pgDb.url);
  viaProxy.hostname = '127.0.0.1';
  viaProxy.port = String(proxy.port);
  const t = await startTestServer({ databaseUrl: viaProxy.toString(), extra: { uploads: { heartbeat_seconds: 1 } } });
  return { pgDb, proxy, t };
}

/** Streaming PUTs of `bodies`: half of each now, the rest once `release` is called. */
function halfNowRestLater(
  bodies: Buffer[],
  urlOf: (i: number) => string,
  auth: Record<string, string>,
): { uploads: Promise<Awaited<ReturnType<typeof request>>>[]; release: () => void } {
  let release!: () => void;
  const released = new Promise<void>((r) => {
    release = r;
  });
  const uploads = bodies.map((b, i) => {
    async function* body(): AsyncGenerator<Buffer> {
      yield b.subarray(0, b.length / 2);
      await released;
      yield b.subarray(b.length / 2);
    }
    return request(urlOf(i), {
      method: 'PUT',
      headers: { ...auth, 'content-type': 'application/octet-stream', 'content-length': String(b.length) },
      body: body(),
      timeoutMs: 120_000,
    });
  });
  return { uploads, release };
}

async function inFlight(t: TestServer): Promise<number> {
  const g = await t.server.ctx.metrics.inFlight.get();
  return g.values.reduce((n, v) => n + v.value, 0);
}

async function underLoad(t: TestServer, proxy: CuttableProxy, databaseUrl: string, reset: boolean): Promise<void> {
  const bodies = Array.from({ length: 20 }, () => random(MiB));
  // Each body: half now, the rest once the database is cut.
  const { uploads, release } = halfNowRestLater(bodies, (i) => `${t.url}/objects/cut/f${i}.bin`, t.auth('alice'));
  // Every upload admitted (its run written) and streaming: then the cut.
  await eventually(async () => (await inFlight(t)) === 20, 60_000, '20 uploads in flight');
  await proxy.cut({ reset });
  release();
  // While the database is cut, more uploads arrive.
  const during = await Promise.all(
    bodies.slice(0, 5).map((b, i) => request(`${t.url}/objects/cut/during-${i}.bin`, { method: 'PUT', headers: t.auth('alice'), body: b, timeoutMs: 120_000 })),
  );
  const answers = await Promise.all(uploads);
  const acknowledged: Acknowledged[] = [];
  for (const [i, res] of [...answers, ...during].entries()) {
    if (res.status === 200) {
      acknowledged.push({ key: res.json<{ s3_key: string }>().s3_key, bytes: (i < 20 ? bodies[i] : bodies[i - 20]) as Buffer });
      continue;
    }
    assert.equal(res.status, 503, `upload ${i}: ${res.body.toString()}`);
    assert.equal(res.json<{ error_code: string }>().error_code, 'DATABASE_UNAVAILABLE', res.body.toString());
  }
  for (const res of during) assert.equal(res.status, 503, 'the database is cut: uploads are refused, retryable');

  await proxy.restore();
  // The gateway recovers: a new upload goes through.
  const again = await eventually(
    async () => {
      const res = await request(`${t.url}/objects/cut/after.bin`, { method: 'PUT', headers: t.auth('alice'), body: Buffer.from('after') });
      return res.status === 200 ? res : undefined;
    },
    60_000,
    'an upload to succeed once the database is back',
  );
  acknowledged.push({ key: again.json<{ s3_key: string }>().s3_key, bytes: Buffer.from('after') });
  // The sweeper settles whatever the outage left open.
  for (let i = 0; i < 60; i++) {
    await fetch(`${t.url}/api/admin/sweep`, { method: 'POST', headers: { 'x-admin-token': ADMIN_TOKEN } });
    const { runs } = await records(databaseUrl);
    if (!runs.some((r) => r.status === 'processing' || r.status === 'queued')) break;
    await sleep(500);
  }
  const truth = await assertRecordsTellTheTruth({ kind: 'fs', root: `${t.dir}/uploads` }, databaseUrl);
  assertNothingAcknowledgedLost(truth, acknowledged);
}
