/** Timestamps are stored as integer milliseconds since the epoch (UTC) on both databases. */
export type Millis = number;

export const RUN_STATUSES = ['queued', 'processing', 'succeeded', 'failed'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
export const RUN_KINDS = ['multipart', 'raw', 'chunked', 'tus', 'direct'] as const;
export type RunKind = (typeof RUN_KINDS)[number];

/** One upload attempt ("run", spec 001). */
export interface RunsTable {
  run_id: string;
  client: string;
  kind: RunKind;
  status: RunStatus;
  /** The client-relative path it asked for. */
  path: string;
  /** The full storage key: {path_prefix}{client}/{path}. */
  object_key: string;
  size: number | null;
  sha256: string | null;
  content_type: string | null;
  filename: string | null;
  error_code: string | null;
  error_message: string | null;
  created_at: Millis;
  updated_at: Millis;
  started_at: Millis | null;
  finished_at: Millis | null;
  total_ms: number | null;
  bytes_per_sec: number | null;
  deleted_at: Millis | null;
}

/** A small table that /ready writes to, to prove the database takes writes. */
export interface HeartbeatTable {
  id: string;
  at: Millis;
}

/** A client's daily report (spec 002), one row per (client, date), upserted. */
export interface ClientReportsTable {
  client: string;
  /** UTC day, YYYY-MM-DD. */
  date: string;
  files_uploaded: number;
  bytes: number;
  failures: number;
  queue_depth: number;
  agent_version: string | null;
  host: string | null;
  received_at: Millis;
  first_received_at: Millis;
}

/** A named lease (e.g. "sweeper") so only one gateway runs a periodic job at a time. */
export interface LeasesTable {
  name: string;
  holder: string;
  expires_at: Millis;
}

export interface Database {
  client_reports: ClientReportsTable;
  leases: LeasesTable;
  runs: RunsTable;
  heartbeat: HeartbeatTable;
}
