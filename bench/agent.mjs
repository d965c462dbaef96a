#!/usr/bin/env node
// Benchmark of the watching agent (s3up agent), each figure next to a baseline
// measured in the same run:
//   1. initial upload of N existing 4 KiB files (upload_existing: true): files/s,
//      against the gateway's own small-upload rate (bench/loadgen.mjs) at the
//      agent's concurrency, on the same gateway;
//   2. close-to-uploaded latency with a 1 s debounce: p50/p99 over M files written
//      one by one (the agent's upload log line time minus the file's close time);
//   3. watching a tree of T files: time until the watcher is ready and until the
//      first scan is done, the agent's RSS and inotify watches, next to lsyncd
//      (Debian) watching the same tree, when it is installed.
//   node bench/agent.mjs [--files 10000] [--latency-files 500] [--tree 200000] [--concurrency 4] [--only initial,latency,tree] [--no-build] [--json]
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const CLI_BIN = path.join(ROOT, 'dist', 'src', 'bin', 's3up.js');
const LOADGEN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'loadgen.mjs');
const log = (m) => console.error(`[agent] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const { values } = parseArgs({
  options: {
    files: { type: 'string', default: '10000' },
    'latency-files': { type: 'string', default: '500' },
    tree: { type: 'string', default: '200000' },
    concurrency: { type: 'string', default: '4' },
    only: { type: 'string', default: 'initial,latency,tree' },
    'no-build': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const only = new Set(values.only.split(','));

if (!values['no-build']) {
  const b = spawnSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' });
  if (b.status !== 0 && !existsSync(CLI_BIN)) process.exit(b.status ?? 1);
}
// Imported after the build: lib.mjs needs dist/.
const { benchTmp, cleanEnv, fmt, peakRssMB, printTable, rmrf, rssMB, runJson, startGateway, syncDisks } = await import('./lib.mjs');

/** Start `s3up agent --config` (the built JS) and follow its JSON log lines. */
function startAgent(dir, config) {
  const configPath = path.join(dir, 'client.yaml');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const t0 = Date.now();
  const proc = spawn(process.execPath, [CLI_BIN, 'agent', '--config', configPath], { cwd: dir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  let buf = '';
  let err = '';
  const waiters = [];
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const rec = JSON.parse(line);
        lines.push(rec);
        for (const w of waiters.slice()) if (w.pred(rec)) w.resolve(rec);
      } catch {}
    }
  });
  proc.stderr.on('data', (d) => {
    err += d;
  });
  const exited = new Promise((r) => proc.on('close', r));
  return {
    proc,
    t0,
    lines,
    waitFor(pred, what, timeoutMs = 600_000) {
      const found = lines.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`agent: timed out waiting for ${what}\n${err}`)), timeoutMs);
        waiters.push({
          pred,
          resolve: (rec) => {
            clearTimeout(timer);
            resolve(rec);
          },
        });
        exited.then(() => reject(new Error(`agent exited while waiting for ${what}\n${err}`)));
      });
    },
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

function agentConfig(gw, dir, watchDir, extra = {}) {
  return {
    server: { url: gw.url, api_key: gw.key },
    database: { path: path.join(dir, 'agent.db') },
    watches: [{ local_path: watchDir, remote_prefix: 'agent/', recursive: true }],
    scan: { upload_existing: true },
    stability: { debounce_seconds: 1 },
    upload: { concurrency: Number(values.concurrency) },
    reports: { enabled: false },
    log_level: 'info',
    ...extra,
  };
}

async function inotifyWatches(pid) {
  let n = 0;
  for (const fd of await readdir(`/proc/${pid}/fdinfo`).catch(() => [])) {
    const text = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
    for (const line of text.split('\n')) if (line.startsWith('inotify wd:')) n++;
  }
  return n;
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const rows = [];
const results = {};
const tmp = benchTmp('agent');
try {
  const gw = await startGateway({ dir: path.join(tmp, 'gw') });
  try {
    if (only.has('initial')) {
      const n = Number(values.files);
      const c = Number(values.concurrency);
      const dir = path.join(tmp, 'initial');
      const watchDir = path.join(dir, 'watched');
      log(`writing ${n} files of 4 KiB`);
      for (let d = 0; d < Math.ceil(n / 1000); d++) mkdirSync(path.join(watchDir, `d${d}`), { recursive: true });
      const bodies = Array.from({ length: 16 }, () => randomBytes(4096));
      for (let i = 0; i < n; i++) writeFileSync(path.join(watchDir, `d${Math.floor(i / 1000)}`, `f${i}.bin`), bodies[i % 16]);
      syncDisks();
      const agent = startAgent(dir, agentConfig(gw, dir, watchDir));
      const scanned = await agent.waitFor((l) => l.msg === 'scan of all watches done', 'the scan');
      const drained = await agent.waitFor((l) => l.msg === 'initial queue drained; watching', 'the drain');
      const uploaded = agent.lines.filter((l) => l.msg === 'upload' && l.outcome === 'uploaded').length;
      const seconds = (drained.time - scanned.time) / 1000;
      const rss = peakRssMB(agent.proc.pid);
      await agent.stop();
      log(`agent: ${uploaded} files in ${fmt(seconds, 2)} s after the scan (debounce 1 s included)`);
      syncDisks();
      const base = await runJson(LOADGEN, [
        '--url',
        `${gw.url}/objects/loadgen`,
        '--count',
        String(n),
        '--warmup',
        '200',
        '--concurrency',
        String(c),
        '--size',
        '4096',
        '--auth',
        gw.key,
      ]);
      log(`gateway alone (loadgen, c=${c}): ${fmt(base.perSecond, 0)} uploads/s`);
      const perSecond = uploaded / seconds;
      results.initial = { files: n, uploaded, seconds, perSecond, gatewayPerSecond: base.perSecond, concurrency: c, peakRssMB: rss };
      rows.push({
        benchmark: `agent initial upload, ${n} x 4 KiB, c=${c}, debounce 1 s`,
        figure: `${fmt(perSecond, 0)} files/s (${uploaded} in ${fmt(seconds, 1)} s)`,
        baseline: `gateway small uploads c=${c}: ${fmt(base.perSecond, 0)}/s`,
        ratio: fmt(perSecond / base.perSecond, 3),
        'peak RSS': `${fmt(rss)} MB`,
        target: '>= 0.5',
        met: perSecond / base.perSecond >= 0.5 ? 'yes' : 'NO',
      });
    }

    if (only.has('latency')) {
      const m = Number(values['latency-files']);
      const dir = path.join(tmp, 'latency');
      const watchDir = path.join(dir, 'watched');
      mkdirSync(watchDir, { recursive: true });
      const agent = startAgent(dir, agentConfig(gw, dir, watchDir));
      await agent.waitFor((l) => l.msg === 'initial queue drained; watching', 'the agent to watch');
      const closedAt = new Map();
      const body = randomBytes(4096);
      log(`writing ${m} files one by one`);
      for (let i = 0; i < m; i++) {
        const file = path.join(watchDir, `l${i}.bin`);
        const fd = openSync(file, 'w');
        writeSync(fd, body);
        closeSync(fd);
        closedAt.set(file, Date.now());
        await sleep(10);
      }
      const lat = [];
      for (const [file, t] of closedAt) {
        const rec = await agent.waitFor((l) => l.msg === 'upload' && l.outcome === 'uploaded' && l.path === file, file);
        lat.push(rec.time - t);
      }
      const rss = peakRssMB(agent.proc.pid);
      await agent.stop();
      const p50 = pct(lat, 50);
      const p99 = pct(lat, 99);
      results.latency = { files: m, p50, p99, debounceMs: 1000, peakRssMB: rss };
      log(`latency p50 ${p50} ms, p99 ${p99} ms`);
      rows.push({
        benchmark: `agent close-to-uploaded latency, ${m} files one by one, debounce 1 s`,
        figure: `p50 ${p50} ms / p99 ${p99} ms`,
        baseline: 'debounce 1000 ms',
        ratio: `p99 - debounce = ${p99 - 1000} ms`,
        'peak RSS': `${fmt(rss)} MB`,
        target: 'p99 <= debounce + 1 s',
        met: p99 <= 2000 ? 'yes' : 'NO',
      });
    }

    if (only.has('tree')) {
      const total = Number(values.tree);
      const perDir = 100;
      const dir = path.join(tmp, 'tree');
      const watchDir = path.join(dir, 'watched');
      log(`creating a tree of ${total} files in ${Math.ceil(total / perDir)} folders`);
      for (let d = 0; d < Math.ceil(total / perDir); d++) {
        const sub = path.join(watchDir, `g${Math.floor(d / 50)}`, `d${d}`);
        mkdirSync(sub, { recursive: true });
        for (let i = 0; i < perDir && d * perDir + i < total; i++) closeSync(openSync(path.join(sub, `f${i}`), 'w'));
      }
      syncDisks();
      const agent = startAgent(dir, agentConfig(gw, dir, watchDir, { scan: { upload_existing: false } }));
      const ready = await agent.waitFor((l) => l.msg === 'watching (events are queued until the scan is done)', 'the watcher');
      const scanned = await agent.waitFor((l) => l.msg === 'initial queue drained; watching', 'the first scan', 1_800_000);
      await sleep(1000);
      const a = {
        readyS: (ready.time - agent.t0) / 1000,
        scannedS: (scanned.time - agent.t0) / 1000,
        rssMB: rssMB(agent.proc.pid),
        peakRssMB: peakRssMB(agent.proc.pid),
        watches: await inotifyWatches(agent.proc.pid),
      };
      await agent.stop();
      log(
        `agent: watcher ready ${fmt(a.readyS, 2)} s, first scan done ${fmt(a.scannedS, 1)} s, RSS ${fmt(a.rssMB)} MB (peak ${fmt(a.peakRssMB)}), ${a.watches} inotify watches`,
      );
      let l;
      if (existsSync('/usr/bin/lsyncd')) {
        // lsyncd syncing the tree to a local folder with rsync: ready when its startup sync finished.
        const dest = path.join(dir, 'lsyncd-dest');
        mkdirSync(dest, { recursive: true });
        const logFile = path.join(dir, 'lsyncd.log');
        const conf = path.join(dir, 'lsyncd.conf.lua');
        writeFileSync(
          conf,
          `settings { logfile = "${logFile}", nodaemon = true, insist = true, maxProcesses = 1 }\nsync { default.rsync, source = "${watchDir}", target = "${dest}", delay = 1 }\n`,
        );
        const t0 = Date.now();
        const proc = spawn('/usr/bin/lsyncd', [conf], { stdio: ['ignore', 'ignore', 'pipe'] });
        let readyAt;
        for (;;) {
          const text = await readFile(logFile, 'utf8').catch(() => '');
          if (/Startup of .* finished/.test(text)) {
            readyAt = Date.now();
            break;
          }
          if (proc.exitCode !== null || Date.now() - t0 > 1_800_000) break;
          await sleep(200);
        }
        await sleep(1000);
        l =
          proc.exitCode === null
            ? {
                readyS: readyAt ? (readyAt - t0) / 1000 : Number.NaN,
                rssMB: rssMB(proc.pid),
                peakRssMB: peakRssMB(proc.pid),
                watches: await inotifyWatches(proc.pid),
              }
            : undefined;
        proc.kill('SIGTERM');
        await new Promise((r) => proc.on('close', r));
        if (l) log(`lsyncd: first sync done ${fmt(l.readyS, 1)} s, RSS ${fmt(l.rssMB)} MB, ${l.watches} inotify watches`);
      } else log('lsyncd is not installed (apt-get install lsyncd): no baseline');
      results.tree = { files: total, agent: a, lsyncd: l ?? null };
      rows.push({
        benchmark: `agent watching ${total} files in ${Math.ceil(total / perDir)} folders`,
        figure: `ready ${fmt(a.readyS, 2)} s, scanned ${fmt(a.scannedS, 1)} s, RSS ${fmt(a.rssMB)} MB (peak ${fmt(a.peakRssMB)}), ${a.watches} watches`,
        baseline: l ? `lsyncd: first sync ${fmt(l.readyS, 1)} s, RSS ${fmt(l.rssMB)} MB, ${l.watches} watches` : 'lsyncd not installed',
        ratio: l ? `RSS x${fmt(a.rssMB / l.rssMB, 1)}, watches x${fmt(a.watches / l.watches, 2)}` : '-',
        'peak RSS': `${fmt(a.peakRssMB)} MB`,
        target: 'RSS <= 150 MB',
        met: a.peakRssMB <= 150 ? 'yes' : 'NO',
      });
    }
  } finally {
    await gw.stop().catch(() => {});
  }
} finally {
  rmrf(tmp);
}
console.log('');
printTable(rows);
if (values.json) console.log(JSON.stringify(results, null, 2));
