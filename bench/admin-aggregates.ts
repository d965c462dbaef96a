// The admin dashboard's aggregate endpoints with 1,000,000 upload records (and as many stored
// objects) on SQLite and PostgreSQL: GET /api/admin/overview (7 and 30 days), GET /clients.
//   npx tsx bench/admin-aggregates.ts                       both databases (PostgreSQL needs S3UP_TEST_PG_URL)
//   npx tsx bench/admin-aggregates.ts --db sqlite --rows 200000 --requests 100
// Records are seeded the way bench/runs-list.ts does (straight SQL), spread over 30 days and 10
// clients; the rollups (run_stats, client_storage) are kept by the database's triggers during the
// seed on SQLite, exactly as the gateway's own writes keep them (PostgreSQL: filled after the
// seed by the migration's backfill statements, much faster than a million trigger calls). Each endpoint is timed over sequential
// keep-alive requests; the baseline is the same figure computed by a scan of the records (the
// GROUP BY the rollups replace), timed a few times. Prints p50/p99, the ratio, and peak RSS.
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { parseArgs } from 'node:util';
import SQLite from 'better-sqlite3';
import { sql } from 'kysely';
import pg from 'pg';
import { migrate, openDatabase } from '../src/db/index.js';
import { ADMIN, seededGateway } from './seeded-gateway.js';

const { values } = parseArgs({
  options: {
    db: { type: 'string', default: 'both' },
    rows: { type: 'string', default: '1000000' },
    requests: { type: 'string', default: '200' },
  },
});
const ROWS = Number(values.rows);
const REQUESTS = Number(values.requests);
const CLIENTS = 10;
const NOW = Date.now();
const SPAN_MS = 30 * 24 * 3600 * 1000;
const KINDS = ['multipart', 'raw', 'chunked', 'tus', 'direct'];
const ERRORS = ['UPLOAD_ABORTED', 'CHECKSUM_MISMATCH', 'PAYLOAD_TOO_LARGE'];

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

async function seedSqlite(file: string): Promise<void> {
  const db = await openDatabase(`sqlite:${file}`);
  await migrate(db.db);
  await db.close();
  const s = new SQLite(file);
  s.pragma('journal_mode = WAL');
  s.pragma('synchronous = OFF');
  const run = s.prepare(
    `insert into runs (run_id, client, kind, status, path, object_key, size, sha256, content_type, filename, error_code, error_message,
      created_at, updated_at, started_at, finished_at, total_ms, bytes_per_sec, deleted_at)
     values (?, ?, ?, ?, ?, ?, ?, null, 'application/octet-stream', null, ?, ?, ?, ?, ?, ?, 12.5, 80000, null)`,
  );
  const obj = s.prepare(
    `insert into objects (object_key, client, path, size, sha256, checksum, checksum_algorithm, chunk_size, content_type, uploaded_at, run_id)
     values (?, ?, ?, ?, null, 'x', 'sha256', null, null, ?, ?)`,
  );
  const batch = s.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const client = `client-${i % CLIENTS}`;
      const failed = i % 20 === 0;
      const ts = NOW - Math.floor((i / ROWS) * SPAN_MS);
      const id = randomUUID();
      const key = `backups/${client}/p/${i}`;
      run.run(
        id,
        client,
        KINDS[i % 5],
        failed ? 'failed' : 'succeeded',
        `p/${i}`,
        key,
        1000 + (i % 5000),
        failed ? ERRORS[i % 3] : null,
        failed ? 'x' : null,
        ts,
        ts + 12,
        ts,
        ts + 12,
      );
      if (!failed) obj.run(key, client, `p/${i}`, 1000 + (i % 5000), ts + 12, id);
    }
  });
  for (let i = 0; i < ROWS; i += 50_000) batch(i, Math.min(ROWS, i + 50_000));
  s.exec('analyze');
  s.close();
}

async function seedPg(url: string): Promise<void> {
  const db = await openDatabase(url);
  await migrate(db.db);
  await db.close();
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    // Row triggers off while seeding (as a restore would); the rollups are then filled by the
    // migration's own backfill statements, which give the same rows the triggers would have.
    await c.query('set session_replication_role = replica');
    for (let from = 0; from < ROWS; from += 100_000) {
      const to = Math.min(ROWS, from + 100_000) - 1;
      await c.query(
        `insert into runs (run_id, client, kind, status, path, object_key, size, sha256, content_type, filename, error_code, error_message,
          created_at, updated_at, started_at, finished_at, total_ms, bytes_per_sec, deleted_at)
         select md5(i::text || random()::text)::uuid::text, 'client-' || (i % ${CLIENTS}),
                (array['multipart','raw','chunked','tus','direct'])[1 + i % 5],
                case when i % 20 = 0 then 'failed' else 'succeeded' end,
                'p/' || i, 'backups/client-' || (i % ${CLIENTS}) || '/p/' || i, 1000 + i % 5000, null, 'application/octet-stream', null,
                case when i % 20 = 0 then (array['UPLOAD_ABORTED','CHECKSUM_MISMATCH','PAYLOAD_TOO_LARGE'])[1 + i % 3] end,
                case when i % 20 = 0 then 'x' end,
                ${NOW} - (i::bigint * ${SPAN_MS} / ${ROWS}), ${NOW} - (i::bigint * ${SPAN_MS} / ${ROWS}) + 12,
                ${NOW} - (i::bigint * ${SPAN_MS} / ${ROWS}), ${NOW} - (i::bigint * ${SPAN_MS} / ${ROWS}) + 12, 12.5, 80000, null
         from generate_series(${from}, ${to}) as i`,
      );
      await c.query(
        `insert into objects (object_key, client, path, size, sha256, checksum, checksum_algorithm, chunk_size, content_type, uploaded_at, run_id)
         select 'backups/client-' || (i % ${CLIENTS}) || '/p/' || i, 'client-' || (i % ${CLIENTS}), 'p/' || i, 1000 + i % 5000, null, 'x', 'sha256',
                null, null, ${NOW} - (i::bigint * ${SPAN_MS} / ${ROWS}) + 12, 'r' || i
         from generate_series(${from}, ${to}) as i where i % 20 <> 0`,
      );
    }
    await c.query('set session_replication_role = origin');
    await c.query('delete from run_stats');
    await c.query('delete from client_storage');
    await c.query(
      `insert into run_stats (bucket, client, status, error_code, uploads, bytes)
       select (created_at / 3600000) * 3600000, client, status, coalesce(error_code, ''), count(*), sum(coalesce(size, 0))
       from runs group by (created_at / 3600000) * 3600000, client, status, coalesce(error_code, '')`,
    );
    await c.query('insert into client_storage (client, objects, bytes) select client, count(*), sum(size) from objects group by client');
    await c.query('analyze');
  } finally {
    await c.end();
  }
}

