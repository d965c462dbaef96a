// Benchmark "s3": the large-file upload through the gateway (S3 backend) to a real
// s3rver process, against a direct @aws-sdk/lib-storage Upload of the same file to
// the same s3rver in the same run. Rounds are interleaved; the median counts.
import { createHash } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchTmp, cpuSeconds, fmt, MiB, makeRandomFile, median, peakRssMB, putFile, rmrf, runJson, startGateway, startS3rver, syncDisks } from './lib.mjs';

function sha256Of(url, headers) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`GET ${url} -> ${res.statusCode}`));
        const h = createHash('sha256');
        res.on('data', (d) => h.update(d));
        res.on('end', () => resolve(h.digest('hex')));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

const DIRECT = path.join(path.dirname(fileURLToPath(import.meta.url)), 's3-direct.mjs');
const PART_MB = 8;
const QUEUE = 4;

/**
 * @param {{ size?: number, rounds?: number, cpuProf?: string }} opts
 */
export async function runS3(opts = {}) {
  const size = opts.size ?? 512 * MiB;
  const rounds = opts.rounds ?? 3;
  const tmp = benchTmp('s3');
  const log = (m) => console.error(`[s3] ${m}`);
  const started = [];
  try {
    const src = path.join(tmp, 'source.bin');
    log(`writing a ${fmt(size / MiB, 0)} MiB random source file in ${tmp}`);
    const srcSha = makeRandomFile(src, size);
    const s3 = await startS3rver(path.join(tmp, 's3rver'));
    started.push(s3);
    const nodeArgs = opts.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProf}`] : [];
    const gw = await startGateway({
      dir: path.join(tmp, 'gw'),
      backend: 's3',
      s3: { ...s3, partSizeMb: PART_MB, queueSize: QUEUE },
      nodeArgs,
      logLevel: opts.logLevel,
    });
    started.push(gw);

    const times = { direct: [], gateway: [] };
    let directPeak = 0;
    const cpu = { direct: [], gateway: [], s3rverDirect: [], s3rverGateway: [] };
    for (let r = 0; r < rounds; r++) {
      syncDisks();
      let pid;
      let peakTimer;
      let directCpu = 0;
      const s3cpu0 = s3.cpuSeconds();
      const direct = await runJson(
        DIRECT,
        ['--endpoint', s3.endpoint, '--bucket', s3.bucket, '--key', `direct/r${r}.bin`, '--file', src, '--part-mb', String(PART_MB), '--queue', String(QUEUE)],
        {
          onSpawn: (p) => {
            pid = p.pid;
            // VmHWM is gone once the process exits: sample it while it runs.
            peakTimer = setInterval(() => {
              try {
                directPeak = Math.max(directPeak, peakRssMB(pid));
                directCpu = cpuSeconds(pid);
              } catch {}
            }, 200);
          },
        },
      ).finally(() => clearInterval(peakTimer));
      times.direct.push(direct.ms);
      cpu.direct.push(directCpu);
      cpu.s3rverDirect.push(s3.cpuSeconds() - s3cpu0);
      log(`round ${r + 1}/${rounds} direct SDK: ${fmt(size / 1e6 / (direct.ms / 1000))} MB/s`);

      syncDisks();
      const gwCpu0 = gw.cpuSeconds();
      const s3cpu1 = s3.cpuSeconds();
      const res = await putFile(`${gw.url}/objects/s3/r${r}.bin`, src, size, gw.auth);
      if (res.body?.size !== size || res.body.sha256 !== srcSha)
        throw new Error(`gateway stored ${res.body?.size} bytes of ${size}, sha256 ${res.body?.sha256}`);
      if (r === 0) {
        // Outside the timing: the object in the store has exactly the source bytes (parts in order).
        const stored = await sha256Of(`${gw.url}/objects/s3/r0.bin`, gw.auth);
        if (stored !== srcSha) throw new Error(`the stored object's sha256 ${stored} != source ${srcSha}`);
      }
      times.gateway.push(res.ms);
      cpu.gateway.push(gw.cpuSeconds() - gwCpu0);
      cpu.s3rverGateway.push(s3.cpuSeconds() - s3cpu1);
      log(`round ${r + 1}/${rounds} gateway: ${fmt(size / 1e6 / (res.ms / 1000))} MB/s`);
    }
    const mbps = (name) => size / 1e6 / (median(times[name]) / 1000);
    const result = {
      size,
      rounds,
      partSizeMb: PART_MB,
      queueSize: QUEUE,
      mbps: { direct: mbps('direct'), gateway: mbps('gateway') },
      runsMs: times,
      // CPU seconds per run (user + system): the uploader (gateway or SDK process, sampled every 200 ms) and s3rver.
      cpuSec: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, median(v)])),
      peakRssMB: { gateway: gw.peakRssMB(), direct: directPeak, s3rver: s3.peakRssMB() },
    };
    result.ratio = result.mbps.gateway / result.mbps.direct;
    return result;
  } finally {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    rmrf(tmp);
  }
}

export function s3Rows(r) {
  return [
    {
      benchmark: `s3 ${fmt(r.size / MiB, 0)} MiB via s3rver (parts ${r.partSizeMb} MiB x ${r.queueSize})`,
      figure: `${fmt(r.mbps.gateway)} MB/s`,
      baseline: `${fmt(r.mbps.direct)} MB/s (SDK Upload direct)`,
      'CPU s': `gateway ${fmt(r.cpuSec.gateway, 2)} + s3rver ${fmt(r.cpuSec.s3rverGateway, 2)} vs SDK ${fmt(r.cpuSec.direct, 2)} + s3rver ${fmt(r.cpuSec.s3rverDirect, 2)}`,
      ratio: fmt(r.ratio, 3),
      'peak RSS': `${fmt(r.peakRssMB.gateway)} MB (direct ~${fmt(r.peakRssMB.direct)})`,
      target: 'ratio >= 0.85',
      met: r.ratio >= 0.85 ? 'yes' : 'NO',
    },
  ];
}
