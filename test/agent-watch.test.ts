import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { agentGateway, agentSetup, allArrived, fileWriter, gatewayUploads, waitFor } from './helpers/agent.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The agent's folder watches: one inotify watch per folder, kept true to the tree
 * as folders come, go, move and come back, and an exhausted inotify limit that is
 * said once and covered by rescans.
 */

/** A user namespace of our own, whose inotify watch limit this test may lower (Linux 5.11+, util-linux unshare). */
const LIMIT_WRAP = (watches: number) => ['unshare', '-Ur', 'sh', '-c', `echo ${watches} > /proc/sys/user/max_inotify_watches && exec "$0" "$@"`];
function limitSkip(): string | false {
  const probe = spawnSync(LIMIT_WRAP(5)[0] as string, [...LIMIT_WRAP(5).slice(1), 'true'], { encoding: 'utf8' });
  if (probe.status === 0) return false;
  const why = `cannot lower the inotify limit in a user namespace (unshare -Ur: ${(probe.stderr || probe.error?.message || '').trim()})`;
  if (process.env.CI) throw new Error(`${why}: .ci/run needs user namespaces for the inotify-limit test`);
  return why;
}

describe('s3up agent: folder watches', () => {
  const gateway = agentGateway();

  it('a folder deleted and made again, and a folder moved: later writes into them arrive by their events, and the watches follow the tree', async () => {
    const t = gateway();
    const a = agentSetup(t, 'alice');
    const { expected, write } = fileWriter(a.watchDir);
    const arrived = (what: string) => waitFor(() => allArrived(t, 'alice', expected.keys()), what);
    const folders = async () => ((await a.status()) as { daemon: { watches: Array<{ folders: number }> } | null }).daemon?.watches[0]?.folders;
    mkdirSync(path.join(a.watchDir, 'again', 'x'), { recursive: true });
    mkdirSync(path.join(a.watchDir, 'mover', 'y'), { recursive: true });
    mkdirSync(path.join(a.watchDir, 'quick', 'z'), { recursive: true });
    const p = a.start();
    try {
      await waitFor(() => p.lines().find((l) => l.msg === 'initial queue drained; watching'), 'the agent to watch');
      await waitFor(async () => (await folders()) === 7, 'the root and six folders watched');

      // Deleted, then made again under the same name: the old watches died with the old folders.
      rmSync(path.join(a.watchDir, 'again'), { recursive: true });
      await waitFor(async () => (await folders()) === 5, 'the deleted folders to lose their watches');
      mkdirSync(path.join(a.watchDir, 'again', 'x'), { recursive: true });
      write('again/x/first.bin'); // found by the crawl of the new folder, or by its event
      await arrived('the file in the new folder');
      await waitFor(async () => (await folders()) === 7, 'the new folders to be watched');
      write('again/x/second.bin'); // only an event on the new folder's own watch finds this one
      await arrived('a later file in the folder made again');

      // The same at once: the agent hears of the deletion only when the new folder is already there.
      rmSync(path.join(a.watchDir, 'quick'), { recursive: true });
      mkdirSync(path.join(a.watchDir, 'quick', 'z'), { recursive: true });
      write('quick/z/first.bin');
      await arrived('the file in the folder replaced at once');
      // Past the relisting of folders that had events (2 s after they go quiet, then not again
      // for 30 s): from here only the new folder's own watch can find a file written in it.
      await sleep(3_000);
      write('quick/z/second.bin');
      await arrived('a later file in the folder replaced at once');

      // Moved within the tree: events under the new name, uploaded under the new name.
      renameSync(path.join(a.watchDir, 'mover'), path.join(a.watchDir, 'moved'));
      write('moved/y/after-move.bin');
      await arrived('the file in the moved folder');
      await waitFor(async () => (await folders()) === 7, 'the moved folders to be watched under their new names');
      write('moved/y/later.bin');
      await arrived('a later file in the moved folder');
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
    assert.equal(p.lines().filter((l) => l.why === 'periodic').length, 0, 'found by events and crawls, not by a periodic rescan');
    const uploads = gatewayUploads(t, 'alice');
    for (const k of expected.keys()) assert.equal(uploads.get(k), 1, k);
    assert.equal(uploads.has('up/mover/y/after-move.bin'), false, 'nothing under the old name');
  });

  it('an exhausted inotify limit is logged once, rescans find the files of unwatched folders, and it never loops', { skip: limitSkip() }, async () => {
    const t = gateway();
    const a = agentSetup(t, 'alice', { scan: { rescan_interval_minutes: 0.03 } });
    const { expected, write } = fileWriter(a.watchDir);
    for (let i = 0; i < 30; i++) {
      mkdirSync(path.join(a.watchDir, `d${i}`));
      write(`d${i}/existing.bin`);
    }
    // 31 folders, 10 watches allowed.
    const p = a.start(LIMIT_WRAP(10));
    try {
      await arrived();
      for (let i = 0; i < 30; i++) write(`d${i}/later.bin`);
      await arrived();
      const rescans = () => p.lines().filter((l) => l.msg === 'scan done' && l.why === 'periodic').length;
      const seen = rescans();
      await waitFor(() => rescans() >= seen + 2, 'two more periodic rescans (each renews the watches and meets the limit again)');
      const st = ((await a.status()) as { daemon: { warnings: string[]; inotify_watches: number | null } }).daemon;
      assert.equal(st.warnings.filter((w) => w.includes('inotify limit')).length, 1, st.warnings.join('\n'));
      assert.ok(st.inotify_watches !== null && st.inotify_watches <= 10, `watches held: ${st.inotify_watches}`);
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
    const limitLines = p.lines().filter((l) => l.warning === 'inotify-limit');
    assert.equal(limitLines.length, 1, 'said once');
    assert.match(limitLines[0]?.msg ?? '', /max_user_watches/);
    const scanReasons = new Set(
      p
        .lines()
        .filter((l) => l.msg === 'scan done')
        .map((l) => String(l.why)),
    );
    assert.deepEqual([...scanReasons].sort(), ['periodic', 'startup'], 'no rescan is asked for by the limit itself (a loop while it stays exhausted)');
    const uploads = gatewayUploads(t, 'alice');
    for (const k of expected.keys()) assert.equal(uploads.get(k), 1, k);

    function arrived() {
      return waitFor(() => allArrived(t, 'alice', expected.keys()), 'every file');
    }
  });
});
