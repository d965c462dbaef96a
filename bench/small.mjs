// Benchmark "small": many 4 KiB uploads (PUT /objects/...) over 32 keep-alive
// connections to the gateway (filesystem + SQLite), against the bare Node server
// writing the same files in the same run: plain, with an fsync per file, and
// "publish" (temp file, fsync, rename, folder fsync: the gateway's durability
// protocol without the gateway). The load generator is its own process.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchTmp, fmt, rmrf, runJson, startBaseline, startGateway, syncDisks } from './lib.mjs';

const LOADGEN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'loadgen.mjs');

/**
 * @param {{ count?: number, warmup?: number, concurrency?: number, size?: number, cpuProf?: string, logLevel?: string, gatewayEnv?: Record<string, string> }} opts
 */
export async function runSmall(opts = {}) {
  const count = opts.count ?? 20_000;
  const warmup = opts.warmup ?? 2_000;
  const concurrency = opts.concurrency ?? 32;
  const size = opts.size ?? 4096;
  const tmp = benchTmp('small');
  const log = (m) => console.error(`[small] ${m}`);
  const started = [];
  try {
    const nodeArgs = opts.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProf}`] : [];
    const gw = await startGateway({ dir: path.join(tmp, 'gw'), nodeArgs, env: opts.gatewayEnv, logLevel: opts.logLevel });
    started.push(gw);
    const base = await startBaseline({ dir: path.join(tmp, 'base') });
    started.push(base);
    const baseSync = await startBaseline({ dir: path.join(tmp, 'base-fsync'), fsync: true });
    started.push(baseSync);
    const basePublish = await startBaseline({ dir: path.join(tmp, 'base-publish'), publish: true });
    started.push(basePublish);

    const load = async (name, srv, url, auth) => {
      syncDisks();
      const cpu0 = srv.cpuSeconds();
      const args = ['--url', url, '--count', String(count), '--warmup', String(warmup), '--concurrency', String(concurrency), '--size', String(size)];
      if (auth) args.push('--auth', auth);
      const r = await runJson(LOADGEN, args);
      // Server CPU (user + system, all threads) per upload, warm-up included: less sensitive to a busy machine.
      r.cpuMsPerUpload = ((srv.cpuSeconds() - cpu0) * 1000) / (count + warmup);
      log(`${name}: ${fmt(r.perSecond, 0)} uploads/s, p50 ${fmt(r.p50, 2)} ms, p99 ${fmt(r.p99, 2)} ms`);
      return r;
    };
    const result = {
      database: opts.gatewayEnv?.DATABASE_URL?.startsWith('postgres') ? 'postgresql' : 'sqlite',
      count,
      warmup,
      concurrency,
      size,
      baseline: await load('baseline', base, `${base.url}/small`),
      baselineFsync: await load('baseline+fsync', baseSync, `${baseSync.url}/small`),
      baselinePublish: await load('baseline+publish', basePublish, `${basePublish.url}/small`),
      gateway: await load('gateway', gw, `${gw.url}/objects/small`, gw.key),
      peakRssMB: { gateway: gw.peakRssMB(), baseline: base.peakRssMB(), baselineFsync: baseSync.peakRssMB(), baselinePublish: basePublish.peakRssMB() },
    };
    return result;
  } finally {
    for (const s of started) await s.stop().catch(() => {});
    rmrf(tmp);
  }
}

export function smallRows(r) {
  const g = r.gateway;
  const lat = (x) => `p50 ${fmt(x.p50, 1)} / p99 ${fmt(x.p99, 1)} ms`;
  return [
    {
      benchmark: `small ${r.size / 1024} KiB x ${r.count}, c=${r.concurrency}, fs+${r.database}`,
      figure: `${fmt(g.perSecond, 0)} uploads/s, ${lat(g)}`,
      baseline: `${fmt(r.baseline.perSecond, 0)}/s ${lat(r.baseline)} (no fsync); ${fmt(r.baselineFsync.perSecond, 0)}/s ${lat(r.baselineFsync)} (fsync); ${fmt(r.baselinePublish.perSecond, 0)}/s ${lat(r.baselinePublish)} (publish)`,
      'CPU ms/upload': `${fmt(g.cpuMsPerUpload, 2)} vs ${fmt(r.baseline.cpuMsPerUpload, 2)} / ${fmt(r.baselineFsync.cpuMsPerUpload, 2)} / ${fmt(r.baselinePublish.cpuMsPerUpload, 2)}`,
      ratio: `${fmt(g.perSecond / r.baseline.perSecond, 3)} / ${fmt(g.perSecond / r.baselineFsync.perSecond, 3)} / ${fmt(g.perSecond / r.baselinePublish.perSecond, 3)}`,
      'peak RSS': `${fmt(r.peakRssMB.gateway)} MB (baseline ${fmt(r.peakRssMB.baseline)})`,
      target: '>= 1500 uploads/s',
      met: g.perSecond >= 1500 ? 'yes' : 'NO',
    },
  ];
}
