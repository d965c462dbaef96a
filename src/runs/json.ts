import type { RunKind, RunStatus } from '../db/schema.js';

// Free of runtime imports: the web dashboard (web/) uses this type too.

/** The public JSON of a run (spec 001 payload shape, ISO timestamps). */
export interface RunJson {
  run_id: string;
  status: RunStatus;
  kind: RunKind;
  client: string;
  path: string;
  s3_key: string;
  size: number | null;
  sha256: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  finished_at: string | null;
  deleted_at: string | null;
  timings: { total_ms: number | null; bytes_per_sec: number | null };
  inputs: { filename: string | null; content_type: string | null };
  error_code: string | null;
  error_message: string | null;
}
