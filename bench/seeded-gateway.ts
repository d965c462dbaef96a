// A gateway (fs storage) on a database seeded by a benchmark: SQLite in a temp folder or a
// fresh PostgreSQL database (test/helpers/pg.ts), with `clients` bench clients and an admin
// token. Used by bench/runs-list.ts and bench/admin-aggregates.ts.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { startServer } from '../src/server/main.js';
import { createPgDatabase } from '../test/helpers/pg.js';

export const ADMIN = 'bench-admin-token-0123456789abcdef';

export interface SeededGateway {
  server: Awaited<ReturnType<typeof startServer>>;
  /** API key of each client, by name (`client-0`, `client-1`, ...). */
  keys: Record<string, string>;
  seedSeconds: number;
  stop(): Promise<void>;
}

export async function seededGateway(
  kind: 'sqlite' | 'postgres',
  clients: number,
  seed: { sqlite(file: string): Promise<void>; postgres(url: string): Promise<void> },
): Promise<SeededGateway> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 's3up-bench-seeded-'));
  let drop: (() => Promise<void>) | undefined;
  let url: string;
  const t0 = performance.now();
  if (kind === 'sqlite') {
    url = `sqlite:${path.join(dir, 'runs.db')}`;
    await seed.sqlite(path.join(dir, 'runs.db'));
  } else {
    const d = await createPgDatabase();
    drop = d.drop;
    url = d.url;
    await seed.postgres(url);
  }
  const seedSeconds = (performance.now() - t0) / 1000;
  const keys: Record<string, string> = {};
  const list = Array.from({ length: clients }, (_, i) => {
    const name = `client-${i}`;
    keys[name] = `sk_bench_${randomUUID().replace(/-/g, '')}`;
    return { name, api_key: keys[name], max_file_size_mb: 100 };
  });
  const configPath = path.join(dir, 'server.yaml');
  writeFileSync(
    configPath,
    stringify({
      server: { host: '127.0.0.1', port: 0, log_level: 'silent' },
      storage: { backend: 'fs', fs: { root: path.join(dir, 'uploads') } },
      database: { url },
      admin: { token: ADMIN },
      retention: { enabled: false },
      feature_flags: { config_path: path.join(dir, 'flags.json') },
      clients: list,
    }),
  );
  const server = await startServer(loadConfig({ configPath, env: {}, cwd: dir }), { logger: pino({ level: 'silent' }) });
  return {
    server,
    keys,
    seedSeconds,
    async stop() {
      await server.close(1000);
      await drop?.();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
