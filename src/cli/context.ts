import type { Command } from 'commander';
import { GatewayClient } from '../client/gateway.js';
import { VERSION } from '../version.js';

/** What every command gets: where to write, and the exit code to return. */
export interface CliContext {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  exitCode: number;
}

/** A command group registers its commands on the program (one file per group under commands/). */
export type RegisterCommands = (program: Command, ctx: CliContext) => void;

/** A mistake in how the command was called: exit code 2, with the message. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

import { DEFAULT_SERVER } from '../client/gateway.js';
import { nodeTransport } from '../client/node-transport.js';

export { DEFAULT_SERVER };

export interface GatewayFlags {
  server?: string;
  key?: string;
  apiKey?: string;
}

/** --server and --api-key (alias --key), shared by every command that talks to the gateway. */
export function gatewayOptions(cmd: Command): Command {
  return cmd
    .option('--server <url>', `gateway URL (env S3UP_SERVER, default ${DEFAULT_SERVER})`)
    .option('--api-key <key>', 'client API key (env S3UP_API_KEY)')
    .option('--key <key>', 'same as --api-key');
}

export function gatewayClient(flags: GatewayFlags, env: NodeJS.ProcessEnv, opts: { keyOptional?: boolean } = {}): GatewayClient {
  const baseUrl = flags.server ?? env.S3UP_SERVER ?? DEFAULT_SERVER;
  const apiKey = flags.apiKey ?? flags.key ?? env.S3UP_API_KEY ?? (opts.keyOptional ? 'unused' : undefined);
  if (!apiKey) throw new Error('no API key: pass --api-key or set S3UP_API_KEY');
  return new GatewayClient({ baseUrl, apiKey, userAgent: `s3up/${VERSION}`, transport: nodeTransport() });
}
