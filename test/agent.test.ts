import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { agentSetup, gatewayUploads, sha256, storedSha256, waitFor } from './helpers/agent.js';
import { startTestServer, type TestServer } from './helpers/server.js';

describe('s3up agent (real gateway, agent as a subprocess)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice' }, { name: 'small', max_file_size_mb: 1 }] });
  });
  after(async () => {
    await t.stop();
  });

  it('uploads existing and new files once, a rename under its new name, and nothing again after a restart', async () => {
    const a = agentSetup(t, 'alice');
    writeFileSync(path.join(a.watchDir, 'existing.txt'), 'was here before');
    mkdirSync(path.join(a.watchDir, 'sub'));
    writeFileSync(path.join(a.watchDir, 'sub', 'deep.bin'), Buffer.alloc(10_000, 7));
    writeFileSync(path.join(a.watchDir, 'editor.swp'), 'ignored');
    const p = a.start();
    try {
      await waitFor(() => gatewayUploads(t, 'alice').get('up/sub/deep.bin'), 'the existing files');
      writeFileSync(path.join(a.watchDir, 'new.txt'), 'arrived later');
      await waitFor(() => gatewayUploads(t, 'alice').get('up/new.txt'), 'the new file');
      renameSync(path.join(a.watchDir, 'new.txt'), path.join(a.watchDir, 'renamed.txt'));
      await waitFor(() => gatewayUploads(t, 'alice').get('up/renamed.txt'), 'the renamed file');
      const st = await a.status();
      assert.equal((st.queue as { pending: number }).pending, 0);
      assert.equal(st.running, true);
    } finally {
      assert.equal((await p.stop()).code, 0, p.stderr());
    }
    const uploads = gatewayUploads(t, 'alice');
    assert.equal(uploads.get('up/existing.txt'), 1);
    assert.equal(uploads.get('up/sub/deep.bin'), 1);
    assert.equal(uploads.get('up/new.txt'), 1);
    assert.equal(uploads.get('up/renamed.txt'), 1);
    assert.equal(uploads.has('up/editor.swp'), false, 'ignored by the default globs');
    assert.equal(storedSha256(t, 'alice', 'up/sub/deep.bin'), sha256(readFileSync(path.join(a.watchDir, 'sub', 'deep.bin'))));
    // A local delete deletes nothing remote.
    rmSync(path.join(a.watchDir, 'existing.txt'));
    // Restart with nothing new: nothing is uploaded again.
    const p2 = a.start();
    try {
      await waitFor(() => p2.lines().find((l) => l.msg === 'initial queue drained; watching'), 'the second start to drain');
    } finally {
      assert.equal((await p2.stop()).code, 0);
    }
    const again = gatewayUploads(t, 'alice');
    assert.deepEqual([...again.entries()].sort(), [...uploads.entries()].sort());
    const exists = await fetch(`${t.url}/exists?path=up/existing.txt`, { headers: t.auth('alice') });
    assert.equal(((await exists.json()) as { exists: boolean }).exists, true);
  });
});
