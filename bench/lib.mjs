// Shared helpers for the benchmarks: processes, ports, peak memory, files, HTTP uploads.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { closeSync, createReadStream, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
export const GATEWAY_BIN = path.join(ROOT, 'dist', 'src', 'bin', 's3up-server.js');

/**
 * Environment variables the gateway reads as config overrides (the list the gateway
 * itself exports, from the built package): never let the caller's leak into a bench run.
 */
const { CONFIG_ENV_VARS: CONFIG_ENV } = await import(new URL('../dist/src/config/load.js', import.meta.url).href).catch(() => {
  throw new Error('bench: dist/ is missing: run `npm install` (or `npm run build`) first');
});

export function cleanEnv(extra = {}) {
  const env = { ...process.env, NODE_ENV: 'production', ...extra };
  for (const k of CONFIG_ENV) delete env[k];
  return env;
}

/** A temp folder for one bench run (on the same disk as everything else here). */
export function benchTmp(name) {
  return mkdtempSync(path.join(os.tmpdir(), `s3up-bench-${name}-`));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Peak resident set size of a live process, in MB (10^6 bytes), from /proc/<pid>/status VmHWM. */
export function peakRssMB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(status);
  if (!m) throw new Error(`no VmHWM for pid ${pid}`);
  return (Number(m[1]) * 1024) / 1e6;
}

/** Current resident set size of a live process, in MB, from /proc/<pid>/status VmRSS. */
export function rssMB(pid) {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return (Number(m[1]) * 1024) / 1e6;
}

/** CPU time (user + system, all threads) a live process has used so far, in seconds. */
export function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** Flush dirty pages so one run does not pay for the previous run's write-back. */
export function syncDisks() {
  spawnSync('sync', { stdio: 'ignore' });
}

