import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from './helpers/server.js';

/**
 * Every authenticated upload attempt gets a run: a refusal at admission
 * (declared size over the limit, invalid path, invalid size) carries its
 * run_id, and the failed run is listed. Unauthenticated attempts get none.
 */
describe('refused uploads are recorded', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice', max_file_size_mb: 1 }] });
  });
  after(async () => t.stop());

  async function failedRun(runId: unknown): Promise<{ run_id: string; status: string; error_code: string }> {
    assert.equal(typeof runId, 'string', 'the refusal carries a run_id');
    const res = await fetch(`${t.url}/runs/v1?status=failed&limit=200`, { headers: t.auth('alice') });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { runs?: Array<{ run_id: string; status: string; error_code: string }>; items?: unknown };
    const list = body.runs ?? (body.items as Array<{ run_id: string; status: string; error_code: string }>);
    const run = list.find((r) => r.run_id === runId);
    assert.ok(run, `run ${String(runId)} is listed among the failed runs`);
    return run;
  }

  it('a declared size over the limit (413)', async () => {
    const res = await fetch(`${t.url}/objects/big.bin`, {
      method: 'PUT',
      headers: { ...t.auth('alice'), 'content-length': String(2 * 1024 * 1024) },
      body: Buffer.alloc(2 * 1024 * 1024),
      duplex: 'half',
    } as RequestInit);
    assert.equal(res.status, 413);
    const body = (await res.json()) as { error_code: string; run_id?: string };
    assert.equal(body.error_code, 'PAYLOAD_TOO_LARGE');
    const run = await failedRun(body.run_id);
    assert.equal(run.error_code, 'PAYLOAD_TOO_LARGE');
  });

  it('an invalid path', async () => {
    const res = await fetch(`${t.url}/objects/a%5cb`, { method: 'PUT', headers: t.auth('alice'), body: 'x' });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error_code: string; run_id?: string };
    assert.equal(body.error_code, 'INVALID_PATH');
    assert.equal((await failedRun(body.run_id)).error_code, 'INVALID_PATH');
  });

  it('an invalid file_size at chunked init', async () => {
    for (const fileSize of [-1, 'abc', 1.5]) {
      const res = await fetch(`${t.url}/upload/chunked/init`, {
        method: 'POST',
        headers: { ...t.auth('alice'), 'content-type': 'application/json' },
        body: JSON.stringify({ path: 'c/x.bin', file_size: fileSize }),
      });
      assert.equal(res.status, 400, `file_size ${JSON.stringify(fileSize)}`);
      const body = (await res.json()) as { error_code: string; run_id?: string };
      assert.equal((await failedRun(body.run_id)).error_code, 'INVALID_REQUEST');
    }
  });

  it('unauthenticated refusals get no run', async () => {
    const res = await fetch(`${t.url}/objects/x.bin`, { method: 'PUT', headers: { authorization: 'Bearer wrong-key-0123456789abcdef0123456789' }, body: 'x' });
    assert.equal(res.status, 401);
    const body = (await res.json()) as { run_id?: string };
    assert.equal(body.run_id, undefined);
  });
});
