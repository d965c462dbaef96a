import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { validateContentType } from '../src/uploads/content-type.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const BAD = ['text/plain\r\nx-injected: 1', 'text/plain\nx', 'tëxt/plain', 'image/jpeg; x', 'nonsense'];

describe('content types are validated at admission', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => t.stop());

  it('accepts media types and refuses the rest', () => {
    assert.equal(validateContentType('image/jpeg'), 'image/jpeg');
    assert.equal(validateContentType('text/plain; charset=utf-8'), 'text/plain; charset=utf-8');
    assert.equal(validateContentType(''), undefined);
    for (const v of BAD) assert.throws(() => validateContentType(v), { code: 'INVALID_REQUEST' }, JSON.stringify(v));
  });

  const json = (client: string) => ({ ...t.auth(client), 'content-type': 'application/json' });

  it('chunked init, upload-url and tus refuse a bad content type with 400 and a recorded run', async () => {
    for (const bad of BAD) {
      const init = await fetch(`${t.url}/upload/chunked/init`, {
        method: 'POST',
        headers: json('alice'),
        body: JSON.stringify({ path: 'ct/a.bin', file_size: 10, content_type: bad }),
      });
      assert.equal(init.status, 400, `chunked ${JSON.stringify(bad)}`);
      assert.equal(typeof ((await init.json()) as { run_id?: string }).run_id, 'string');
      const url = await fetch(`${t.url}/runs/upload-url`, {
        method: 'POST',
        headers: json('alice'),
        body: JSON.stringify({ path: 'ct/b.bin', size: 10, content_type: bad }),
      });
      assert.equal(url.status, 400, `upload-url ${JSON.stringify(bad)}`);
      const tus = await fetch(`${t.url}/tus`, {
        method: 'POST',
        headers: {
          ...t.auth('alice'),
          'tus-resumable': '1.0.0',
          'upload-length': '10',
          'upload-metadata': `filename ${Buffer.from('ct/c.bin').toString('base64')},filetype ${Buffer.from(bad).toString('base64')}`,
        },
      });
      assert.equal(tus.status, 400, `tus ${JSON.stringify(bad)}`);
    }
    // Nothing was admitted: a good upload still works and serves its type.
    const ok = await fetch(`${t.url}/objects/ct/good.txt`, { method: 'PUT', headers: { ...t.auth('alice'), 'content-type': 'text/plain' }, body: 'hi' });
    assert.equal(ok.status, 200);
    const dl = await fetch(`${t.url}/download?path=ct/good.txt`, { headers: t.auth('alice') });
    assert.equal(dl.headers.get('content-type'), 'text/plain');
  });
});
