// Benchmark: GET /runs/v1 latency with 1,000,000 upload records on SQLite and PostgreSQL.
//   npx tsx bench/runs-list.ts                       both databases (PostgreSQL needs S3UP_TEST_PG_URL)
//   npx tsx bench/runs-list.ts --db sqlite --rows 200000 --requests 200
// For each scenario it sends sequential requests over keep-alive to a real gateway in this process and
// times the same page through RunQuery.list (the SQL alone, no HTTP/JSON) as the baseline.
// Prints p50/p99 per scenario, the ratio to the baseline, and the process's peak RSS.
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { migrate, openDatabase } from '../src/db/index.js';
import { sqliteDriver } from '../src/db/sqlite-driver.js';
import { type decodeCursor, type ListFilter, RunQuery } from '../src/runs/query.js';
import { ADMIN, seededGateway } from './seeded-gateway.js';

const { values } = parseArgs({
  options: {
    db: { type: 'string', default: 'both' },
    rows: { type: 'string', default: '1000000' },
    requests: { type: 'string', default: '300' },
    json: { type: 'boolean', default: false },
  },
});
const ROWS = Number(values.rows);
const REQUESTS = Number(values.requests);
const CLIENTS = 10;
const BASE_TS = Date.UTC(2025, 0, 1);
const KINDS = ['multipart', 'raw', 'chunked', 'tus', 'direct'];

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

async function seedSqlite(file: string): Promise<void> {
  const db = await openDatabase(`sqlite:${file}`);
  await migrate(db.db);
  await db.close();
  const s = new (sqliteDriver())(file);
  s.pragma('journal_mode = WAL');
  s.pragma('synchronous = OFF');
  const ins = s.prepare(
    `insert into runs (run_id, client, kind, status, path, object_key, size, sha256, content_type, filename, error_code, error_message,
      created_at, updated_at, started_at, finished_at, total_ms, bytes_per_sec, deleted_at)
     values (?, ?, ?, ?, ?, ?, 1000, null, 'application/octet-stream', null, ?, ?, ?, ?, ?, ?, 12.5, 80000, null)`,
  );
  const batch = s.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const client = `client-${i % CLIENTS}`;
      const failed = i % 20 === 0;
      // About 3 records per millisecond share a timestamp: the run_id tie-break matters.
      const ts = BASE_TS + Math.floor(i / 3);
      ins.run(
        randomUUID(),
        client,
        KINDS[i % 5],
        failed ? 'failed' : 'succeeded',
        `p/${i}`,
        `backups/${client}/p/${i}`,
        failed ? 'UPLOAD_ABORTED' : null,
        failed ? 'interrupted' : null,
        ts,
        ts + 12,
        ts,
        ts + 12,
      );
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
    await c.query(
      `insert into runs (run_id, client, kind, status, path, object_key, size, sha256, content_type, filename, error_code, error_message,
        created_at, updated_at, started_at, finished_at, total_ms, bytes_per_sec, deleted_at)
       select md5(i::text || random()::text)::uuid::text, 'client-' || (i % ${CLIENTS}),
              (array['multipart','raw','chunked','tus','direct'])[1 + i % 5],
              case when i % 20 = 0 then 'failed' else 'succeeded' end,
              'p/' || i, 'backups/client-' || (i % ${CLIENTS}) || '/p/' || i, 1000, null, 'application/octet-stream', null,
              case when i % 20 = 0 then 'UPLOAD_ABORTED' end, case when i % 20 = 0 then 'interrupted' end,
              ${BASE_TS} + i / 3, ${BASE_TS} + i / 3 + 12, ${BASE_TS} + i / 3, ${BASE_TS} + i / 3 + 12, 12.5, 80000, null
       from generate_series(0, ${ROWS - 1}) as i`,
    );
    await c.query('analyze runs');
  } finally {
    await c.end();
  }
}

interface Scenario {
  name: string;
  /** Query string of the first request; later requests follow next_cursor (restarting at the end). */
  qs: string;
  auth: 'admin' | 'client';
  filter: ListFilter;
  /** Start each request at a random point of the history instead of following cursors. */
  randomCursor?: boolean;
}

const scenarios: Scenario[] = [
  { name: 'admin, first page (limit 50)', qs: 'limit=50', auth: 'admin', filter: {}, randomCursor: false },
  { name: 'admin, walk pages by cursor', qs: 'limit=50', auth: 'admin', filter: {} },
  { name: 'admin, random deep cursor', qs: 'limit=50', auth: 'admin', filter: {}, randomCursor: true },
  { name: 'client, walk own pages', qs: 'limit=50', auth: 'client', filter: { client: 'client-3' } },
  {
    name: 'client, status=failed, random cursor',
    qs: 'limit=50&status=failed',
    auth: 'client',
    filter: { client: 'client-3', status: 'failed' },
    randomCursor: true,
  },
  { name: 'admin, kind=tus, limit 200, walk', qs: 'limit=200&kind=tus', auth: 'admin', filter: { kind: 'tus', limit: 200 } },
];

function encode(createdAt: number, runId: string): string {
  return Buffer.from(`${createdAt}:${runId}`).toString('base64url');
}

