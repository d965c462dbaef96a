// Benchmark "push": the bulk CLI (s3up push) against rclone and the gateway's own
// figures, in one run on one machine:
//   1. 10,000 x 4 KiB and 20 x 50 MiB: `s3up push --direct` vs `rclone copy --transfers 16`
//      to the same s3rver (each to its own prefix). Target: push at least as fast.
//   2. The same 10,000 files through the gateway (fs backend): push vs the load generator
//      of `bench small` at the same concurrency (16). Target >= 0.7.
//   3. A no-op re-run over 100,000 already-uploaded files: push vs rclone's no-op
//      `copy --fast-list` of the same tree. Target >= 10x faster.
//   4. A scan of 1,000,000 files: push's walk (names and types, as find reads them) vs
//      `find -type f | wc -l`. Target within 1.5x; peak RSS reported (target <= 200 MB).
//      Also the walk with its stat per file (size and mtime, what push decides by) vs find
//      doing the same stats (`-printf '%s %T@'`) and vs find's cheapest stat (`-size`).
// Every command runs under /usr/bin/time (wall seconds, peak RSS).
//
//   npm run build && node bench/push.mjs             # the figures for docs/benchmarks.md
//   node bench/push.mjs --quick                      # small sizes: proves the bench runs
//   node bench/push.mjs --files 10000 --big 20 --big-mb 50 --noop 100000 --scan 1000000 --workers 16
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { benchTmp, cleanEnv, fmt, MiB, makeRandomFile, printTable, ROOT, rmrf, runJson, startGateway, startS3rver, syncDisks } from './lib.mjs';

const S3UP_BIN = path.join(ROOT, 'dist', 'src', 'bin', 's3up.js');
const LOADGEN = path.join(ROOT, 'bench', 'loadgen.mjs');
const SCAN = path.join(ROOT, 'dist', 'src', 'transfer', 'scan.js');

const { values: argv } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    files: { type: 'string' },
    big: { type: 'string' },
    'big-mb': { type: 'string' },
    noop: { type: 'string' },
    scan: { type: 'string' },
    workers: { type: 'string' },
    rounds: { type: 'string' },
    skip: { type: 'string', multiple: true },
  },
});
const quick = Boolean(argv.quick);
const FILES = Number(argv.files ?? (quick ? 1000 : 10_000));
const BIG = Number(argv.big ?? (quick ? 2 : 20));
const BIG_MB = Number(argv['big-mb'] ?? (quick ? 20 : 50));
const NOOP = Number(argv.noop ?? (quick ? 2000 : 100_000));
const SCAN_N = Number(argv.scan ?? (quick ? 20_000 : 1_000_000));
const WORKERS = Number(argv.workers ?? 16);
const skip = new Set(argv.skip ?? []);
/** The upload cases run this many times, alternating push and its baseline; the table shows medians. */
const ROUNDS = Number(argv.rounds ?? (quick ? 1 : 3));
const log = (m) => console.error(`[push] ${m}`);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const each = (xs, digits = 2) => (xs.length > 1 ? ` (${xs.map((x) => fmt(x, digits)).join(', ')})` : '');

/** `ROUNDS` alternating runs of push and its baseline: their figures, round by round. */
async function alternate(push, other) {
  const runs = { push: [], other: [] };
  for (let r = 0; r < ROUNDS; r++) {
    syncDisks();
    runs.push.push(await push(r));
    syncDisks();
    runs.other.push(await other(r));
  }
  return runs;
}

if (!existsSync(S3UP_BIN)) throw new Error('bench: dist/ is missing: run `npm run build` first');