interface Row {
  db: string;
  endpoint: string;
  p50: number;
  p99: number;
  scan: number;
}

async function runDb(kind: 'sqlite' | 'postgres'): Promise<{ seedSeconds: number; rows: Row[] }> {
  const gw = await seededGateway(kind, CLIENTS, { sqlite: seedSqlite, postgres: seedPg });
  const { server, seedSeconds } = gw;
  const db = server.ctx.db.db;
  // What the rollups replace: the same figures by scanning the records.
  const scans: Record<string, () => Promise<unknown>> = {
    'overview, 7 days': () =>
      sql`select (created_at / 3600000) as h, status, count(*), sum(size) from runs where created_at >= ${NOW - 7 * 86400000} group by 1, 2`.execute(db),
    'overview, 30 days': () =>
      sql`select (created_at / 3600000) as h, status, count(*), sum(size) from runs where created_at >= ${NOW - 30 * 86400000} group by 1, 2`.execute(db),
    '/clients': () => sql`select client, count(*), sum(size) from objects group by client`.execute(db),
  };
  const endpoints: Array<[string, string]> = [
    ['overview, 7 days', '/api/admin/overview?hours=168'],
    ['overview, 30 days', '/api/admin/overview?hours=720'],
    ['/clients', '/clients'],
  ];
  const rows: Row[] = [];
  try {
    for (const [name, p] of endpoints) {
      const ms: number[] = [];
      for (let i = 0; i < REQUESTS + 10; i++) {
        const s = performance.now();
        const res = await fetch(`${server.url}${p}`, { headers: { 'x-admin-token': ADMIN } });
        await res.json();
        if (res.status !== 200) throw new Error(`${p}: HTTP ${res.status}`);
        if (i >= 10) ms.push(performance.now() - s);
      }
      const scanMs: number[] = [];
      for (let i = 0; i < 3; i++) {
        const s = performance.now();
        await scans[name]?.();
        scanMs.push(performance.now() - s);
      }
      const row = { db: kind, endpoint: name, p50: pct(ms, 50), p99: pct(ms, 99), scan: Math.min(...scanMs) };
      rows.push(row);
      console.error(`${kind.padEnd(8)} ${name.padEnd(20)} p50 ${row.p50.toFixed(2)} ms  p99 ${row.p99.toFixed(2)} ms | records scan ${row.scan.toFixed(0)} ms`);
    }
  } finally {
    await gw.stop();
  }
  return { seedSeconds, rows };
}

const dbs: Array<'sqlite' | 'postgres'> = values.db === 'both' ? ['sqlite', 'postgres'] : [values.db as 'sqlite' | 'postgres'];
if (dbs.includes('postgres') && !process.env.S3UP_TEST_PG_URL) {
  console.error('PostgreSQL skipped: set S3UP_TEST_PG_URL (see README, Testing)');
  dbs.splice(dbs.indexOf('postgres'), 1);
}
console.error(
  `load average at the start: ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ')} on ${os.cpus().length} CPUs`,
);
const all: Row[] = [];
const seeds: string[] = [];
for (const d of dbs) {
  console.error(`seeding ${ROWS.toLocaleString('en')} records on ${d} ...`);
  const r = await runDb(d);
  seeds.push(`${d} ${r.seedSeconds.toFixed(0)} s`);
  all.push(...r.rows);
}
console.log(`\nAdmin aggregates with ${ROWS.toLocaleString('en')} records over 30 days, ${REQUESTS} sequential requests each (target p99 < 50 ms)\n`);
console.log('| db | endpoint | HTTP p50 | HTTP p99 | scan of the records (baseline) | scan / p99 | target |');
console.log('|---|---|---|---|---|---|---|');
for (const x of all) {
  console.log(
    `| ${x.db} | ${x.endpoint} | ${x.p50.toFixed(2)} ms | ${x.p99.toFixed(2)} ms | ${x.scan.toFixed(0)} ms | ${(x.scan / Math.max(0.001, x.p99)).toFixed(0)}x | ${x.p99 < 50 ? 'ok' : 'MISSED'} |`,
  );
}
console.log(
  `\nload average at the end: ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ')}; seed: ${seeds.join(', ')}; peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`,
);
