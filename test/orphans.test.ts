import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnBin } from './helpers/bin.js';
import { MiB, random } from './helpers/resumable.js';
import { startTestServer, sweepUntil } from './helpers/server.js';
import { type Acknowledged, assertNothingAcknowledgedLost, assertRecordsTellTheTruth } from './helpers/truth.js';

interface RunJson {
  run_id: string;
  status: string;
  error_code: string | null;
  path: string;
}

/**
 * No run stays open for good: the uploads of a gateway killed with -9 are
 * settled once its heartbeat is gone, and a direct upload URL that expired
 * unused settles its queued run.
 */
describe('orphaned runs are settled', () => {
  it('after kill -9 under 20 concurrent uploads, and for a direct key never used', async () => {
    const ts = await startTestServer({
      extra: { uploads: { heartbeat_seconds: 1, direct_url_ttl_seconds: 1 }, retention: { enabled: true, ttl_days: 30, sweep_interval_minutes: 60 } },
    });
    await ts.server.close();
    const key = ts.keys.alice as string;
    const auth = { authorization: `Bearer ${key}` };
    const a = spawnBin(['--config', ts.configPath, '--port', '0'], { cwd: ts.dir, timeoutMs: 60_000, env: { LOG_LEVEL: 'info' } });
    let b: ReturnType<typeof spawnBin> | undefined;
    const requests: http.ClientRequest[] = [];
    try {
      const urlA = await a.listening;
      // Uploads acknowledged before the crash must survive it byte-exact.
      const acknowledged: Acknowledged[] = [];
      for (let i = 0; i < 3; i++) {
        const bytes = random(256 * 1024);
        const res = await fetch(`${urlA}/objects/done/d${i}.bin`, { method: 'PUT', headers: auth, body: bytes });
        assert.equal(res.status, 200, await res.clone().text());
        acknowledged.push({ key: ((await res.json()) as { s3_key: string }).s3_key, bytes });
      }
      // Twenty uploads that stop half way, mid-flight when the gateway dies.
      for (let i = 0; i < 20; i++) {
        const req = http.request(`${urlA}/objects/crash/f${i}.bin`, {
          method: 'PUT',
          headers: { ...auth, 'content-length': String(8 * MiB) },
        });
        req.on('error', () => {});
        req.write(Buffer.alloc(MiB, i));
        requests.push(req);
      }
      const processing = async (url: string): Promise<RunJson[]> => {
        const res = await fetch(`${url}/runs/v1?status=processing&limit=200`, { headers: auth });
        return ((await res.json()) as { runs: RunJson[] }).runs;
      };
      for (let i = 0; i < 300 && (await processing(urlA)).length < 20; i++) await sleep(100);
      const open = await processing(urlA);
      assert.equal(open.length, 20, 'twenty uploads are in flight');
      a.proc.kill('SIGKILL');
      await a.exited;
      for (const r of requests) r.destroy();

      b = spawnBin(['--config', ts.configPath, '--port', '0'], { cwd: ts.dir, timeoutMs: 60_000, env: { LOG_LEVEL: 'info' } });
      const urlB = await b.listening;
      await sweepUntil(urlB, async () => ((await processing(urlB)).length === 0 ? true : undefined), 'the orphaned runs to settle');
      for (const run of open) {
        const res = await fetch(`${urlB}/runs/v1/${run.run_id}`, { headers: auth });
        const got = (await res.json()) as RunJson;
        assert.equal(got.status, 'failed', `run ${run.run_id} is settled`);
        assert.equal(got.error_code, 'UPLOAD_ABORTED');
        const ex = (await (await fetch(`${urlB}/exists?path=${got.path}`, { headers: auth })).json()) as { exists: boolean };
        assert.equal(ex.exists, false, 'nothing of a cut upload is published');
      }
      const tmp = path.join(ts.dir, 'uploads', '.s3up-tmp');
      const temps = existsSync(tmp) ? readdirSync(tmp).filter((f) => f.endsWith('.part')) : [];
      assert.deepEqual(temps, [], 'no temp file of a cut upload remains after restart');
      const store = { kind: 'fs' as const, root: path.join(ts.dir, 'uploads') };
      assertNothingAcknowledgedLost(await assertRecordsTellTheTruth(store, ts.databaseUrl), acknowledged);

      // A direct upload key that is never used.
      const issued = await fetch(`${urlB}/runs/upload-url`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ runId: 'never-used' }),
      });
      assert.equal(issued.status, 200);
      const runId = ((await issued.json()) as { run_id: string }).run_id;
      const settled = await sweepUntil(
        urlB,
        async () => {
          const run = (await (await fetch(`${urlB}/runs/v1/${runId}`, { headers: auth })).json()) as RunJson;
          return run.status === 'queued' ? undefined : run;
        },
        'the unused direct key to settle',
      );
      assert.equal(settled.status, 'failed');
      assert.equal(settled.error_code, 'UPLOAD_KEY_EXPIRED');
      assertNothingAcknowledgedLost(await assertRecordsTellTheTruth(store, ts.databaseUrl), acknowledged);
    } finally {
      for (const r of requests) r.destroy();
      if (a.proc.exitCode === null && a.proc.signalCode === null) a.proc.kill('SIGKILL');
      await b?.stop();
      await ts.stop();
    }
  });
});
