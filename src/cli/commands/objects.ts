import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { uploadFile } from '../../client/node.js';
import { type CliContext, type GatewayFlags, gatewayClient, gatewayOptions } from '../context.js';

/** One object at a time: put, exists, get, health. */
export function register(program: Command, ctx: CliContext): void {
  gatewayOptions(program.command('put').description('upload one file (streamed, SHA-256 verified)').argument('<file>').argument('<remote-path>')).action(
    async (file: string, remote: string, flags: GatewayFlags) => {
      const res = await uploadFile(gatewayClient(flags, ctx.env), file, remote);
      ctx.stdout.write(`${JSON.stringify(res)}\n`);
    },
  );

  gatewayOptions(program.command('exists').description('print what the gateway knows of an object (exit 1 when missing)').argument('<remote-path>')).action(
    async (remote: string, flags: GatewayFlags) => {
      const res = await gatewayClient(flags, ctx.env).exists(remote);
      ctx.stdout.write(`${JSON.stringify(res)}\n`);
      if (!res.exists) ctx.exitCode = 1;
    },
  );

  gatewayOptions(program.command('get').description('download an object (to stdout without [out])').argument('<remote-path>').argument('[out]')).action(
    async (remote: string, dest: string | undefined, flags: GatewayFlags) => {
      const res = await gatewayClient(flags, ctx.env).download(remote);
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
        await pipeline(body, tee, tmp ? createWriteStream(tmp, { flags: 'wx' }) : ctx.stdout);
        const actual = hash.digest('hex');
        if (expected && actual !== expected) throw new Error(`SHA-256 mismatch: received ${actual}, the gateway recorded ${expected}`);
        if (tmp && dest) await rename(tmp, dest);
      } catch (err) {
        if (tmp) await unlink(tmp).catch(() => {});
        throw err;
      }
    },
  );

  gatewayOptions(program.command('health').description('check the gateway')).action(async (flags: GatewayFlags) => {
    ctx.stdout.write(`${JSON.stringify(await gatewayClient(flags, ctx.env, { keyOptional: true }).health())}\n`);
  });
}
