import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { init, MiB, random, sendChunk } from './helpers/resumable.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.js';

/**
 * "In flight" means bytes arriving: an open resumable session between its
 * chunks is not in flight (it must not hold up a shutdown), and a refused
 * upload never moves the gauge.
 */
describe('uploads in flight', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice', max_file_size_mb: 1 }] });
  });
  after(async () => t.stop());

  async function gauge(): Promise<number> {
    const text = await (await fetch(`${t.url}/metrics`, { headers: { 'x-admin-token': ADMIN_TOKEN } })).text();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith('s3up_uploads_in_flight{')) sum += Number(line.split(' ').pop());
    }
    return sum;
  }

  it('counts bodies, not open sessions or refusals', async () => {
    const s = await init(t, 'alice', 'flight/a.bin', MiB, { chunk_size: MiB });
    assert.equal(await gauge(), 0, 'an idle session is not in flight');
    const refused = await fetch(`${t.url}/objects/flight/big.bin`, { method: 'PUT', headers: t.auth('alice'), body: Buffer.alloc(2 * MiB) });
    assert.equal(refused.status, 413);
    assert.equal(await gauge(), 0, 'a refusal does not move the gauge');
    assert.equal((await sendChunk(t, 'alice', s.file_id, 1, random(MiB))).status, 200);
    assert.equal(await gauge(), 0, 'a stored chunk is no longer in flight');
  });
});
