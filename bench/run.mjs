#!/usr/bin/env node
// Gateway benchmarks. Builds the gateway (dist/), then runs every benchmark
// or the ones named:
//   npm run bench                      large, small and s3 at their default sizes
//   npm run bench -- large             one benchmark
//   npm run bench -- large --4g        also the 4 GiB peak-RSS run
//   npm run bench -- large --size 64m --rounds 1     quick check while developing
//   npm run bench -- small --count 2000 --warmup 200
//   npm run bench -- s3 --size 256m
//   npm run bench -- small --database-url postgres://...   the gateway on that (empty) PostgreSQL database
//   --cpu-prof DIR   run the gateway under `node --cpu-prof` and write the profile to DIR
//   --log-level L    the gateway's server.log_level (default warn: per-request logs are not measured)
//   --json           print the raw results as JSON at the end
//   --no-build       skip `npm run build`
// Results are printed as a table; see docs/benchmarks.md for the figures measured.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { largeRows, runLarge } from './large.mjs';
import { GATEWAY_BIN, GiB, parseSize, printTable, ROOT } from './lib.mjs';
import { runS3, s3Rows } from './s3.mjs';
import { runSmall, smallRows } from './small.mjs';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    size: { type: 'string' },
    rounds: { type: 'string' },
    '4g': { type: 'boolean', default: false },
    count: { type: 'string' },
    warmup: { type: 'string' },
    concurrency: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'log-level': { type: 'string', default: 'warn' },
    json: { type: 'boolean', default: false },
    'no-build': { type: 'boolean', default: false },
    'database-url': { type: 'string' },
  },
});

const ALL = ['large', 'small', 's3'];
const names = positionals.length > 0 ? positionals : ALL;
for (const n of names) {
  if (!ALL.includes(n)) {
    console.error(`bench: unknown benchmark "${n}" (known: ${ALL.join(', ')})`);
    process.exit(2);
  }
}

if (!values['no-build']) {
  const b = spawnSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' });
  if (b.status !== 0) {
    // tsc still emits on type errors; measure what was built, but say so.
    if (!existsSync(GATEWAY_BIN)) process.exit(b.status ?? 1);
    console.error('bench: WARNING: `npm run build` reported errors; measuring the emitted dist/ anyway');
  }
}

const num = (v) => (v === undefined ? undefined : Number(v));
const size = values.size === undefined ? undefined : parseSize(values.size);
const cpuProf = values['cpu-prof'];
const logLevel = values['log-level'];

const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
console.error(
  `bench: node ${process.version}, ${os.cpus().length} cores, ${(os.totalmem() / GiB).toFixed(0)} GiB RAM, ${os.cpus()[0]?.model ?? ''}; gateway log_level ${logLevel}`,
);
const rows = [];
const results = {};
for (const name of names) {
  const t0 = Date.now();
  console.error(`bench: ${name} starting, load average ${load()}`);
  if (name === 'large') {
    results.large = await runLarge({ size, rounds: num(values.rounds), big: values['4g'] ? 4 * GiB : false, cpuProf, logLevel });
    rows.push(...largeRows(results.large));
  } else if (name === 'small') {
    results.small = await runSmall({
      count: num(values.count),
      warmup: num(values.warmup),
      concurrency: num(values.concurrency),
      cpuProf,
      logLevel,
      ...(values['database-url'] ? { gatewayEnv: { DATABASE_URL: values['database-url'] } } : {}),
    });
    rows.push(...smallRows(results.small));
  } else if (name === 's3') {
    results.s3 = await runS3({ size, rounds: num(values.rounds), cpuProf, logLevel });
    rows.push(...s3Rows(results.s3));
  }
  console.error(`bench: ${name} took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}
console.log('');
printTable(rows);
if (values.json) console.log(JSON.stringify(results, null, 2));
