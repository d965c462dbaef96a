import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BACKENDS, startTestServer, type TestServer } from './helpers/server.js';

for (const backend of BACKENDS) {
  describe(`smoke (${backend})`, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ backend });
    });
    after(async () => {
      await t.stop();
    });

    it('uploads with PUT and downloads the same bytes', async () => {
      const body = Buffer.from('hello s3up');
      const put = await fetch(`${t.url}/objects/docs/hello.txt`, { method: 'PUT', headers: { ...t.auth('alice'), 'content-type': 'text/plain' }, body });
      assert.equal(put.status, 200);
      const res = (await put.json()) as { s3_key: string; size: number };
      assert.equal(res.s3_key, 'backups/alice/docs/hello.txt');
      assert.equal(res.size, body.length);
      const get = await fetch(`${t.url}/download?path=docs/hello.txt`, { headers: t.auth('alice') });
      assert.equal(get.status, 200);
      assert.equal(get.headers.get('content-type'), 'text/plain');
      assert.deepEqual(Buffer.from(await get.arrayBuffer()), body);
    });
  });
}
