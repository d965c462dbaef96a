import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { GatewayError } from '../client/errors.js';
import { GatewayClient } from '../client/gateway.js';
import { uploadFile } from '../client/node.js';
import { VERSION } from '../version.js';

const USAGE = `Usage: s3up <command> [options]

Commands:
  put <file> <remote-path>     upload one file (streamed, SHA-256 verified)
  exists <remote-path>         print what the gateway knows of an object
  get <remote-path> [out]      download an object (to stdout without out)
  health                       check the gateway

Options:
  --server URL   gateway URL (env S3UP_SERVER, default http://127.0.0.1:8080)
  --key KEY      API key (env S3UP_API_KEY)

The agent (s3up agent) and the bulk commands (push, retry, sessions) come in later releases.`;

function client(values: { server?: string; key?: string }): GatewayClient {
  const baseUrl = values.server ?? process.env.S3UP_SERVER ?? 'http://127.0.0.1:8080';
  const apiKey = values.key ?? process.env.S3UP_API_KEY;
  if (!apiKey) throw new Error('no API key: pass --key or set S3UP_API_KEY');
  return new GatewayClient({ baseUrl, apiKey, userAgent: `s3up/${VERSION}` });
}

export async function runCli(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    out.write(`${USAGE}\n`);
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === '--version' || cmd === '-v') {
    out.write(`${VERSION}\n`);
    return 0;
  }
  if (cmd === 'agent' || cmd === '--config' || cmd.startsWith('--config=')) {
    const { runAgent, runAgentStatus } = await import('../agent/cli.js');
    const args = cmd === 'agent' ? rest : argv;
    const status = args[0] === 'status';
    const { values: o } = parseArgs({ args: status ? args.slice(1) : args, options: { config: { type: 'string' }, json: { type: 'boolean' } }, strict: true });
    return status ? runAgentStatus(o.config, { json: o.json }) : runAgent(o.config);
  }
  const { values, positionals } = parseArgs({
    args: rest,
    options: { server: { type: 'string' }, key: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  try {
    switch (cmd) {
      case 'put': {
        const [file, remote] = positionals;
        if (!file || !remote) throw new Error('usage: s3up put <file> <remote-path>');
        const res = await uploadFile(client(values), file, remote);
        out.write(`${JSON.stringify(res)}\n`);
        return 0;
      }
      case 'exists': {
        const [remote] = positionals;
        if (!remote) throw new Error('usage: s3up exists <remote-path>');
        const res = await client(values).exists(remote);
        out.write(`${JSON.stringify(res)}\n`);
        return res.exists ? 0 : 1;
      }
      case 'get': {
        const [remote, dest] = positionals;
        if (!remote) throw new Error('usage: s3up get <remote-path> [out]');
        const res = await client(values).download(remote);
        if (!res.body) throw new Error('empty response');
        const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
        // Verified against the gateway's record while streaming; a file lands at `dest`
        // only once complete and verified (never a partial download under its name).
        const expected = res.headers.get('x-s3up-sha256');
        const hash = createHash('sha256');
        const tee = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            cb(null, chunk);
          },
        });
        const tmp = dest ? `${dest}.s3up-${randomBytes(4).toString('hex')}.part` : undefined;
        try {
          await pipeline(body, tee, tmp ? createWriteStream(tmp, { flags: 'wx' }) : out);
          const actual = hash.digest('hex');
          if (expected && actual !== expected) throw new Error(`SHA-256 mismatch: received ${actual}, the gateway recorded ${expected}`);
          if (tmp && dest) await rename(tmp, dest);
        } catch (err) {
          if (tmp) await unlink(tmp).catch(() => {});
          throw err;
        }
        return 0;
      }
      case 'health': {
        out.write(`${JSON.stringify(await client({ ...values, key: values.key ?? 'unused' }).health())}\n`);
        return 0;
      }
      default:
        process.stderr.write(`s3up: unknown command "${cmd}"\n${USAGE}\n`);
        return 2;
    }
  } catch (err) {
    if (err instanceof GatewayError) {
      process.stderr.write(`s3up: ${err.errorCode}: ${err.message}${err.requestId ? ` (request ${err.requestId})` : ''}\n`);
      return 1;
    }
    throw err;
  }
}