async function runDb(kind: 'sqlite' | 'postgres') {
  const gw = await seededGateway(kind, CLIENTS, { sqlite: seedSqlite, postgres: seedPg });
  const { server, keys, seedSeconds } = gw;
  const query = new RunQuery(server.ctx.db.db);
  const results = [];
  try {
    for (const sc of scenarios) {
      const headers: Record<string, string> = sc.auth === 'admin' ? { 'x-admin-token': ADMIN } : { authorization: `Bearer ${keys['client-3']}` };
      const rnd = () => {
        const ts = BASE_TS + Math.floor(Math.random() * (ROWS / 3));
        return { createdAt: ts, runId: 'ffffffff-ffff-ffff-ffff-ffffffffffff' };
      };
      // HTTP.
      const http: number[] = [];
      let cursor: string | null = null;
      let rows = 0;
      for (let i = 0; i < REQUESTS + 20; i++) {
        let qs = sc.qs;
        if (sc.randomCursor) {
          const c = rnd();
          qs += `&cursor=${encode(c.createdAt, c.runId)}`;
        } else if (sc.randomCursor === undefined && cursor) qs += `&cursor=${cursor}`;
        const s = performance.now();
        const res = await fetch(`${server.url}/runs/v1?${qs}`, { headers });
        const body = (await res.json()) as { runs: unknown[]; next_cursor: string | null };
        const ms = performance.now() - s;
        if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${JSON.stringify(body)}`);
        if (i >= 20) http.push(ms); // warm-up excluded
        rows += body.runs.length;
        cursor = body.next_cursor;
      }
      // Baseline: the same pages through the query layer alone.
      const sql: number[] = [];
      let c2: ReturnType<typeof decodeCursor> | undefined;
      for (let i = 0; i < REQUESTS + 20; i++) {
        const cur = sc.randomCursor ? rnd() : sc.randomCursor === undefined ? c2 : undefined;
        const s = performance.now();
        const page = await query.list({ limit: 50, ...sc.filter, cursor: cur });
        const ms = performance.now() - s;
        if (i >= 20) sql.push(ms);
        c2 = page.next ?? undefined;
      }
      const row = {
        db: kind,
        scenario: sc.name,
        http_p50_ms: +pct(http, 50).toFixed(2),
        http_p99_ms: +pct(http, 99).toFixed(2),
        sql_p50_ms: +pct(sql, 50).toFixed(2),
        sql_p99_ms: +pct(sql, 99).toFixed(2),
        ratio_p99: +(pct(http, 99) / Math.max(0.001, pct(sql, 99))).toFixed(2),
        rows_per_request: +(rows / (REQUESTS + 20)).toFixed(1),
      };
      results.push(row);
      console.error(
        `${kind.padEnd(8)} ${sc.name.padEnd(40)} http p50 ${row.http_p50_ms} ms  p99 ${row.http_p99_ms} ms | sql p50 ${row.sql_p50_ms} p99 ${row.sql_p99_ms} ms | ratio ${row.ratio_p99}`,
      );
    }
    // GET /clients aggregates over the records (activity of 7 days, storage used over all live objects).
    const clientsMs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const s = performance.now();
      const res = await fetch(`${server.url}/clients`, { headers: { 'x-admin-token': ADMIN } });
      await res.json();
      clientsMs.push(performance.now() - s);
    }
    console.error(`${kind.padEnd(8)} GET /clients: ${clientsMs.map((m) => m.toFixed(0)).join(' / ')} ms`);
    clientsTimes[kind] = Math.min(...clientsMs);
  } finally {
    await gw.stop();
  }
  return { kind, seedSeconds, results };
}

const dbs: Array<'sqlite' | 'postgres'> = values.db === 'both' ? ['sqlite', 'postgres'] : [values.db as 'sqlite' | 'postgres'];
const all = [];
const clientsTimes: Record<string, number> = {};
console.error(
  `load average at the start: ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ')} on ${os.cpus().length} CPUs`,
);
for (const d of dbs) {
  console.error(`seeding ${ROWS.toLocaleString('en')} records on ${d} ...`);
  const r = await runDb(d);
  console.error(`${d}: seeded in ${r.seedSeconds.toFixed(1)} s`);
  all.push(r);
}
const peakRssMb = process.resourceUsage().maxRSS / 1024;
console.log(`\nGET /runs/v1 with ${ROWS.toLocaleString('en')} records, ${REQUESTS} sequential requests per scenario (target p99 < 20 ms)\n`);
console.log('| db | scenario | HTTP p50 | HTTP p99 | SQL p50 | SQL p99 | p99 ratio | target |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of all) {
  for (const x of r.results) {
    console.log(
      `| ${x.db} | ${x.scenario} | ${x.http_p50_ms} ms | ${x.http_p99_ms} ms | ${x.sql_p50_ms} ms | ${x.sql_p99_ms} ms | ${x.ratio_p99} | ${x.http_p99_ms < 20 ? 'ok' : 'MISSED'} |`,
    );
  }
}
console.log(
  `load average at the end (1/5/15 min): ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ')} on ${os.cpus().length} CPUs`,
);
console.log(
  `\nseed time: ${all.map((r) => `${r.kind} ${r.seedSeconds.toFixed(1)} s`).join(', ')}; peak RSS of the process (gateway + load generator): ${peakRssMb.toFixed(0)} MB`,
);
if (values.json) console.log(JSON.stringify({ rows: ROWS, requests: REQUESTS, peakRssMb, all }, null, 2));
