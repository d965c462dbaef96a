import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { loadConfig } from '../src/config/load.js';
import { startServer } from '../src/server/main.js';
import { agentSetup, allArrived, cleanupAgents, fileWriter, gatewayDb, gatewayUploads, sha256, spawnCli, storedSha256, waitFor } from './helpers/agent.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('s3up agent (real gateway, agent as a subprocess)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice' }, { name: 'small', max_file_size_mb: 1 }] });
  });
  after(async () => {
    await cleanupAgents();
    await t.stop();
  });

  it('uploads existing and new files once, a rename under its new name, a changed file again, and nothing after a restart', async () => {
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
      // A changed file (size or mtime) is uploaded again.
      appendFileSync(path.join(a.watchDir, 'sub', 'deep.bin'), 'more');
      await waitFor(() => gatewayUploads(t, 'alice').get('up/sub/deep.bin') === 2, 'the changed file uploaded again');
      const st = await a.status();
      assert.equal((st.queue as { pending: number }).pending, 0);
      assert.equal(st.running, true);
    } finally {
      assert.equal((await p.stop()).code, 0, p.stderr());
    }
    const uploads = gatewayUploads(t, 'alice');
    assert.equal(uploads.get('up/existing.txt'), 1);
    assert.equal(uploads.get('up/sub/deep.bin'), 2);
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

  it('a slow writer trickling for longer than the debounce: only the whole file is ever uploaded', async () => {
    const a = agentSetup(t, 'alice', { stability: { debounce_seconds: 1.5 } });
    const p = a.start();
    try {
      await waitFor(() => p.lines().find((l) => l.msg === 'initial queue drained; watching'), 'the agent to watch');
      const file = path.join(a.watchDir, 'growing.log');
      const writes = 50;
      for (let i = 0; i < writes; i++) {
        appendFileSync(file, `line ${i} ${'x'.repeat(200)}\n`);
        await sleep(100); // 5 s of writing, 100 ms apart, against a 1.5 s debounce
      }
      const whole = readFileSync(file);
      await waitFor(() => gatewayUploads(t, 'alice').get('up/growing.log'), 'the finished file');
      // Give it the time of two more debounces to (wrongly) upload again, then look.
      await waitFor(() => p.lines().filter((l) => l.msg === 'upload' && l.path === file).length >= 1, 'the upload log line');
      assert.equal(gatewayUploads(t, 'alice').get('up/growing.log'), 1, 'uploaded exactly once');
      assert.equal(storedSha256(t, 'alice', 'up/growing.log'), sha256(whole), 'the whole file');
      const line = p.lines().find((l) => l.msg === 'upload' && l.path === file);
      assert.equal(line?.outcome, 'uploaded');
      assert.equal(line?.size, whole.length);
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
  });

  it('nested folders made with mkdir -p and filled at once, then written again later: every file arrives', async () => {
    const a = agentSetup(t, 'alice');
    const p = a.start();
    const { expected, write } = fileWriter(a.watchDir, 100);
    try {
      await waitFor(() => p.lines().find((l) => l.msg === 'initial queue drained; watching'), 'the agent to watch');
      for (let i = 0; i < 40; i++) {
        mkdirSync(path.join(a.watchDir, `n${i}`, 'a', 'b'), { recursive: true });
        for (let j = 0; j < 5; j++) write(`n${i}/a/b/early${j}.bin`);
      }
      await waitFor(() => allArrived(t, 'alice', expected.keys()), 'the files written at once');
      // Later writes into the nested folders must raise events too (no rescan runs in this test).
      for (let i = 0; i < 40; i++) write(`n${i}/a/b/late.bin`);
      await waitFor(() => allArrived(t, 'alice', expected.keys()), 'the files written later');
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
    assert.equal(p.lines().filter((l) => l.why === 'periodic').length, 0, 'found by events and crawls, not by a periodic rescan');
    const uploads = gatewayUploads(t, 'alice');
    for (const k of expected.keys()) assert.equal(uploads.get(k), 1, k);
    assert.equal(storedSha256(t, 'alice', 'up/n7/a/b/late.bin'), expected.get('up/n7/a/b/late.bin'));
  });

  it('permanent refusals are parked with their reason, shown in status, and do not hold up the rest', async () => {
    const a = agentSetup(t, 'small');
    writeFileSync(path.join(a.watchDir, 'too-big.bin'), Buffer.alloc(2 * 1024 * 1024, 1));
    writeFileSync(path.join(a.watchDir, 'bad\u0001name.txt'), 'control character in the name');
    writeFileSync(path.join(a.watchDir, 'fine.txt'), 'fine');
    const p = a.start();
    try {
      await waitFor(async () => ((await a.status()).queue as { parked: number }).parked === 2, 'two parked files');
      await waitFor(() => gatewayUploads(t, 'small').get('up/fine.txt'), 'the fine file');
      const st = (await a.status()) as { parked: Array<{ path: string; code: string; reason: string }> };
      const byName = new Map(st.parked.map((x) => [path.basename(x.path), x]));
      assert.equal(byName.get('too-big.bin')?.code, 'PAYLOAD_TOO_LARGE');
      assert.equal(byName.get('bad\u0001name.txt')?.code, 'INVALID_PATH');
      assert.match(byName.get('bad\u0001name.txt')?.reason ?? '', /^400 INVALID_PATH/);
      const text = await a.statusText();
      assert.match(text, /^agent: running \(pid \d+/);
      assert.match(text, /parked \(permanent refusals; retried when the file changes\):\n/);
      assert.match(text, /too-big\.bin: 413 PAYLOAD_TOO_LARGE/);
      assert.match(text, /bad\u0001name\.txt: 400 INVALID_PATH/);
      // Logged once each, not retried.
      await sleep(1000);
      assert.equal(p.lines().filter((l) => l.msg === 'parked: permanent refusal').length, 2);
      // A parked file that changes is tried again.
      writeFileSync(path.join(a.watchDir, 'too-big.bin'), Buffer.alloc(1000, 2));
      await waitFor(() => gatewayUploads(t, 'small').get('up/too-big.bin'), 'the shrunk file');
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
  });

  it('gateway down for 30 s while files appear: the agent queues, probes with backoff, and drains when it returns', async () => {
    const g = await startTestServer({ clients: [{ name: 'carol' }] });
    const port = Number(new URL(g.url).port);
    const a = agentSetup(g, 'carol', { upload: { max_retry_delay_seconds: 8 } });
    const p = a.start();
    let restarted: Awaited<ReturnType<typeof startServer>> | undefined;
    const expected = new Map<string, string>();
    try {
      await waitFor(() => p.lines().find((l) => l.msg === 'initial queue drained; watching'), 'the agent to watch');
      await g.server.close(1000);
      const downAt = Date.now();
      for (let i = 0; i < 30; i++) {
        const body = randomBytes(500);
        writeFileSync(path.join(a.watchDir, `offline${i}.bin`), body);
        expected.set(`up/offline${i}.bin`, sha256(body));
      }
      // Down for 30 s (the outage of the spec's test), with a few probes failed meanwhile.
      await waitFor(() => Date.now() - downAt >= 30_000 && p.lines().filter((l) => l.outcome === 'retry_later').length >= 3, '30 s and a few failed probes');
      const st = (await a.status()) as { daemon: { gateway: { state: string } }; queue: { pending: number } };
      assert.equal(st.daemon.gateway.state, 'backoff');
      assert.ok(st.queue.pending > 0);
      // The probes are spaced out: no storm of attempts while it is down.
      const probes = p.lines().filter((l) => l.outcome === 'retry_later').length;
      assert.ok(probes < 30, `${probes} probes`);
      const config = loadConfig({ configPath: g.configPath, env: {}, cwd: g.dir, port });
      restarted = await startServer(config, { logger: pino({ level: 'silent' }) });
      await waitFor(() => allArrived(g, 'carol', expected.keys()), 'the queue to drain');
      assert.ok(p.lines().some((l) => l.msg === 'gateway answers again: draining the queue'));
      assert.equal((await p.stop()).code, 0);
      for (const [k, sum] of expected) {
        assert.equal(gatewayUploads(g, 'carol').get(k), 1, k);
        assert.equal(storedSha256(g, 'carol', k), sum);
      }
    } finally {
      await p.stop();
      await restarted?.close(1000);
      await g.stop().catch(() => {});
    }
  });

  it('upload_existing: false records the first scan without uploading; changes, new files and files added while stopped are uploaded (spec form: s3up --config)', async () => {
    const a = agentSetup(t, 'alice', { scan: { upload_existing: false } });
    const w = a.watchDir;
    writeFileSync(path.join(w, 'old-a.txt'), 'a');
    writeFileSync(path.join(w, 'old-b.txt'), 'b');
    const env = { AGENT_TEST_KEY: t.keys.alice };
    const p = spawnCli(['--config', a.configPath], { cwd: a.dir, env });
    try {
      await waitFor(() => p.lines().find((l) => l.msg === 'initial queue drained; watching'), 'the agent to watch');
      assert.ok(p.lines().some((l) => l.msg === 'scan done' && l.recorded_without_upload === true));
      writeFileSync(path.join(w, 'new.txt'), 'new');
      writeFileSync(path.join(w, 'old-a.txt'), 'a, changed');
      await waitFor(() => gatewayUploads(t, 'alice').get('up/new.txt') && gatewayUploads(t, 'alice').get('up/old-a.txt'), 'the new and the changed file');
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
    writeFileSync(path.join(w, 'while-stopped.txt'), 'added while the agent was stopped');
    const p2 = a.start();
    try {
      await waitFor(() => gatewayUploads(t, 'alice').get('up/while-stopped.txt'), 'the file added while stopped');
      await waitFor(() => p2.lines().find((l) => l.msg === 'initial queue drained; watching'), 'the drain');
    } finally {
      assert.equal((await p2.stop()).code, 0);
    }
    assert.equal(gatewayUploads(t, 'alice').has('up/old-b.txt'), false, 'an unchanged existing file is never uploaded');
    assert.equal(gatewayUploads(t, 'alice').get('up/old-a.txt'), 1);
  });

  it('posts its daily report and reads GET /config', async () => {
    const a = agentSetup(t, 'alice', { reports: { enabled: true, interval_minutes: 60 } });
    writeFileSync(path.join(a.watchDir, 'reported.txt'), 'counted in the report');
    const p = a.start();
    try {
      const cfg = await waitFor(() => p.lines().find((l) => l.msg === 'settings from the gateway'), 'the settings from GET /config');
      assert.equal(cfg.max_file_size, 100 * 1024 * 1024);
      await waitFor(() => p.lines().find((l) => l.msg === 'daily report sent'), 'the report');
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
    const today = new Date().toISOString().slice(0, 10);
    const row = gatewayDb(t, (db) => db.prepare(`SELECT * FROM client_reports WHERE client = 'alice' AND date = ?`).get(today)) as
      | { files_uploaded: number; queue_depth: number; agent_version: string }
      | undefined;
    assert.ok(row && row.files_uploaded >= 1, JSON.stringify(row));
    assert.equal(row.queue_depth, 0);
  });

  it('a bad client.yaml stops the agent with one line naming the file, the key and the problem', async () => {
    const a = agentSetup(t, 'alice');
    const cases: Array<[string, RegExp]> = [
      ['server: { url: "http://x", api_key: k }\nwatches: []\n', /client\.yaml: watches: at least one watch is required/],
      [
        `server: { url: "http://x", api_key: k }\nwatches: [{ local_path: ${JSON.stringify(a.watchDir)} }]\nstability: { debounce: 3 }\n`,
        /stability: unknown key\(s\): debounce/,
      ],
      [
        // biome-ignore lint/suspicious/noTemplateCurlyInString: client.yaml's literal ${ENV} syntax
        'server: { url: "http://x", api_key: "${S3UP_AGENT_UNSET_VAR}" }\nwatches: [{ local_path: /nonexistent }]\n',
        /server\.api_key: environment variable S3UP_AGENT_UNSET_VAR is not set/,
      ],
      [
        'server: { url: "http://x", api_key: k }\nwatches: [{ local_path: /nonexistent-s3up }]\n',
        /watches\[0\]\.local_path: cannot read \/nonexistent-s3up \(ENOENT\)/,
      ],
      [`server: { url: "ftp://x", api_key: k }\nwatches: [{ local_path: ${JSON.stringify(a.watchDir)} }]\n`, /server\.url: must be an http/],
    ];
    for (const [yaml, expected] of cases) {
      const file = path.join(a.dir, 'client.yaml');
      writeFileSync(file, yaml);
      const p = spawnCli(['agent', '--config', file], { cwd: a.dir });
      const { code } = await p.exited;
      assert.equal(code, 2, yaml);
      const lines = p.stderr().trim().split('\n');
      assert.equal(lines.length, 1, p.stderr());
      assert.match(lines[0] ?? '', expected);
      assert.ok(lines[0]?.startsWith(`s3up agent: config error in ${file}`), lines[0]);
    }
  });

  it('periodic rescans renew the folder watches: files written afterwards (nested too) arrive, nothing is uploaded twice', async () => {
    const a = agentSetup(t, 'alice', { scan: { rescan_interval_minutes: 0.03 } });
    const p = a.start();
    const { expected, write } = fileWriter(a.watchDir, 200);
    try {
      await waitFor(() => p.lines().find((l) => l.msg === 'initial queue drained; watching'), 'the agent to watch');
      mkdirSync(path.join(a.watchDir, 'r', 'a', 'b'), { recursive: true });
      write('r/a/b/first.bin');
      await waitFor(() => allArrived(t, 'alice', expected.keys()), 'the first file');
      const rescans = () => p.lines().filter((l) => l.msg === 'scan done' && l.why === 'periodic').length;
      const before = rescans();
      await waitFor(() => rescans() >= before + 2, 'two periodic rescans');
      write('r/a/b/after-rescans.bin');
      write('top-after-rescans.bin');
      await waitFor(() => allArrived(t, 'alice', expected.keys()), 'the files written after the rescans');
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
    const uploads = gatewayUploads(t, 'alice');
    for (const k of expected.keys()) assert.equal(uploads.get(k), 1, k);
  });
});