/** A file of random bytes (incompressible, not sparse), written once per bench run; returns its SHA-256 (hex). */
export function makeRandomFile(file, size) {
  const chunk = Buffer.allocUnsafe(8 * MiB);
  const hash = createHash('sha256');
  const fd = openSync(file, 'w');
  try {
    let left = size;
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      randomFillSync(chunk, 0, n);
      hash.update(chunk.subarray(0, n));
      let off = 0;
      while (off < n) off += writeSync(fd, chunk, off, n - off);
      left -= n;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

async function waitHttp(url, proc, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode} before it was ready`);
    const ok = await new Promise((resolve) => {
      const req = http.get(url, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready at ${url} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A child process we started, with its peak RSS and a clean stop. */
function managed(proc, url, what) {
  let stderr = '';
  proc.stderr?.on('data', (d) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  return {
    proc,
    pid: proc.pid,
    url,
    what,
    stderr: () => stderr,
    peakRssMB: () => peakRssMB(proc.pid),
    rssMB: () => rssMB(proc.pid),
    cpuSeconds: () => cpuSeconds(proc.pid),
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Start the real gateway as its own process (the built JS, like production)
 * with a generated YAML config. log_level is 'warn': request logging at the
 * default 'info' is not what we measure (see docs/benchmarks.md).
 */
export async function startGateway({ dir, backend = 'fs', s3, maxFileSizeMb = 8192, logLevel = 'warn', nodeArgs = [], env = {} }) {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const key = `sk_bench_${randomBytes(24).toString('hex')}`;
  const config = {
    server: { host: '127.0.0.1', port, log_level: logLevel, shutdown_grace_seconds: 5 },
    storage: { backend, fs: { root: path.join(dir, 'uploads') } },
    s3: {
      endpoint: s3?.endpoint ?? '',
      region: 'us-east-1',
      bucket: s3?.bucket ?? 'unused',
      path_prefix: 'bench/',
      access_key_id: s3?.accessKeyId ?? '',
      secret_access_key: s3?.secretAccessKey ?? '',
      force_path_style: true,
      part_size_mb: s3?.partSizeMb ?? 8,
      queue_size: s3?.queueSize ?? 4,
    },
    database: { url: `sqlite:${path.join(dir, 's3up.db')}` },
    clients: [{ name: 'bench', api_key: key, max_file_size_mb: maxFileSizeMb }],
  };
  // JSON is YAML.
  const configPath = path.join(dir, 'server.yaml');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const proc = spawn(process.execPath, [...nodeArgs, GATEWAY_BIN, '--config', configPath], {
    cwd: dir,
    env: cleanEnv(env),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const url = `http://127.0.0.1:${port}`;
  const g = managed(proc, url, 'gateway');
  try {
    await waitHttp(`${url}/health`, proc, 'gateway');
  } catch (err) {
    throw new Error(`${err.message}\n${g.stderr()}`);
  }
  return { ...g, key, configPath, storageRoot: config.storage.fs.root, auth: { authorization: `Bearer ${key}` } };
}

/** Start the bare Node `pipeline(req, createWriteStream)` server (bench/baseline-server.mjs). */
export async function startBaseline({ dir, fsync = false }) {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const args = [path.join(ROOT, 'bench', 'baseline-server.mjs'), '--port', String(port), '--dir', dir];
  if (fsync) args.push('--fsync');
  const proc = spawn(process.execPath, args, { env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  const url = `http://127.0.0.1:${port}`;
  const b = managed(proc, url, fsync ? 'baseline (fsync)' : 'baseline');
  await waitHttp(`${url}/health`, proc, 'baseline server');
  return b;
}

/** Start a real s3rver process with one bucket (like test/helpers/s3rver.ts). */
export async function startS3rver(dir, bucket = 's3up-bench') {
  mkdirSync(dir, { recursive: true });
  const bin = path.join(ROOT, 'node_modules', 's3rver', 'bin', 's3rver.js');
  const proc = spawn(process.execPath, [bin, '-d', dir, '-a', '127.0.0.1', '-p', '0', '--silent', '--configure-bucket', bucket], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`s3rver did not start: ${out}`)), 15_000);
    proc.stdout.on('data', (d) => {
      out += d.toString();
      const m = /listening on [^:]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited with ${code}: ${out}`));
    });
  });
  proc.removeAllListeners('exit');
  proc.stdout.resume();
  const s = managed(proc, `http://127.0.0.1:${port}`, 's3rver');
  return { ...s, endpoint: s.url, bucket, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
}

/** Run a node script to completion and parse the JSON it prints last on stdout. */
export function runJson(script, args, { env = cleanEnv(), onSpawn } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    onSpawn?.(proc);
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => {
      out += d.toString();
    });
    proc.stderr.on('data', (d) => {
      err = (err + d.toString()).slice(-4000);
    });
    proc.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`${path.basename(script)} exited with ${code}: ${err}`));
      const last = out.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(last));
      } catch {
        reject(new Error(`${path.basename(script)} printed no JSON: ${out.slice(-500)} ${err}`));
      }
    });
  });
}

/** PUT a file from disk as the raw body, with Content-Length; resolves with the elapsed time and the response. */
export function putFile(url, file, size, headers = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const req = http.request(
      url,
      { method: 'PUT', headers: { ...headers, 'content-length': String(size), 'content-type': 'application/octet-stream' } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => {
          const ms = Number(process.hrtime.bigint() - t0) / 1e6;
          if (res.statusCode !== 200) return reject(new Error(`PUT ${url} -> ${res.statusCode}: ${body.slice(0, 300)}`));
          resolve({ ms, body: body ? JSON.parse(body) : undefined });
        });
      },
    );
    req.on('error', reject);
    createReadStream(file, { highWaterMark: MiB }).pipe(req);
  });
}

export function rmrf(p) {
  rmSync(p, { recursive: true, force: true });
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : String(n));

/** Print rows as an aligned text table. */
export function printTable(rows) {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)));
  const line = (vals) => vals.map((v, i) => String(v ?? '').padEnd(widths[i])).join('  ');
  console.log(line(cols));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(line(cols.map((c) => r[c])));
}

/** Parse "1g", "256m", "4096" (bytes) into a byte count. */
export function parseSize(s) {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)i?b?$/i.exec(String(s).trim());
  if (!m) throw new Error(`bad size: ${s}`);
  const mult = { '': 1, k: 1024, m: MiB, g: GiB }[m[2].toLowerCase()];
  return Math.round(Number(m[1]) * mult);
}
