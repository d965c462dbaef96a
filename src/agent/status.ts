import { existsSync } from 'node:fs';
import { formatBytes as human } from '../format.js';
import type { AgentConfig } from './config.js';
import type { AgentSnapshot } from './daemon.js';
import { Ledger, utcDay } from './ledger.js';

export interface AgentStatus {
  database: string;
  running: boolean;
  /** The daemon's own view, written every second while it runs (null if it never ran). */
  daemon: (AgentSnapshot & { updated_at: string }) | null;
  queue: { pending: number; in_flight: number; parked: number; skipped_unstable: number; waiting_to_delete: number };
  parked: Array<{ path: string; remote_path: string; code: string | null; reason: string | null; since: string | null }>;
  skipped_unstable: Array<{ path: string; attempts: number; reason: string | null; since: string | null }>;
  retrying: Array<{ path: string; failures: number; last_error: string | null; next_attempt_at: string }>;
  last_uploads: Array<{ path: string; remote_path: string; size: number; uploaded_at: string; checksum: string | null }>;
  totals: { files: number; bytes: number; local_copies_deleted: number };
  today: { date: string; files_uploaded: number; bytes: number; failures: number };
}

const iso = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Read the ledger (read-only, safe while the daemon writes it) into the status `s3up agent status` prints. */
export function readStatus(config: AgentConfig, now = Date.now()): AgentStatus {
  if (!existsSync(config.databasePath)) throw new Error(`no ledger at ${config.databasePath}: the agent has not run with this config yet`);
  const ledger = new Ledger(config.databasePath, { readonly: true });
  try {
    const db = ledger.db;
    const hasTable = (name: string) => db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(name) !== undefined;
    if (!hasTable('queue')) throw new Error(`${config.databasePath} is not an agent ledger`);
    const stateRow = db.prepare('SELECT updated_at, state FROM agent_state WHERE id = 1').get() as { updated_at: number; state: string } | undefined;
    const snap = stateRow ? { ...(JSON.parse(stateRow.state) as AgentSnapshot), updated_at: new Date(stateRow.updated_at).toISOString() } : null;
    const running = snap !== null && snap.phase !== 'stopped' && alive(snap.pid) && now - (stateRow?.updated_at ?? 0) < 15_000;
    const counts = db.prepare(`SELECT status, reason, count(*) AS n, sum(claimed) AS c FROM queue GROUP BY status, reason`).all() as Array<{
      status: string;
      reason: string;
      n: number;
      c: number;
    }>;
    const n = (status: string, reason?: string) => counts.filter((r) => r.status === status && (!reason || r.reason === reason)).reduce((a, r) => a + r.n, 0);
    const inFlight = (db.prepare(`SELECT count(*) AS n FROM queue WHERE claimed = 1 AND phase IN ('uploading', 'verifying')`).get() as { n: number }).n;
    const parked = db
      .prepare(
        `SELECT local_path, remote_path, last_error_code, last_error, last_error_at FROM queue WHERE status = 'parked' ORDER BY last_error_at DESC LIMIT 100`,
      )
      .all() as Array<{ local_path: string; remote_path: string; last_error_code: string | null; last_error: string | null; last_error_at: number | null }>;
    const unstable = db
      .prepare(`SELECT local_path, attempts, last_error, last_error_at FROM queue WHERE status = 'unstable' ORDER BY last_error_at DESC LIMIT 100`)
      .all() as Array<{ local_path: string; attempts: number; last_error: string | null; last_error_at: number | null }>;
    const retrying = db
      .prepare(
        `SELECT local_path, failures, last_error, next_attempt_at FROM queue WHERE status = 'pending' AND failures > 0 ORDER BY next_attempt_at LIMIT 20`,
      )
      .all() as Array<{ local_path: string; failures: number; last_error: string | null; next_attempt_at: number }>;
    const last = db
      .prepare('SELECT local_path, remote_path, file_size, uploaded_at, checksum FROM files ORDER BY uploaded_at DESC, id DESC LIMIT 10')
      .all() as Array<{
      local_path: string;
      remote_path: string;
      file_size: number;
      uploaded_at: number;
      checksum: string | null;
    }>;
    const totals = db.prepare('SELECT count(*) AS files, coalesce(sum(file_size), 0) AS bytes, count(local_deleted_at) AS deleted FROM files').get() as {
      files: number;
      bytes: number;
      deleted: number;
    };
    const date = utcDay(now);
    const today = (db.prepare('SELECT files_uploaded, bytes, failures FROM daily WHERE date = ?').get(date) as
      | { files_uploaded: number; bytes: number; failures: number }
      | undefined) ?? { files_uploaded: 0, bytes: 0, failures: 0 };
    return {
      database: config.databasePath,
      running,
      daemon: snap,
      queue: {
        pending: n('pending', 'upload'),
        in_flight: running ? inFlight : 0,
        parked: n('parked'),
        skipped_unstable: n('unstable'),
        waiting_to_delete: n('pending', 'verify_delete'),
      },
      parked: parked.map((r) => ({
        path: r.local_path,
        remote_path: r.remote_path,
        code: r.last_error_code,
        reason: r.last_error,
        since: iso(r.last_error_at),
      })),
      skipped_unstable: unstable.map((r) => ({ path: r.local_path, attempts: r.attempts, reason: r.last_error, since: iso(r.last_error_at) })),
      retrying: retrying.map((r) => ({
        path: r.local_path,
        failures: r.failures,
        last_error: r.last_error,
        next_attempt_at: iso(r.next_attempt_at) as string,
      })),
      last_uploads: last.map((r) => ({
        path: r.local_path,
        remote_path: r.remote_path,
        size: r.file_size,
        uploaded_at: new Date(r.uploaded_at * 1000).toISOString(),
        checksum: r.checksum,
      })),
      totals: { files: totals.files, bytes: totals.bytes, local_copies_deleted: totals.deleted },
      today: { date, ...today },
    };
  } finally {
    ledger.close();
  }
}