/** Run a command under /usr/bin/time: wall seconds and peak RSS (MB). */
function timed(cmd, args, { env = cleanEnv(), cwd = ROOT } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn('/usr/bin/time', ['-f', 'TIME %e %M', cmd, ...args], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => {
      out = (out + d.toString()).slice(-20_000);
    });
    proc.stderr.on('data', (d) => {
      err = (err + d.toString()).slice(-20_000);
    });
    proc.on('exit', (code) => {
      const m = /TIME ([\d.]+) (\d+)\s*$/.exec(err);
      if (code !== 0 || !m) return reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${err.slice(-2000)}`));
      resolve({ seconds: Number(m[1]), peakRssMB: (Number(m[2]) * 1024) / 1e6, stdout: out });
    });
  });
}

/** A tree of `count` files of `size` random bytes, 500 per folder. */
function makeTree(root, count, size) {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < count; i++) {
    const dir = path.join(root, `d${Math.floor(i / 500)}`);
    if (i % 500 === 0) mkdirSync(dir, { recursive: true });
    if (size > 0) randomFillSync(buf);
    writeFileSync(path.join(dir, `f${i}.dat`), buf);
  }
}

function rcloneEnv(s3) {
  const env = cleanEnv({
    RCLONE_CONFIG_BENCH_TYPE: 's3',
    RCLONE_CONFIG_BENCH_PROVIDER: 'Other',
    RCLONE_CONFIG_BENCH_ENDPOINT: s3.endpoint,
    RCLONE_CONFIG_BENCH_ACCESS_KEY_ID: s3.accessKeyId,
    RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY: s3.secretAccessKey,
    RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE: 'true',
  });
  // Debian's rclone refuses to start with a custom CA bundle it cannot load.
  delete env.AWS_CA_BUNDLE;
  return env;
}

function pushEnv(dir, extra = {}) {
  return cleanEnv({ HOME: dir, XDG_DATA_HOME: path.join(dir, 'xdg'), ...extra });
}

const rows = [];
const result = { files: FILES, big: BIG, bigMb: BIG_MB, noop: NOOP, scan: SCAN_N, workers: WORKERS };
const tmp = benchTmp('push');
const started = [];
try {
  const s3 = await startS3rver(path.join(tmp, 's3rver'));
  started.push(s3);
  const s3env = (dir) => pushEnv(dir, { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey });
  const direct = (src, prefix, extra = []) => [
    S3UP_BIN,
    'push',
    src,
    '--direct',
    `s3://${s3.bucket}/${prefix}`,
    '--endpoint',
    s3.endpoint,
    '--workers',
    String(WORKERS),
    '--no-progress',
    ...extra,
  ];
  const rclone = (src, prefix, extra = []) => ['copy', src, `bench:${s3.bucket}/${prefix}`, '--transfers', String(WORKERS), ...extra];

  const small = path.join(tmp, 'small');
  log(`writing ${FILES} x 4 KiB files`);
  makeTree(small, FILES, 4096);

  if (!skip.has('direct')) {
    const small3 = await alternate(
      (r) => timed(process.execPath, direct(small, `push-small-${r}`), { env: s3env(tmp) }),
      (r) => timed('rclone', rclone(small, `rclone-small-${r}`), { env: rcloneEnv(s3) }),
    );
    const ratios = small3.push.map((p, i) => small3.other[i].seconds / p.seconds);
    rows.push({
      case: `${FILES} x 4 KiB, --direct vs rclone`,
      push_s: fmt(median(small3.push.map((x) => x.seconds)), 2),
      other_s: fmt(median(small3.other.map((x) => x.seconds)), 2),
      ratio: `${fmt(median(ratios), 2)}${each(ratios)}`,
      push_peak_MB: fmt(Math.max(...small3.push.map((x) => x.peakRssMB)), 0),
      target: '>= 1',
    });
    result.smallDirect = { push: small3.push.map((x) => x.seconds), rclone: small3.other.map((x) => x.seconds), ratios };

    const big = path.join(tmp, 'big');
    mkdirSync(big);
    log(`writing ${BIG} x ${BIG_MB} MiB files`);
    for (let i = 0; i < BIG; i++) makeRandomFile(path.join(big, `big${i}.bin`), BIG_MB * MiB);
    const big3 = await alternate(
      (r) => timed(process.execPath, direct(big, `push-big-${r}`), { env: s3env(tmp) }),
      (r) => timed('rclone', rclone(big, `rclone-big-${r}`), { env: rcloneEnv(s3) }),
    );
    const bigRatios = big3.push.map((p, i) => big3.other[i].seconds / p.seconds);
    rows.push({
      case: `${BIG} x ${BIG_MB} MiB, --direct vs rclone`,
      push_s: fmt(median(big3.push.map((x) => x.seconds)), 2),
      other_s: fmt(median(big3.other.map((x) => x.seconds)), 2),
      ratio: `${fmt(median(bigRatios), 2)}${each(bigRatios)}`,
      push_peak_MB: fmt(Math.max(...big3.push.map((x) => x.peakRssMB)), 0),
      target: '>= 1',
    });
    result.bigDirect = { push: big3.push.map((x) => x.seconds), rclone: big3.other.map((x) => x.seconds), ratios: bigRatios };
    rmrf(big);
  }

  if (!skip.has('gateway')) {
    const gw = await startGateway({ dir: path.join(tmp, 'gw') });
    started.push(gw);
    // Warm the gateway first (as bench small does), so the first round's push does not pay for it.
    const loadgen = (prefix, count) =>
      runJson(LOADGEN, [
        '--url',
        `${gw.url}/objects/${prefix}`,
        '--count',
        String(count),
        '--warmup',
        '0',
        '--concurrency',
        String(WORKERS),
        '--size',
        '4096',
        '--auth',
        gw.key,
      ]);
    await loadgen('warmup', 2000);
    const gw3 = await alternate(
      (r) =>
        timed(
          process.execPath,
          [S3UP_BIN, 'push', small, '--server', gw.url, '--api-key', gw.key, '--prefix', `push-${r}`, '--workers', String(WORKERS), '--no-progress'],
          { env: pushEnv(tmp) },
        ),
      (r) => loadgen(`loadgen-${r}`, FILES),
    );
    // Push is timed as a whole process (start-up included), the load generator from its first request.
    const ratios = gw3.push.map((p, i) => FILES / p.seconds / gw3.other[i].perSecond);
    rows.push({
      case: `${FILES} x 4 KiB via the gateway vs bench small (c=${WORKERS})`,
      push_s: fmt(median(gw3.push.map((x) => x.seconds)), 2),
      other_s: fmt(median(gw3.other.map((x) => x.seconds)), 2),
      ratio: `${fmt(median(ratios), 2)}${each(ratios)}`,
      push_peak_MB: fmt(Math.max(...gw3.push.map((x) => x.peakRssMB)), 0),
      target: '>= 0.7',
    });
    result.gateway = { pushSeconds: gw3.push.map((x) => x.seconds), loadgenPerSecond: gw3.other.map((x) => x.perSecond), ratios };
    await gw.stop();
  }

  if (!skip.has('noop')) {
    const tree = path.join(tmp, 'noop');
    log(`writing ${NOOP} x 1 KiB files and uploading them once with each tool`);
    makeTree(tree, NOOP, 1024);
    await timed(process.execPath, direct(tree, 'push-noop'), { env: s3env(tmp) });
    await timed('rclone', rclone(tree, 'rclone-noop', ['--fast-list']), { env: rcloneEnv(s3) });
    const p = await timed(process.execPath, direct(tree, 'push-noop'), { env: s3env(tmp) });
    const r = await timed('rclone', rclone(tree, 'rclone-noop', ['--fast-list']), { env: rcloneEnv(s3) });
    rows.push({
      case: `no-op re-run, ${NOOP} files, vs rclone --fast-list`,
      push_s: fmt(p.seconds, 2),
      other_s: fmt(r.seconds, 2),
      ratio: fmt(r.seconds / p.seconds, 1),
      push_peak_MB: fmt(p.peakRssMB, 0),
      target: '>= 10',
    });
    result.noop = { push: p.seconds, rclone: r.seconds, pushPeakRssMB: p.peakRssMB };
    rmrf(tree);
  }

  if (!skip.has('scan')) {
    const tree = path.join(tmp, 'scan');
    log(`creating ${SCAN_N} empty files`);
    makeTree(tree, SCAN_N, 0);
    const script = path.join(tmp, 'scan.mjs');
    writeFileSync(
      script,
      // What push runs: the walk (argv[3] "walk"), or the walk then a stat per file (its batches, each file with size and mtime).
      `import { scanBatches, walkTree } from ${JSON.stringify(SCAN)};\nlet n = 0;\nfor await (const b of (process.argv[3] === 'walk' ? walkTree : scanBatches)(process.argv[2])) n += b.length;\nconsole.log(n);\n`,
    );
    syncDisks();
    const q = JSON.stringify(tree);
    // Warm the dentry and inode caches the same way for every command.
    await timed('sh', ['-c', `find ${q} -type f -size +1k | wc -l`]);
    // Short commands: more rounds, each command in turn (a drift of the machine's speed hits every one alike).
    const commands = {
      walk: () => timed(process.execPath, [script, tree, 'walk']),
      find: () => timed('sh', ['-c', `find ${q} -type f | wc -l`]),
      scan: () => timed(process.execPath, [script, tree, 'stat']),
      // The same work as the walk and its stats: find reading each file's size and mtime.
      findPrintf: () => timed('sh', ['-c', `find ${q} -type f -printf '%s %T@\\n' | wc -l`]),
      // find's cheapest stat per file (no output per file): the floor of a scan that stats.
      findSize: () => timed('sh', ['-c', `find ${q} -type f -size -1k | wc -l`]),
    };
    const runs = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
    for (let r = 0; r < Math.max(5, ROUNDS); r++) {
      for (const [k, run] of Object.entries(commands)) {
        const x = await run();
        if (Number(x.stdout.trim()) !== SCAN_N) throw new Error(`${k} counted ${x.stdout.trim()}; expected ${SCAN_N}`);
        runs[k].push(x);
      }
    }
    const secs = (k) => runs[k].map((x) => x.seconds);
    const peak = (k) => Math.max(...runs[k].map((x) => x.peakRssMB));
    const pair = (a, b, caseName, target) => {
      const ratios = secs(a).map((t, i) => t / secs(b)[i]);
      rows.push({
        case: caseName,
        push_s: fmt(median(secs(a)), 2),
        other_s: fmt(median(secs(b)), 2),
        ratio: `${fmt(median(ratios), 2)}${each(ratios)}`,
        push_peak_MB: fmt(peak(a), 0),
        target,
      });
      return ratios;
    };
    const walkRatios = pair('walk', 'find', `walk ${SCAN_N} files vs find -type f | wc -l`, '<= 1.5 (time), <= 200 MB');
    pair('scan', 'findPrintf', `walk + stat ${SCAN_N} files vs find -printf size+mtime (same work)`, '(reference)');
    pair('scan', 'findSize', `walk + stat ${SCAN_N} files vs find -size (stat, no output)`, '(reference)');
    result.scan = {
      ...Object.fromEntries(Object.keys(commands).map((k) => [k, secs(k)])),
      walkRatios,
      walkPeakRssMB: peak('walk'),
      scanPeakRssMB: peak('scan'),
    };
    rmrf(tree);
  }
} finally {
  for (const s of started.reverse()) await s.stop().catch(() => {});
  rmrf(tmp);
}
printTable(rows);
console.log(JSON.stringify(result));
