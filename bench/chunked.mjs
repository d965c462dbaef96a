#!/usr/bin/env node
// Benchmark "chunked": a 1 GiB file sent with the chunked API (8 MiB chunks,
// 4 in flight) to the gateway on the filesystem backend, against a single-stream
// PUT /objects of the same file to the same gateway in the same run. The gateway
// runs as a separate process; its RSS is sampled from /proc/<pid>/status.
//
//   node bench/chunked.mjs [--size-mib 1024] [--chunk-mib 8] [--parallel 4] [--rounds 2] [--md5]
//
// --md5: the client also sends Content-MD5 for every chunk (computed before the
// timed section). Without it the gateway still computes MD5 and SHA-256 of every chunk.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const MiB = 1024 * 1024;
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = process.argv[i + 1];
  return v === undefined || v.startsWith('--') ? true : v;
}
const sizeMiB = Number(arg('size-mib', 1024));
const chunkMiB = Number(arg('chunk-mib', 8));
const parallel = Number(arg('parallel', 4));
const rounds = Number(arg('rounds', 2));
const withMd5 = arg('md5', false) === true;
const size = sizeMiB * MiB;
const chunkSize = chunkMiB * MiB;
const log = (m) => console.error(`[chunked] ${m}`);

function rss(pid) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { rss: get('VmRSS'), hwm: get('VmHWM') };
}

function request(opts, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(opts, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        if ((res.statusCode ?? 0) >= 300) reject(new Error(`${opts.method} ${opts.path}: ${res.statusCode} ${text}`));
        else resolve(text ? JSON.parse(text) : {});
      });
    });
    req.on('error', reject);
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body) || typeof body === 'string') req.end(body);
    else body.pipe(req);
  });
}

