// Benchmark "large": one big upload (PUT /objects/..., raw body with Content-Length,
// streamed from a random file on disk) to the gateway on the filesystem backend with
// SHA-256 on, against the bare Node `pipeline(req, createWriteStream)` server in the
// same run, both as separate processes. Rounds are interleaved; the median counts.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { benchTmp, fmt, GiB, MiB, makeRandomFile, median, putFile, rmrf, startBaseline, startGateway, syncDisks } from './lib.mjs';

function clearDir(dir, keep = new Set()) {
  for (const name of readdirSync(dir)) if (!keep.has(name)) rmrf(path.join(dir, name));
}

/**
 * @param {{ size?: number, rounds?: number, big?: number | false, cpuProf?: string }} opts
 */
export async function runLarge(opts = {}) {
  const size = opts.size ?? GiB;
  const rounds = opts.rounds ?? 3;
  const tmp = benchTmp('large');
  const log = (m) => console.error(`[large] ${m}`);
  const started = [];
  try {
    const src = path.join(tmp, 'source.bin');
    log(`writing a ${fmt(size / MiB, 0)} MiB random source file in ${tmp}`);
    const srcSha = makeRandomFile(src, size);

    const nodeArgs = opts.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProf}`] : [];
    const gw = await startGateway({ dir: path.join(tmp, 'gw'), nodeArgs, logLevel: opts.logLevel });
    started.push(gw);
    const base = await startBaseline({ dir: path.join(tmp, 'base') });
    started.push(base);
    const baseSync = await startBaseline({ dir: path.join(tmp, 'base-fsync'), fsync: true });
    started.push(baseSync);

    const targets = [
      { name: 'baseline', srv: base, url: (r) => `${base.url}/r${r}.bin`, dir: path.join(tmp, 'base') },
      { name: 'baseline+fsync', srv: baseSync, url: (r) => `${baseSync.url}/r${r}.bin`, dir: path.join(tmp, 'base-fsync') },
      { name: 'gateway', srv: gw, url: (r) => `${gw.url}/objects/large/r${r}.bin`, dir: gw.storageRoot, headers: gw.auth },
    ];
    const times = Object.fromEntries(targets.map((t) => [t.name, []]));
    const cpu = Object.fromEntries(targets.map((t) => [t.name, []]));
    const gatewayIdleRssMB = gw.rssMB();
    for (let r = 0; r < rounds; r++) {
      for (const t of targets) {
        syncDisks();
        const cpu0 = t.srv.cpuSeconds();
        const res = await putFile(t.url(r), src, size, t.headers);
        cpu[t.name].push(t.srv.cpuSeconds() - cpu0);
        if (res.body?.size !== size) throw new Error(`${t.name}: stored ${res.body?.size} bytes, expected ${size}`);
        if (t.name === 'gateway' && res.body.sha256 !== srcSha) throw new Error(`gateway sha256 ${res.body.sha256} != source ${srcSha}`);
        times[t.name].push(res.ms);
        log(`round ${r + 1}/${rounds} ${t.name}: ${fmt(size / 1e6 / (res.ms / 1000))} MB/s`);
        clearDir(t.dir, new Set(['.s3up-tmp']));
      }
    }
    const mbps = (name) => size / 1e6 / (median(times[name]) / 1000);
    const result = {
      size,
      rounds,
      mbps: { baseline: mbps('baseline'), baselineFsync: mbps('baseline+fsync'), gateway: mbps('gateway') },
      runsMs: times,
      // Server CPU seconds (user + system, all threads) per GiB uploaded: less sensitive to a busy machine than MB/s.
      cpuSecPerGiB: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, median(v) / (size / GiB)])),
      peakRssMB: { gateway: gw.peakRssMB(), baseline: base.peakRssMB(), baselineFsync: baseSync.peakRssMB() },
      gatewayIdleRssMB,
    };
    result.ratio = { vsBaseline: result.mbps.gateway / result.mbps.baseline, vsBaselineFsync: result.mbps.gateway / result.mbps.baselineFsync };
    for (const s of started.splice(0)) await s.stop();

    if (opts.big) {
      const big = opts.big;
      log(`RSS run: writing a ${fmt(big / GiB, 0)} GiB source file`);
      rmrf(src);
      const bigSrc = path.join(tmp, 'source-big.bin');
      const bigSha = makeRandomFile(bigSrc, big);
      const gw2 = await startGateway({ dir: path.join(tmp, 'gw-big'), logLevel: opts.logLevel });
      started.push(gw2);
      syncDisks();
      const idle = gw2.rssMB();
      const res = await putFile(`${gw2.url}/objects/large/big.bin`, bigSrc, big, gw2.auth);
      if (res.body?.size !== big || res.body.sha256 !== bigSha) throw new Error(`gateway stored ${res.body?.size} bytes of ${big}, sha256 ${res.body?.sha256}`);
      result.big = { size: big, mbps: big / 1e6 / (res.ms / 1000), peakRssMB: gw2.peakRssMB(), idleRssMB: idle };
      log(`${fmt(big / GiB, 0)} GiB gateway: ${fmt(result.big.mbps)} MB/s, peak RSS ${fmt(result.big.peakRssMB)} MB`);
    }
    return result;
  } finally {
    for (const s of started) await s.stop().catch(() => {});
    rmrf(tmp);
  }
}

export function largeRows(r) {
  const sizeLabel = `${fmt(r.size / MiB, 0)} MiB`;
  const rows = [
    {
      benchmark: `large ${sizeLabel} fs+sha256`,
      figure: `${fmt(r.mbps.gateway)} MB/s`,
      baseline: `${fmt(r.mbps.baselineFsync)} MB/s (pipeline+fsync)`,
      'CPU s/GiB': `${fmt(r.cpuSecPerGiB.gateway, 2)} vs ${fmt(r.cpuSecPerGiB['baseline+fsync'], 2)}`,
      ratio: fmt(r.ratio.vsBaselineFsync, 3),
      'peak RSS': `${fmt(r.peakRssMB.gateway)} MB (idle ${fmt(r.gatewayIdleRssMB)}; baseline ${fmt(r.peakRssMB.baselineFsync)})`,
      // Flat memory on the stock runtime: the peak may exceed the idle gateway by at most 64 MB.
      target: 'ratio >= 0.85, peak - idle <= 64 MB',
      met: r.ratio.vsBaselineFsync >= 0.85 && r.peakRssMB.gateway - r.gatewayIdleRssMB <= 64 ? 'yes' : 'NO',
    },
    {
      benchmark: `large ${sizeLabel} vs no-fsync`,
      figure: `${fmt(r.mbps.gateway)} MB/s`,
      baseline: `${fmt(r.mbps.baseline)} MB/s (pipeline, no fsync)`,
      'CPU s/GiB': `${fmt(r.cpuSecPerGiB.gateway, 2)} vs ${fmt(r.cpuSecPerGiB.baseline, 2)}`,
      ratio: fmt(r.ratio.vsBaseline, 3),
      'peak RSS': `${fmt(r.peakRssMB.gateway)} MB (baseline ${fmt(r.peakRssMB.baseline)})`,
      target: 'ratio >= 0.85 (stricter)',
      met: r.ratio.vsBaseline >= 0.85 ? 'yes' : 'NO',
    },
  ];
  if (r.big) {
    rows.push({
      benchmark: `large ${fmt(r.big.size / GiB, 0)} GiB fs+sha256`,
      figure: `${fmt(r.big.mbps)} MB/s`,
      baseline: '-',
      'CPU s/GiB': '-',
      ratio: '-',
      'peak RSS': `${fmt(r.big.peakRssMB)} MB (idle ${fmt(r.big.idleRssMB)})`,
      target: 'peak - idle <= 64 MB',
      met: r.big.peakRssMB - r.big.idleRssMB <= 64 ? 'yes' : 'NO',
    });
  }
  return rows;
}
