// Load generator for the "small" benchmark, run as its own process so it never
// shares an event loop with the server it measures. Keeps `concurrency`
// keep-alive connections busy with PUTs of `size` random bytes, first `warmup`
// uploads (not measured), then `count` measured ones, and prints one JSON line.
//   node bench/loadgen.mjs --url http://127.0.0.1:PORT/objects/small --count N --warmup N --concurrency 32 --size 4096 [--auth KEY]
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    count: { type: 'string', default: '20000' },
    warmup: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '32' },
    size: { type: 'string', default: '4096' },
    auth: { type: 'string' },
  },
});
const base = new URL(values.url);
const count = Number(values.count);
const warmup = Number(values.warmup);
const concurrency = Number(values.concurrency);
const size = Number(values.size);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
// A few distinct bodies; each upload is a new file at a new path.
const bodies = Array.from({ length: 16 }, () => randomBytes(size));
const headers = { 'content-type': 'application/octet-stream', 'content-length': String(size) };
if (values.auth) headers.authorization = `Bearer ${values.auth}`;

function put(i) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const req = http.request(
      { host: base.hostname, port: base.port, method: 'PUT', path: `${base.pathname}/${Math.floor(i / 1000)}/f${i}.bin`, headers, agent },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => {
          const ms = Number(process.hrtime.bigint() - t0) / 1e6;
          if (res.statusCode !== 200) reject(new Error(`upload ${i}: HTTP ${res.statusCode}`));
          else resolve(ms);
        });
      },
    );
    req.on('error', reject);
    req.end(bodies[i % bodies.length]);
  });
}

/** Run uploads [from, to) on `concurrency` workers; returns their latencies. */
async function phase(from, to) {
  let next = from;
  const lat = [];
  const worker = async () => {
    while (next < to) {
      const i = next++;
      lat.push(await put(i));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return lat;
}

await phase(0, warmup);
const t0 = process.hrtime.bigint();
const lat = await phase(warmup, warmup + count);
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
lat.sort((a, b) => a - b);
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
agent.destroy();
console.log(JSON.stringify({ count, seconds, perSecond: count / seconds, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: lat[lat.length - 1] }));
