import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, readdirSync, readlinkSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FS_TMP_DIR } from '../src/storage/fs.js';
import { startTestServer } from './helpers/server.js';
import { mountTmpfs, requireRoot, rootSkip, unmountTmpfs } from './helpers/tools.js';

/** This process's open files under `dir`. */
function openFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir)) out.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** Fill the filesystem at `file`'s folder to the last byte. */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  const block = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) writeSync(fd, block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
  try {
    for (;;) writeSync(fd, block, 0, 1);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
}

/**
 * /ready on a full disk answers 503 naming the store, and its write probe
 * leaves nothing behind: no open file handle, no ready-* file. Needs root for
 * a small tmpfs as the storage root.
 */
describe('/ready on a full disk', () => {
  it('answers 503 for the store, leaks no handle and leaves no probe file; 200 once there is room', async (t) => {
    if (rootSkip) {
      t.skip(rootSkip);
      return;
    }
    requireRoot();
    const mnt = mountTmpfs('1m');
    let ts: Awaited<ReturnType<typeof startTestServer>> | undefined;
    try {
      const root = path.join(mnt, 'uploads');
      mkdirSync(root);
      ts = await startTestServer({ extra: { storage: { backend: 'fs', fs: { root } } } });
      assert.equal((await fetch(`${ts.url}/ready`)).status, 200);
      const filler = path.join(mnt, 'filler');
      fill(filler);
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${ts.url}/ready`);
        assert.equal(res.status, 503);
        const body = (await res.json()) as { checks: Record<string, { status: string; error?: string }> };
        assert.equal(body.checks.storage?.status, 'fail');
      }
      assert.deepEqual(openFilesUnder(mnt), [], 'no file handle left open on the store');
      const probes = readdirSync(path.join(root, FS_TMP_DIR)).filter((n) => n.startsWith('ready-'));
      assert.deepEqual(probes, [], 'no ready-* probe file left behind');
      rmSync(filler);
      assert.equal((await fetch(`${ts.url}/ready`)).status, 200);
    } finally {
      await ts?.stop();
      unmountTmpfs(mnt);
    }
  });
});
