import pino from 'pino';
import { ConfigError } from '../config/load.js';
import { type AgentConfig, loadAgentConfig } from './config.js';
import { Agent } from './daemon.js';
import { formatStatus, readStatus } from './status.js';

function loadOrReport(configPath: string | undefined, err: NodeJS.WritableStream): AgentConfig | number {
  if (!configPath) {
    err.write('s3up agent: --config <client.yaml> is required\n');
    return 2;
  }
  try {
    return loadAgentConfig(configPath);
  } catch (e) {
    if (e instanceof ConfigError) {
      err.write(`s3up agent: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

/** `s3up agent --config client.yaml`: run the daemon until SIGTERM/SIGINT; resolves with the exit code. */
export async function runAgent(configPath: string | undefined, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const config = loadOrReport(configPath, err);
  if (typeof config === 'number') return config;
  const log = pino(
    { level: config.logLevel, base: { pid: process.pid }, redact: ['authorization', 'api_key', 'apiKey'] },
    pino.destination({ dest: 1, sync: true }),
  );
  const agent = new Agent(config, log);
  const stopped = new Promise<void>((resolve) => {
    // Once: a second signal gets the default action (an immediate exit).
    const onSignal = (signal: NodeJS.Signals) => {
      log.info({ signal }, 'signal received');
      agent.stop().then(resolve, (e: unknown) => {
        log.error({ err: (e as Error).message }, 'error while stopping');
        resolve();
      });
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  try {
    await agent.start();
  } catch (e) {
    log.fatal({ err: (e as Error).message }, 'agent failed to start');
    await agent.stop().catch(() => {});
    return 1;
  }
  await stopped;
  return 0;
}

/** `s3up agent status --config client.yaml [--json]`. */
export async function runAgentStatus(
  configPath: string | undefined,
  opts: { json?: boolean },
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
): Promise<number> {
  const config = loadOrReport(configPath, err);
  if (typeof config === 'number') return config;
  try {
    const s = readStatus(config);
    out.write(opts.json ? `${JSON.stringify(s, null, 2)}\n` : formatStatus(s));
    return 0;
  } catch (e) {
    err.write(`s3up agent status: ${(e as Error).message}\n`);
    return 1;
  }
}