export function formatStatus(s: AgentStatus): string {
  const out: string[] = [];
  const d = s.daemon;
  if (s.running && d) {
    out.push(`agent: running (pid ${d.pid}, ${d.phase}, since ${d.started_at}), concurrency ${d.concurrency}`);
    out.push(
      d.gateway.state === 'ok'
        ? 'gateway: ok'
        : `gateway: unavailable (${d.gateway.consecutive_failures} failures, next probe ${d.gateway.retry_at ?? 'now'}): ${d.gateway.last_error ?? ''}`,
    );
  } else out.push(`agent: not running${d ? ` (last seen ${d.updated_at}, ${d.phase})` : ''}`);
  out.push(`ledger: ${s.database}`);
  out.push(
    `queue: ${s.queue.pending} pending, ${s.queue.in_flight} in flight, ${s.queue.parked} parked, ${s.queue.skipped_unstable} skipped (never stable)` +
      (s.queue.waiting_to_delete ? `, ${s.queue.waiting_to_delete} awaiting verified delete` : ''),
  );
  if (d && s.running) {
    out.push(`stabilizing: ${d.stabilizing}, stable and waiting for a slot: ${d.waiting_for_slot}`);
    for (const f of d.in_flight) out.push(`  uploading ${f.path} (${human(f.size)}) since ${f.started_at}`);
  }
  out.push(
    `totals: ${s.totals.files} files uploaded, ${human(s.totals.bytes)}${s.totals.local_copies_deleted ? `, ${s.totals.local_copies_deleted} local copies deleted` : ''}`,
  );
  out.push(`today (${s.today.date} UTC): ${s.today.files_uploaded} uploaded, ${human(s.today.bytes)}, ${s.today.failures} failures`);
  if (s.parked.length) {
    out.push('parked (permanent refusals; retried when the file changes):');
    for (const p of s.parked) out.push(`  ${p.path}: ${p.reason ?? p.code}`);
  }
  if (s.skipped_unstable.length) {
    out.push('skipped (never stable; retried when the file changes):');
    for (const p of s.skipped_unstable) out.push(`  ${p.path}: ${p.attempts} checks`);
  }
  if (s.retrying.length) {
    out.push('retrying (transient failures):');
    for (const r of s.retrying) out.push(`  ${r.path}: ${r.failures} failures, last: ${r.last_error ?? '-'}`);
  }
  if (s.last_uploads.length) {
    out.push('last uploads:');
    for (const u of s.last_uploads) out.push(`  ${u.uploaded_at} ${u.path} -> ${u.remote_path} (${human(u.size)})`);
  }
  if (d?.warnings.length) {
    out.push('warnings:');
    for (const w of d.warnings) out.push(`  ${w}`);
  }
  return `${out.join('\n')}\n`;
}