async function main() {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 's3up-bench-chunked-'));
  const key = `sk_bench_${randomBytes(24).toString('hex')}`;
  const cfg = path.join(tmp, 'server.yaml');
  writeFileSync(
    cfg,
    [
      'server: { host: 127.0.0.1, port: 0, log_level: warn }',
      `storage: { backend: fs, fs: { root: ${JSON.stringify(path.join(tmp, 'uploads'))} } }`,
      `database: { url: ${JSON.stringify(`sqlite:${path.join(tmp, 's3up.db')}`)} }`,
      'clients:',
      `  - { name: bench, api_key: ${key}, max_file_size_mb: ${sizeMiB * 2} }`,
      '',
    ].join('\n'),
  );
  const src = path.join(tmp, 'source.bin');
  log(`writing a ${sizeMiB} MiB random source file`);
  const fd = openSync(src, 'w');
  const block = randomBytes(8 * MiB);
  for (let off = 0; off < size; off += block.length) {
    block[0] = off & 0xff; // not all blocks identical
    writeSync(fd, block, 0, Math.min(block.length, size - off));
  }
  closeSync(fd);
  const md5s = [];
  if (withMd5) {
    const buf = readFileSync(src);
    for (let off = 0; off < size; off += chunkSize)
      md5s.push(
        createHash('md5')
          .update(buf.subarray(off, off + chunkSize))
          .digest('base64'),
      );
  }

  const port = await new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const p = probe.address().port;
      probe.close(() => resolve(p));
    });
  });
  // Built like production (as the other benchmarks): tsx would add its own memory to the RSS measured.
  const build = spawnSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) throw new Error('npm run build failed');
  const gw = spawn(process.execPath, [path.join(root, 'dist/src/bin/s3up-server.js'), '--config', cfg, '--port', String(port)], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let errText = '';
  gw.stderr.on('data', (d) => {
    errText += d.toString();
  });
  gw.on('exit', (code) => {
    if (code) console.error(`gateway exited (${code}): ${errText}`);
  });
  for (let i = 0; ; i++) {
    try {
      await request({ host: '127.0.0.1', port, method: 'GET', path: '/health' });
      break;
    } catch (err) {
      if (i > 300) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const auth = { authorization: `Bearer ${key}` };
  const base = { host: '127.0.0.1', port };

  // Idle: after start and one small request of each kind.
  await request({ ...base, method: 'PUT', path: '/objects/warmup.bin', headers: { ...auth, 'content-length': 5 } }, 'hello');
  const w = await request(
    { ...base, method: 'POST', path: '/upload/chunked/init', headers: { ...auth, 'content-type': 'application/json' } },
    JSON.stringify({ path: 'warm.bin', file_size: 5 }),
  );
  await request(
    {
      ...base,
      method: 'POST',
      path: `/upload/chunked/${w.file_id}/chunk?chunk_number=1`,
      headers: { ...auth, 'content-type': 'application/octet-stream', 'content-length': 5 },
    },
    'hello',
  );
  await request({ ...base, method: 'POST', path: `/upload/chunked/${w.file_id}/complete`, headers: auth });
  await new Promise((r) => setTimeout(r, 500));
  const idle = rss(gw.pid).rss;
  log(`gateway pid ${gw.pid} on port ${port}, idle RSS ${(idle / MiB).toFixed(1)} MiB`);

  let peakDuring = 0;
  const sampler = setInterval(() => {
    peakDuring = Math.max(peakDuring, rss(gw.pid).rss);
  }, 50);

  async function single(r) {
    const t0 = process.hrtime.bigint();
    await request(
      { ...base, method: 'PUT', path: `/objects/single/r${r}.bin`, headers: { ...auth, 'content-type': 'application/octet-stream', 'content-length': size } },
      createReadStream(src, { highWaterMark: MiB }),
    );
    return Number(process.hrtime.bigint() - t0) / 1e9;
  }

  async function chunked(r) {
    const t0 = process.hrtime.bigint();
    const s = await request(
      { ...base, method: 'POST', path: '/upload/chunked/init', headers: { ...auth, 'content-type': 'application/json' } },
      JSON.stringify({ path: `chunked/r${r}.bin`, file_size: size, chunk_size: chunkSize }),
    );
    if (s.chunk_size !== chunkSize) throw new Error(`server chose chunk_size ${s.chunk_size}`);
    let next = 1;
    const worker = async () => {
      while (next <= s.total_chunks) {
        const n = next++;
        const start = (n - 1) * chunkSize;
        const len = Math.min(chunkSize, size - start);
        const headers = { ...auth, 'content-type': 'application/octet-stream', 'content-length': len };
        if (withMd5) headers['content-md5'] = md5s[n - 1];
        await request(
          { ...base, method: 'POST', path: `/upload/chunked/${s.file_id}/chunk?chunk_number=${n}`, headers },
          createReadStream(src, { start, end: start + len - 1, highWaterMark: MiB }),
        );
      }
    };
    await Promise.all(Array.from({ length: parallel }, worker));
    const done = await request({ ...base, method: 'POST', path: `/upload/chunked/${s.file_id}/complete`, headers: auth });
    if (done.size !== size) throw new Error(`completed size ${done.size}`);
    return Number(process.hrtime.bigint() - t0) / 1e9;
  }

  // Warm-up (not counted): one upload of each kind, so JIT and caches are warm for both.
  await chunked(0);
  await single(0);
  rmSync(path.join(tmp, 'uploads', 'bench'), { recursive: true, force: true });
  await new Promise((r) => setTimeout(r, 1000));
  const idleWarm = rss(gw.pid).rss;
  log(`idle RSS after the warm-up ${(idleWarm / MiB).toFixed(1)} MiB`);
  peakDuring = 0;

  const results = { single: [], chunked: [] };
  let chunkedPeak = 0;
  for (let r = 1; r <= rounds; r++) {
    peakDuring = 0;
    results.chunked.push(await chunked(r));
    chunkedPeak = Math.max(chunkedPeak, peakDuring);
    log(`round ${r}: chunked ${(size / MiB / results.chunked.at(-1)).toFixed(0)} MiB/s, RSS peak ${(peakDuring / MiB).toFixed(1)} MiB`);
    results.single.push(await single(r));
    log(`round ${r}: single PUT ${(size / MiB / results.single.at(-1)).toFixed(0)} MiB/s`);
    rmSync(path.join(tmp, 'uploads', 'bench'), { recursive: true, force: true });
  }
  clearInterval(sampler);
  const best = (xs) => Math.min(...xs);
  const median = (xs) => {
    const v = [...xs].sort((x, y) => x - y);
    return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  };
  const mbps = (t) => size / MiB / t;
  const report = {
    size_mib: sizeMiB,
    chunk_mib: chunkMiB,
    parallel,
    rounds,
    client_md5: withMd5,
    chunked_rounds_mib_s: results.chunked.map((t) => Number(mbps(t).toFixed(1))),
    single_rounds_mib_s: results.single.map((t) => Number(mbps(t).toFixed(1))),
    chunked_mib_s: Number(mbps(best(results.chunked)).toFixed(1)),
    single_put_mib_s: Number(mbps(best(results.single)).toFixed(1)),
    ratio_of_best: Number((best(results.single) / best(results.chunked)).toFixed(3)),
    // Rounds are interleaved (chunked then single): each pair saw the same machine load.
    round_ratios: results.chunked.map((t, i) => Number((results.single[i] / t).toFixed(3))),
    ratio: Number(median(results.chunked.map((t, i) => results.single[i] / t)).toFixed(3)),
    idle_rss_mib: Number((idle / MiB).toFixed(1)),
    idle_after_warmup_rss_mib: Number((idleWarm / MiB).toFixed(1)),
    chunked_peak_rss_mib: Number((chunkedPeak / MiB).toFixed(1)),
    chunked_rss_over_idle_mib: Number(((chunkedPeak - idle) / MiB).toFixed(1)),
    chunked_rss_over_warm_idle_mib: Number(((chunkedPeak - idleWarm) / MiB).toFixed(1)),
    vm_hwm_mib: Number((rss(gw.pid).hwm / MiB).toFixed(1)),
  };
  gw.kill('SIGTERM');
  await new Promise((r) => gw.once('exit', r));
  rmSync(tmp, { recursive: true, force: true });
  console.log(JSON.stringify(report, null, 2));
  const pass = report.ratio >= 0.8 && report.chunked_rss_over_idle_mib <= 50;
  log(`RSS: +${report.chunked_rss_over_idle_mib} MiB over the cold idle, +${report.chunked_rss_over_warm_idle_mib} MiB over the idle after warm-up`);
  log(`target: ratio (median of per-round ratios) >= 0.8 and RSS within 50 MiB of idle: ${pass ? 'met' : 'NOT met'}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
