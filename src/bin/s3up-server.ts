#!/usr/bin/env node
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, generateApiKey, loadConfig, sha256Hex } from '../config/load.js';
import { VERSION } from '../version.js';

// File I/O (writes, fsync, rename) runs on libuv's thread pool, 4 threads by
// default: with many small uploads in flight the fsyncs queue behind each other.
// 16 lets the filesystem batch them (measured: bare fsync-per-file server 1,242 ->
// 3,322 writes/s on this machine). Must be set before the pool first starts.
process.env.UV_THREADPOOL_SIZE ??= '16';

const USAGE = `Usage:
  s3up-server [--config server.yaml] [--host H] [--port N]   run the gateway
  s3up-server keygen                                           print a new API key and its SHA-256
  s3up-server sweep [--config F] [--dry-run] [--json]          run the retention sweeper once, print what it removes
  s3up-server --version | --help

With no --config (and no S3UP_CONFIG), the gateway runs on embedded defaults:
filesystem storage under ./data/uploads, SQLite at ./data/s3up.db, and one
client "dev" whose generated key is printed at start and kept in ./data/dev-api-key.`;

function fail(message: string, code = 1): never {
  process.stderr.write(`s3up-server: ${message}\n`);
  process.exit(code);
}

async function serve(argv: string[]): Promise<void> {
  let values: { config?: string; host?: string; port?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: 'string', short: 'c' }, host: { type: 'string' }, port: { type: 'string', short: 'p' } },
      strict: true,
    }));
  } catch (err) {
    fail(`${(err as Error).message}\n${USAGE}`, 2);
  }
  if (values.port !== undefined && !/^\d+$/.test(values.port)) fail(`--port must be a number, got "${values.port}"`, 2);
  const config = loadConfig({ configPath: values.config, host: values.host, port: values.port === undefined ? undefined : Number(values.port) });
  // Loaded only once the config is valid: a bad config or `keygen` answers without loading the HTTP and S3 stacks.
  const { createGateway } = await import('../server/main.js');
  const { redactUrl } = await import('../db/index.js');
  const server = await (await createGateway(config)).listen();
  for (const warning of config.warnings) server.ctx.logger.warn({ source: config.source }, warning);
  if (config.devKey) {
    const rel = path.relative(process.cwd(), config.devKey.file) || config.devKey.file;
    process.stdout.write(
      `\ns3up-server ${VERSION} on embedded defaults: ${server.url}\n` +
        `  storage:  ${config.storage.backend === 'fs' ? config.storage.root : `s3://${config.raw.s3.bucket}`}\n` +
        `  database: ${redactUrl(config.databaseUrl)}\n` +
        (config.raw.retention.enabled
          ? `  retention: objects older than ${config.raw.retention.ttl_days} days are deleted (retention.ttl_days; SWEEPER_ENABLED=false keeps them)\n`
          : '') +
        `  dev client "${config.devKey.client}" API key (${config.devKey.generated ? 'new' : 'kept'} in ${rel}):\n` +
        `    ${config.devKey.key}\n` +
        `  try: curl -H "Authorization: Bearer ${config.devKey.key}" -T README.md ${server.url}/objects/hello/README.md\n\n`,
    );
  }
  // A second signal exits at once, unless it comes within a second of the
  // first: Ctrl-C under `npm start` reaches the gateway twice (the terminal
  // signals the whole process group, and npm forwards the signal to its script).
  let stoppingSince: number | undefined;
  const stop = (signal: string) => {
    if (stoppingSince !== undefined) {
      if (Date.now() - stoppingSince < 1000) return;
      process.stderr.write(`s3up-server: ${signal} again, exiting now\n`);
      process.exit(1);
    }
    stoppingSince = Date.now();
    server.ctx.logger.info({ signal, graceMs: config.shutdownGraceMs }, 'shutting down: finishing in-flight requests');
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        server.ctx.logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  switch (cmd) {
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return;
    case '--version':
    case '-v':
      process.stdout.write(`${VERSION}\n`);
      return;
    case 'sweep': {
      const { sweepCommand } = await import('../retention/cli.js');
      process.exitCode = await sweepCommand(rest);
      return;
    }
    case 'keygen': {
      const key = generateApiKey();
      process.stdout.write(`api_key: ${key}\napi_key_sha256: ${sha256Hex(key)}\n`);
      return;
    }
    case 'serve':
      return serve(rest);
    default:
      return serve(process.argv.slice(2));
  }
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) fail(err.message, 2);
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') fail(`cannot listen: ${e.message}`);
  if (e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === '28P01' || e.code === '3D000') {
    fail(`cannot reach the database: ${e.code}${e.message ? ` (${e.message.replace(/\/\/[^@]*@/, '//***@')})` : ''}`);
  }
  fail(`cannot start: ${e.message ?? String(err)}`);
});
