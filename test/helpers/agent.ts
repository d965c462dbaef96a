import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import type SQLite from 'better-sqlite3';
import { stringify } from 'yaml';
import { sqliteDriver } from '../../src/db/sqlite-driver.js';
import { cleanEnv, REPO_ROOT } from './bin.js';
import { startTestServer, type TestServer } from './server.js';

export const CLI_BIN = path.join(REPO_ROOT, 'src', 'bin', 's3up.ts');
const TSX_LOADER = import.meta.resolve('tsx');

/** Poll `fn` until it returns a truthy value (bounded), so no test depends on timing. */
export async function waitFor<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 60_000, everyMs = 100): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface AgentProcess {
  proc: ChildProcess;
  lines(): LogLine[];
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill9(): Promise<void>;
}

const spawned = new Set<ChildProcess>();
const dirs = new Set<string>();

/** Kill every agent a test left running and remove the folders agentSetup made (call from `after`). */
export async function cleanupAgents(): Promise<void> {
  for (const proc of spawned) {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await new Promise((r) => proc.once('close', r));
    }
  }
  spawned.clear();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

/** Run `s3up <args>` (the real CLI, from source) as a subprocess; `wrap` is a command line it runs under (e.g. unshare). */
export function spawnCli(args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; wrap?: string[] }): AgentProcess {
  const argv = [process.execPath, '--import', TSX_LOADER, CLI_BIN, ...args];
  const [cmd, ...rest] = [...(opts.wrap ?? []), ...argv] as [string, ...string[]];
  const proc = spawn(cmd, rest, {
    cwd: opts.cwd,
    env: cleanEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  spawned.add(proc);
  proc.once('close', () => spawned.delete(proc));
  let buf = '';
  let err = '';
  const lines: LogLine[] = [];
  proc.stdout?.setEncoding('utf8');
  proc.stderr?.setEncoding('utf8');
  proc.stdout?.on('data', (d: string) => {
    buf += d;
    let i = buf.indexOf('\n');
    while (i >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.startsWith('{')) {
        try {
          lines.push(JSON.parse(line) as LogLine);
        } catch {
          // not a log line
        }
      }
      i = buf.indexOf('\n');
    }
  });
  proc.stderr?.on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    proc,
    lines: () => lines,
    stderr: () => err,
    exited,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      return exited;
    },
    async kill9() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

export interface AgentSetup {
  dir: string;
  watchDir: string;
  configPath: string;
  dbPath: string;
  /** Start the daemon; `wrap` is a command line it runs under (e.g. unshare). */
  start(wrap?: string[]): AgentProcess;
  /** The agent's ledger, read-only (safe while it runs). */
  ledger<T>(fn: (db: SQLite.Database) => T): T;
  status(): Promise<Record<string, unknown>>;
  /** `s3up agent status` as a person reads it. */
  statusText(): Promise<string>;
}

/** A watched folder and a client.yaml pointing at `gateway` as `client`; `extra` is merged into the YAML. */
export function agentSetup(gateway: { url: string; keys: Record<string, string> }, client: string, extra: Record<string, unknown> = {}): AgentSetup {
  const dir = mkdtempSync(path.join(os.tmpdir(), 's3up-agent-'));
  dirs.add(dir);
  const watchDir = path.join(dir, 'watched');
  mkdirSync(watchDir);
  const dbPath = path.join(dir, 'state', 'agent.db');
  const yaml: Record<string, unknown> = {
    // The key comes through client.yaml's ${ENV} interpolation, as in production.
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the literal ${ENV} syntax of client.yaml
    server: { url: gateway.url, api_key: '${AGENT_TEST_KEY}' },
    database: { path: dbPath },
    watches: [{ local_path: watchDir, remote_prefix: 'up/', recursive: true }],
    scan: { upload_existing: true, rescan_interval_minutes: 60 },
    stability: { debounce_seconds: 0.3, max_attempts: 100 },
    upload: { retry_attempts: 2, retry_delay_seconds: 0.2, max_retry_delay_seconds: 1 },
    reports: { enabled: false },
    log_level: 'info',
  };
  for (const [k, v] of Object.entries(extra)) {
    yaml[k] = typeof v === 'object' && v !== null && !Array.isArray(v) ? { ...(yaml[k] as object), ...v } : v;
  }
  const configPath = path.join(dir, 'client.yaml');
  writeFileSync(configPath, stringify(yaml));
  const env = { AGENT_TEST_KEY: gateway.keys[client] };
  const runStatus = async (extra: string[]) => {
    const p = spawnCli(['agent', 'status', '--config', configPath, ...extra], { cwd: dir, env });
    const chunks: string[] = [];
    p.proc.stdout?.on('data', (d: string) => chunks.push(d));
    const { code } = await p.exited;
    if (code !== 0) throw new Error(`status exited ${code}: ${p.stderr()}`);
    return chunks.join('');
  };
  return {
    dir,
    watchDir,
    configPath,
    dbPath,
    start: (wrap) => spawnCli(['agent', '--config', configPath], { cwd: dir, env, wrap }),
    ledger(fn) {
      const db = new (sqliteDriver())(dbPath, { readonly: true, fileMustExist: true });
      try {
        db.pragma('busy_timeout = 5000');
        return fn(db);
      } finally {
        db.close();
      }
    },
    async status() {
      return JSON.parse(await runStatus(['--json'])) as Record<string, unknown>;
    },
    statusText: () => runStatus([]),
  };
}

/** The gateway's own records: successful uploads per path for a client (from its database). */
export function gatewayUploads(t: TestServer, client: string): Map<string, number> {
  const file = t.databaseUrl.slice('sqlite:'.length);
  const db = new (sqliteDriver())(file, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    const rows = db.prepare(`SELECT path, count(*) AS n FROM runs WHERE client = ? AND status = 'succeeded' GROUP BY path`).all(client) as Array<{
      path: string;
      n: number;
    }>;
    return new Map(rows.map((r) => [r.path, r.n]));
  } finally {
    db.close();
  }
}

/** Whether every one of `keys` has arrived (one look at the gateway's records). */
export function allArrived(t: TestServer, client: string, keys: Iterable<string>): boolean {
  const uploads = gatewayUploads(t, client);
  for (const k of keys) if (!uploads.has(k)) return false;
  return true;
}

/** Run a query on the gateway's database (read-only). */
export function gatewayDb<T>(t: TestServer, fn: (db: SQLite.Database) => T): T {
  const db = new (sqliteDriver())(t.databaseUrl.slice('sqlite:'.length), { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    return fn(db);
  } finally {
    db.close();
  }
}

/** SHA-256 of what the gateway stored for a client's path (fs backend, default prefix). */
export function storedSha256(t: TestServer, client: string, remotePath: string): string {
  return sha256(readFileSync(path.join(t.dir, 'uploads', 'backups', client, remotePath)));
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A gateway for a suite of agent tests (call inside `describe`): every agent and folder is cleaned up after the suite. */
export function agentGateway(clients: Array<{ name: string; max_file_size_mb?: number }> = [{ name: 'alice' }]): () => TestServer {
  let t: TestServer | undefined;
  before(async () => {
    t = await startTestServer({ clients });
  });
  after(async () => {
    await cleanupAgents();
    await t?.stop();
  });
  return () => t as TestServer;
}

/** Writes random files into a watched folder and remembers what each remote path must hold (`up/` + relative path). */
export function fileWriter(watchDir: string, size = 64): { expected: Map<string, string>; write(rel: string): void } {
  const expected = new Map<string, string>();
  return {
    expected,
    write(rel: string) {
      const body = randomBytes(size);
      writeFileSync(path.join(watchDir, rel), body);
      expected.set(`up/${rel}`, sha256(body));
    },
  };
}
