import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { createGateway, type RunningServer } from '../../src/server/main.js';
import { createPgDatabase, type PgDatabase } from './pg.js';
import { type S3rverProcess, startS3rver } from './s3rver.js';

export type Backend = 'fs' | 's3';
export type DbKind = 'sqlite' | 'postgres';

export interface TestClient {
  name: string;
  max_file_size_mb?: number;
  retention_days?: number;
  cors_origins?: string[];
}

export interface TestServerOptions {
  backend?: Backend;
  db?: DbKind;
  clients?: TestClient[];
  /** Extra YAML config merged at the top level (server, s3, admin, ...). */
  extra?: Record<string, unknown>;
  /** Reuse an s3rver (several gateways on one store). */
  s3rver?: S3rverProcess;
  /** Reuse a database URL (several gateways on one database). */
  databaseUrl?: string;
  pathPrefix?: string;
  env?: NodeJS.ProcessEnv;
}

export interface TestServer {
  url: string;
  server: RunningServer;
  dir: string;
  configPath: string;
  keys: Record<string, string>;
  s3rver: S3rverProcess | undefined;
  databaseUrl: string;
  /** Authorization header for a client. */
  auth(client: string): Record<string, string>;
  stop(): Promise<void>;
}

export function newKey(): string {
  return `sk_test_${randomBytes(24).toString('hex')}`;
}

export const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';

/** Poll `check` until it returns a value, asking the gateway at `url` to sweep in between; bounded by count, not by time. */
export async function sweepUntil<T>(url: string, check: () => Promise<T | undefined>, what: string): Promise<T> {
  for (let i = 0; i < 120; i++) {
    await fetch(`${url}/api/admin/sweep`, { method: 'POST', headers: { 'x-admin-token': ADMIN_TOKEN } });
    const got = await check();
    if (got !== undefined) return got;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`gave up waiting for ${what}`);
}

export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const backend = opts.backend ?? 'fs';
  const dir = mkdtempSync(path.join(os.tmpdir(), 's3up-test-'));
  const clients = opts.clients ?? [{ name: 'alice' }, { name: 'bob' }];
  const keys: Record<string, string> = {};
  for (const c of clients) keys[c.name] = newKey();

  let s3rver = opts.s3rver;
  const ownS3rver = backend === 's3' && !s3rver;
  if (ownS3rver) s3rver = await startS3rver();

  let pgDb: PgDatabase | undefined;
  let databaseUrl = opts.databaseUrl;
  if (!databaseUrl) {
    if (opts.db === 'postgres') {
      pgDb = await createPgDatabase();
      databaseUrl = pgDb.url;
    } else {
      databaseUrl = `sqlite:${path.join(dir, 's3up.db')}`;
    }
  }

  const yaml: Record<string, unknown> = {
    server: { host: '127.0.0.1', port: 0, log_level: 'silent', shutdown_grace_seconds: 5 },
    storage: { backend, fs: { root: path.join(dir, 'uploads') } },
    s3: {
      endpoint: s3rver?.endpoint ?? '',
      region: 'us-east-1',
      bucket: s3rver?.bucket ?? 'unused',
      path_prefix: opts.pathPrefix ?? 'backups/',
      access_key_id: s3rver?.accessKeyId ?? '',
      secret_access_key: s3rver?.secretAccessKey ?? '',
      force_path_style: true,
    },
    database: { url: databaseUrl },
    admin: { token: ADMIN_TOKEN },
    clients: clients.map((c) => ({
      name: c.name,
      api_key: keys[c.name],
      max_file_size_mb: c.max_file_size_mb ?? 100,
      ...(c.retention_days ? { retention_days: c.retention_days } : {}),
      ...(c.cors_origins ? { cors_origins: c.cors_origins } : {}),
    })),
  };
  for (const [k, v] of Object.entries(opts.extra ?? {})) {
    yaml[k] = typeof v === 'object' && v !== null && !Array.isArray(v) ? { ...(yaml[k] as object), ...v } : v;
  }
  const configPath = path.join(dir, 'server.yaml');
  writeFileSync(configPath, stringify(yaml));
  const config = loadConfig({ configPath, env: opts.env ?? {}, cwd: dir });
  const logger = pino({ level: process.env.S3UP_TEST_LOG ?? 'silent' });
  const server = await (await createGateway(config, { logger })).listen();
  return {
    url: server.url,
    server,
    dir,
    configPath,
    keys,
    s3rver,
    databaseUrl,
    auth: (client) => ({ authorization: `Bearer ${keys[client]}` }),
    async stop() {
      await server.close(1000);
      if (ownS3rver) await s3rver?.stop();
      await pgDb?.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The matrix most suites run on: both backends, SQLite (PostgreSQL gets its own suites). */
export const BACKENDS: Backend[] = ['fs', 's3'];
